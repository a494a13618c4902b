"""`leadval ARGS` run in the test's own process, for tests where the command's behaviour is under test, not the process.

:func:`run_leadval` calls :func:`serving.cli.app.main`, the console script's entry point, so errors become the
same one line on stderr and the same exit code as in a real ``leadval`` process. Environment overrides apply
for the call only. It saves the 2-5 s a fresh interpreter needs to import mlflow, lightgbm and the rest.
The tests that need a real process (the console script itself, kill -9) still start one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from serving.cli.app import main

LEADVAL = str(Path(sys.executable).with_name("leadval"))
"""The console script, for the tests that run it as a process."""


@dataclass(frozen=True)
class Ran:
    """What a ``leadval`` run left: like :class:`subprocess.CompletedProcess`."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def run_leadval(*args: str, env: Mapping[str, str | None] | None = None, check: bool = True) -> Ran:
    """Run ``leadval ARGS`` in this process with ``env`` on top of this process's environment.

    With ``check`` the run must succeed (exit code 0); the assertion message is its stderr.
    """
    with CliRunner().isolation(env=env) as (stdout, stderr, _):
        try:
            main(list(args))
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        ran = Ran(list(args), code, stdout.getvalue().decode(), stderr.getvalue().decode("utf-8", "replace"))
    if check:
        assert ran.returncode == 0, ran.stderr
    return ran


def last_json(ran: Ran) -> dict:
    """The JSON object a ``--json`` run prints as its last line."""
    return json.loads(ran.stdout.strip().splitlines()[-1])
