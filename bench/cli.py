"""Command line of the harness: run the scenarios, save the numbers, write the page."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import signal
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench.machine import describe_machine, tool_versions
from bench.options import Options, Outcome
from bench.report import write_report
from bench.rig import Rig
from bench.scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
DOCS_DIR = ROOT / "docs"


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the sidecar on loopback and write docs/benchmarks.md.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes that check the harness end to end; the page is marked as no measurement",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this scenario (repeatable); the others are left off the page",
    )
    parser.add_argument(
        "--rotations-limit",
        type=float,
        metavar="SECONDS",
        help="time limit of the 1,000-rotation memory loop (default 600)",
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS_JSON",
        help="write the page from a saved results file instead of measuring",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, or render a saved run, and return the exit status."""
    arguments = build_parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every server the rig started is stopped.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    if arguments.render is not None:
        saved_results = json.loads(arguments.render.read_text())
        write_report(saved_results, DOCS_DIR)
        print(f"wrote {DOCS_DIR / 'benchmarks.md'} from {arguments.render}")
        return 0

    options = Options.quick() if arguments.quick else Options()
    if arguments.rotations_limit is not None:
        options = dataclasses.replace(options, rotations_limit_s=arguments.rotations_limit)
    names = arguments.only or list(SCENARIOS)
    command = os.environ.get("BENCH_COMMAND") or shlex.join(
        ["python", "-m", "bench", *(argv or sys.argv[1:])]
    )
    results: dict[str, Any] = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": command,
            "quick": arguments.quick,
            "options": dataclasses.asdict(options),
            "machine": describe_machine(),
            "versions": tool_versions(),
            "load_average_start": os.getloadavg(),
        },
        "scenarios": {},
    }
    failed = run_scenarios(names, options, results["scenarios"])
    results["meta"]["load_average_end"] = os.getloadavg()

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    saved = RESULTS_DIR / f"run-{stamp}.json"
    saved.write_text(json.dumps(results, indent=2) + "\n")
    write_report(results, DOCS_DIR)
    print(f"saved {saved}; wrote {DOCS_DIR / 'benchmarks.md'} and {DOCS_DIR / 'benchmarks.png'}")
    return 1 if failed else 0


def _raise_keyboard_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_scenarios(names: list[str], options: Options, into: dict[str, Any]) -> bool:
    """Run each named scenario on one rig; return whether any of them failed."""
    failed = False
    with tempfile.TemporaryDirectory(prefix="sidecar-bench-") as workdir:
        rig = Rig.start(Path(workdir))
        try:
            for name in names:
                started = time.monotonic()
                print(f"[bench] {name} ...", flush=True)
                try:
                    outcome = SCENARIOS[name](rig, options)
                except Exception as error:  # noqa: BLE001 - one failed scenario must not hide the rest
                    traceback.print_exc()
                    outcome = Outcome(skipped=f"failed: {type(error).__name__}: {error}")
                    failed = True
                elapsed = time.monotonic() - started
                state = f"skipped: {outcome.skipped}" if outcome.skipped else "done"
                print(f"[bench] {name} {state} ({elapsed:.0f} s)", flush=True)
                into[name] = {**outcome.to_json(), "elapsed_s": elapsed}
        finally:
            rig.stop()
    return failed
