"""``finish``: a read-only one-shot command run as the program leaves without the interpreter's
teardown, its output flushed and its exit code kept; called in-process it ends as any command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from gatekeeper.cli.common import PROCESS, finish

REPO = Path(__file__).resolve().parents[3]


def test_in_process_it_ends_like_any_command() -> None:
    assert PROCESS["program"] is False
    with pytest.raises(typer.Exit) as ended:
        finish(1)
    assert ended.value.exit_code == 1


def test_as_the_program_it_flushes_its_output_and_skips_the_teardown() -> None:
    script = (
        "import atexit, sys\n"
        "from gatekeeper.cli.common import PROCESS, finish\n"
        "atexit.register(lambda: sys.stderr.write('teardown ran'))\n"
        "PROCESS['program'] = True\n"
        "sys.stdout.write('{\"verified\": false}')\n"  # no newline: still in the buffer
        "sys.stderr.write('not verified')\n"
        "finish(1)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               env=env, timeout=60)
    assert (completed.returncode, completed.stdout, completed.stderr) == (
        1, '{"verified": false}', "not verified"
    )
