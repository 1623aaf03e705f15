#!/usr/bin/env bash
# Checks that the wheel stands alone: builds it, installs it into a fresh virtualenv in a temporary
# folder outside the checkout, and runs `teep-coap profiles` and `teep-coap demo` from another
# temporary folder (so nothing of the checkout can be found by accident). Exit status 0 = both ran.
# Needs `bash scripts/setup.sh demo` first (.venv with pip); WHEEL_CHECK_KEEP=1 keeps the folder.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PYTHON=${PYTHON:-python3}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/teep-coap-wheel.XXXXXX")
[ "${WHEEL_CHECK_KEEP:-0}" = 1 ] || trap 'rm -rf "$tmp"' EXIT
case "$tmp" in "$REPO"/*) echo "wheel-check: temporary folder $tmp is inside the checkout" >&2; exit 1 ;; esac

echo "wheel-check: building the wheel"
.venv/bin/pip wheel -q --disable-pip-version-check --no-deps -w "$tmp/dist" .
wheel=$(ls "$tmp"/dist/teep_coap-*.whl)

# Everything read at run time must be inside: profiles, typing markers, the C module, bench vectors,
# the CDDL `check` validates against.
"$PYTHON" - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
need = {
    "shipped profiles": lambda n: n.startswith("teep_coap/profiles/builtin/") and n.endswith(".toml"),
    "py.typed": lambda n: n == "teep_coap/py.typed",
    "encoding stubs": lambda n: n.startswith("teep_coap/encoding/") and n.endswith(".pyi"),
    "C module": lambda n: n.startswith("teep_coap/encoding/_plaincbor") and n.endswith(".so"),
    "bench vectors": lambda n: n.startswith("teep_coap/bench/vectors/") and n.endswith(".hex.txt"),
    "CDDL of check": lambda n: n == "teep_coap/profiles/cddl/teep-all.cddl",
}
missing = [what for what, match in need.items() if not any(match(n) for n in names)]
if missing:
    sys.exit(f"wheel-check: the wheel lacks: {', '.join(missing)}")
print(f"wheel-check: {sys.argv[1].rsplit('/', 1)[-1]}: {len(names)} files,",
      sum(n.startswith("teep_coap/profiles/builtin/") for n in names), "shipped profiles")
PY

echo "wheel-check: installing it into a fresh virtualenv ($tmp/venv)"
"$PYTHON" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q --disable-pip-version-check "$wheel"

mkdir "$tmp/run"
cd "$tmp/run"
unset TEEP_COAP_PROFILES
echo "wheel-check: teep-coap profiles"
"$tmp/venv/bin/teep-coap" profiles
echo "wheel-check: teep-coap demo"
timeout 300 "$tmp/venv/bin/teep-coap" demo > "$tmp/demo.out"
tail -n 3 "$tmp/demo.out"
echo "wheel-check: ok"
