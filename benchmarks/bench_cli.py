"""Start time of the ``gatekeeper`` command line, against the floor of the interpreter itself.

Run: .venv/bin/python -m benchmarks.bench_cli [--runs N]

Each command is started ``N`` times as a fresh process (``python -m gatekeeper ...``, as the
console script does) and the median and best wall time are printed, beside ``python -c pass``
measured in the same run, so a loaded machine shows as a higher floor rather than a slower CLI.

Target: ``gatekeeper --help`` and ``gatekeeper verify-bundle --help`` start in under 0.3 s.
Where the time goes: ``python -X importtime -m gatekeeper verify-bundle --help``. The start of
``gatekeeper verify`` doing a real verification is timed by ``benchmarks/bench_cold.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import summarise, time_process  # noqa: E402

COMMANDS: list[tuple[str, list[str]]] = [
    ("python -c pass (floor)", ["-c", "pass"]),
    ("gatekeeper --help", ["-m", "gatekeeper", "--help"]),
    ("gatekeeper --version", ["-m", "gatekeeper", "--version"]),
    ("gatekeeper verify-bundle --help", ["-m", "gatekeeper", "verify-bundle", "--help"]),
    ("gatekeeper verify --help", ["-m", "gatekeeper", "verify", "--help"]),
]
TARGET_SECONDS = 0.3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    options = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    print(f"{os.cpu_count()} cores, {options.runs} runs each, python {sys.version.split()[0]}")
    print(f"{'command':<34} {'median':>8} {'best':>8} {'over floor':>11}")
    floor = None
    for label, arguments in COMMANDS:
        summary = summarise(time_process([sys.executable, *arguments], options.runs, env=env,
                                         cwd=REPO))
        median, best = summary.p50, summary.best
        if floor is None:
            floor = median
        verdict = "" if label.startswith("python") else (
            "  ok" if median < TARGET_SECONDS else f"  over {TARGET_SECONDS:.1f} s"
        )
        print(f"{label:<34} {median:>7.3f}s {best:>7.3f}s {median - floor:>10.3f}s{verdict}")


if __name__ == "__main__":
    main()
