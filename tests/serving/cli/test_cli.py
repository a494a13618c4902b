"""The `leadval` command-line contract: help everywhere, one-line errors, JSON last.

Help is asked of every command in this process (the console script's own entry point,
:func:`tests.leadval_cli.run_leadval`); one test runs the installed `leadval` script as a process, to see what
a person sees on its stderr.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.leadval_cli import LEADVAL, run_leadval

COMMANDS = [[], ["generate"], ["import"], ["train"], ["train", "leads"], ["train", "clv"], ["score"],
            ["score", "leads"], ["score", "customers"], ["serve"], ["report"], ["segments"],
            ["leads"], ["leads", "top"], ["demo"]]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([LEADVAL, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "leadval")
def test_every_command_has_help(command: list[str]) -> None:
    result = run_leadval(*command, "--help", check=False)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


@pytest.mark.slow  # the installed console script, as a process
def test_unreachable_database_is_one_line_error(tmp_path: Path) -> None:
    result = run("generate", "--db", "postgresql+psycopg://x@127.0.0.1:1/none", "--leads", "10")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: cannot reach database")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
