#!/usr/bin/env bash
# The TAM's CPU per session of this working tree as a ratio to an earlier commit's, measured in turns.
#
#   scripts/bench_against.sh REV [PAIRS] [-- BENCH-SESSIONS-OPTIONS...]
#
# Checks REV out into a temporary git worktree (its C module built with this checkout's Python), then
# runs `teep-coap bench sessions` PAIRS times (default 4) from each side in turns (REV first in odd
# pairs, this tree first in even ones), each side with its own code for the TAM and the simulated
# devices, and prints each run and each pair's ratio. Default options: the command issue 14 measured
# (`--profile coaps-psk --devices 1000 --concurrency 32`). Why: this VM's speed drifts by tens of per
# cent between minutes (docs/scale.md), so a figure in milliseconds read today cannot be compared
# with one read on another day; a ratio of runs taken seconds apart can.
# Needs `bash scripts/setup.sh demo` first (.venv), git, and a C compiler (as the install does).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PY="$REPO/.venv/bin/python"

usage() { echo "usage: scripts/bench_against.sh REV [PAIRS] [-- bench sessions options...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
REV=$1; shift
PAIRS=4
if [ $# -ge 1 ] && [ "$1" != "--" ]; then PAIRS=$1; shift; fi
[[ "$PAIRS" =~ ^[1-9][0-9]*$ ]] || { echo "bench-against: PAIRS must be a positive whole number, not '$PAIRS'" >&2; exit 2; }
if [ $# -ge 1 ]; then [ "$1" = "--" ] || usage; shift; fi
OPTIONS=("$@")
[ ${#OPTIONS[@]} -gt 0 ] || OPTIONS=(--profile coaps-psk --devices 1000 --concurrency 32)
[ -x "$PY" ] || { echo "bench-against: no $PY; run 'bash scripts/setup.sh demo' first" >&2; exit 2; }
commit=$(git rev-parse --verify --quiet "$REV^{commit}") || { echo "bench-against: '$REV' is not a commit of this repository" >&2; exit 2; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/teep-coap-against.XXXXXX")
cleanup() { git worktree remove --force "$tmp/rev" >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT
git worktree add --detach --quiet "$tmp/rev" "$commit"
src="$tmp/rev/teep_coap/encoding/_plaincbor.c"
if [ -f "$src" ]; then
    include=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
    suffix=$("$PY" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
    compiler=${CC:-$(command -v cc || command -v gcc || echo cc)}
    "$compiler" -O2 -shared -fPIC -I"$include" "$src" -o "${src%.c}$suffix"
fi

# One run of one side: its code first on the path (the TAM process inherits PYTHONPATH), one line of
# figures out. `bench sessions --json` has named the TAM's figure tam_cpu_ms_per_session since before
# the TAM had workers; the devices' figure was client_cpu_ms_per_session.
run() {
    local side=$1 code=$2 out
    out=$(cd "$code" && PYTHONPATH="$code" "$PY" -c \
        "import sys; from teep_coap.cli import main; sys.argv[0] = 'teep-coap'; main()" \
        bench sessions "${OPTIONS[@]}" --json) || { echo "bench-against: the run of $side failed" >&2; exit 1; }
    "$PY" -c '
import json, sys
side, text = sys.argv[1], sys.argv[2]
j = json.loads(text[text.index("{"):])
j = j.get("result", j)
print(side, j["tam_cpu_ms_per_session"], j["sessions_per_second"], j.get("client_cpu_ms_per_session"),
      j.get("failed"), j.get("load_average_at_start"))' "$side" "$out"
}

echo "bench-against: bench sessions ${OPTIONS[*]}; $PAIRS pairs; rev = $REV (${commit:0:10}), head = this tree"
echo "side  TAM-ms/session  sessions/s  devices-ms/session  failed  load"
lines=()
for i in $(seq 1 "$PAIRS"); do
    if [ $((i % 2)) = 1 ]; then order=(rev head); else order=(head rev); fi
    for side in "${order[@]}"; do
        if [ "$side" = rev ]; then line=$(run rev "$tmp/rev"); else line=$(run head "$REPO"); fi
        echo "$line"
        lines+=("$i $line")
    done
done
printf '%s\n' "${lines[@]}" | "$PY" -c '
import statistics, sys
pairs = {}
for line in sys.stdin:
    i, side, tam = line.split()[:3]
    pairs.setdefault(i, {})[side] = float(tam)
ratios = [p["head"] / p["rev"] for p in pairs.values()]
print("head / rev, TAM CPU per session, by pair:", ", ".join(f"{r:.3f}" for r in ratios))
print(f"mean {statistics.mean(ratios):.3f}, lowest {min(ratios):.3f}, highest {max(ratios):.3f}")'
