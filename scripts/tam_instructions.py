"""The TAM's instructions per whole TEEP session, counted by valgrind: a reading the VM's drift cannot move.

    .venv/bin/python scripts/tam_instructions.py [--sessions N] [--concurrency C] [--profile P]
                                                 [--tam-code DIR] [--keep FILE] [--json]

Starts `tam serve` under valgrind's callgrind with counting off, runs a warm-up of 20 sessions
(the bench's simulated devices, one new device per session, a 1 KiB Trusted Component as `bench
sessions` makes it), then counts the TAM's user-space instructions over N more sessions on devices
it has not seen, and prints their mean per session. `--tam-code DIR`: run the TAM from another
checkout (its own code, this tree's devices), to set two versions side by side on the same traffic.
`--keep FILE`: keep callgrind's counts for `callgrind_annotate --inclusive=yes FILE`.

Why: this VM's CPU time per session moves by ±5-15 % between minutes, so a change worth 1-2 %
needs dozens of timed pairs (`scripts/bench_against.sh`); the instruction count moves by about
0.05 % between runs. It is not time: kernel work (system calls, page faults) is not counted, and
an instruction of the interpreter costs more time than one of OpenSSL's P-256 code (which keeps
several in flight per cycle), so a cut in Python saves more time than its share of instructions
says. Use it to tell whether a change made the TAM cheaper, and `bench sessions` for milliseconds.
Needs valgrind (`bash scripts/setup.sh full` installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from teep_coap.bench.fleet import DriveResult, FleetWorld, drive_fleet, make_fleet_world
from teep_coap.bench.sessions import read_serving_uri, stop_child

WARM_UP = 20
STARTUP_TIMEOUT = 600.0  # seconds: the TAM starts under valgrind (counting off: a few times slower)
CONTROL_TIMEOUT = 60.0


def _control(pid: int, *args: str) -> None:
    """Tell the callgrind of process `pid` to do something (counting on/off, write its counts)."""
    done = subprocess.run(
        ["callgrind_control", *args, str(pid)], capture_output=True, text=True, timeout=CONTROL_TIMEOUT
    )
    if done.returncode != 0:
        raise SystemExit(
            f"tam-instructions: callgrind_control {' '.join(args)} failed: {done.stderr.strip()}"
        )


def _counted(out: Path, keep: Path | None) -> int:
    """Instructions in the last counts callgrind wrote (its `totals:` / `summary:` line)."""
    dumps = sorted(out.parent.glob(out.name + "*"), key=lambda p: p.stat().st_mtime)
    for dump in reversed(dumps):
        found = re.search(r"^(?:totals|summary): (\d+)", dump.read_text(errors="replace"), re.M)
        if found:
            if keep is not None:
                shutil.copyfile(dump, keep)
            return int(found.group(1))
    raise SystemExit(f"tam-instructions: callgrind wrote no counts ({len(dumps)} files in {out.parent})")


def _drive(
    world: FleetWorld, profile: str, uri: str, first: int, sessions: int, concurrency: int
) -> DriveResult:
    async def run() -> DriveResult:
        # each session a whole TEEP session; the timeout is generous: the TAM runs under valgrind
        return await asyncio.wait_for(
            drive_fleet(profile, uri, world, first + sessions, concurrency, start=first), 60 + 5 * sessions
        )

    return asyncio.run(run())


def measure(
    profile: str, sessions: int, concurrency: int, tam_code: Path | None, keep: Path | None = None
) -> dict[str, object]:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit(
            "tam-instructions: needs valgrind (apt install valgrind; scripts/setup.sh full does)"
        )
    with tempfile.TemporaryDirectory(prefix="tam-instructions-") as tmp:
        root = Path(tmp)
        world = make_fleet_world(root / "tam", root / "cred", WARM_UP + sessions, 1024, profile)
        out = root / "callgrind.out"
        env = dict(os.environ, PYTHONHASHSEED="0")  # the same dict layouts, run after run
        if tam_code is not None:
            env["PYTHONPATH"] = str(tam_code)
        where = root / "tam-package"  # the TAM writes down which teep_coap it imported
        start = f"import pathlib, teep_coap; pathlib.Path({str(where)!r}).write_text(teep_coap.__path__[0])"
        command = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
            sys.executable, "-c", f"{start}; from teep_coap.cli import main; main()",
            "tam", "serve", "--profile", profile, "--dir", str(root / "tam"), "-q",
        ]  # fmt: skip
        # run in the scratch folder: `python -c` puts the working folder first on the import path,
        # so from a checkout's root its teep_coap would win over `--tam-code`'s
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=root
        )
        try:
            uri = read_serving_uri(proc, time.monotonic() + STARTUP_TIMEOUT)
            if uri is None:
                said = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
                raise SystemExit(
                    f"tam-instructions: the TAM did not start: {said.strip()[-800:] or 'no output'}"
                )
            warm = _drive(world, profile, uri, 0, WARM_UP, concurrency)
            _control(proc.pid, "--instr=on")
            result = _drive(world, profile, uri, WARM_UP, sessions, concurrency)
            _control(proc.pid, "--dump")
            _control(proc.pid, "--instr=off")
            counted = _counted(out, keep)
            package = where.read_text()
        finally:
            stop_child(proc)
    if warm.failures or result.failures:
        first = (warm.failures or result.failures)[0]
        raise SystemExit(
            f"tam-instructions: {len(warm.failures) + len(result.failures)} sessions failed: {first}"
        )
    return {
        "profile": profile,
        "sessions": sessions,
        "concurrency": concurrency,
        "tam_code": str(tam_code) if tam_code else None,
        "tam_package": package,
        "instructions_per_session": round(counted / sessions),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=300, help="sessions counted (default 300)")
    parser.add_argument("--concurrency", type=int, default=4, help="sessions at once (default 4)")
    parser.add_argument("--profile", default="coaps-psk", help="a CoAP profile (default coaps-psk)")
    parser.add_argument("--tam-code", type=Path, help="run the TAM from this checkout's code")
    parser.add_argument("--keep", type=Path, metavar="FILE", help="keep callgrind's counts in FILE")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.sessions < 1 or args.concurrency < 1:
        parser.error("--sessions and --concurrency must be at least 1")
    if args.tam_code is not None and not (args.tam_code / "teep_coap" / "__init__.py").is_file():
        parser.error(f"--tam-code {args.tam_code}: no teep_coap package there")
    figures = measure(args.profile, args.sessions, args.concurrency, args.tam_code, args.keep)
    if args.json:
        print(json.dumps(figures))
        return
    per = int(figures["instructions_per_session"])  # type: ignore[call-overload]
    print(
        f"{args.profile}: TAM {per / 1e6:.3f} M instructions per session ({args.sessions} sessions,"
        f" concurrency {args.concurrency}, TAM code {figures['tam_package']})"
    )


if __name__ == "__main__":
    main()
