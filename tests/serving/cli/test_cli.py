"""The `leadval` command-line contract: help everywhere, one-line errors, JSON last.

Help is asked of every command in this process (the console script's own entry point,
:func:`tests.leadval_cli.run_leadval`); one test runs the installed `leadval` script as a process, to see what
a person sees on its stderr.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from features.crm.store import connect
from features.lead_history import crm_period
from serving.cli.demo import DEMO_STEPS
from tests.leadval_cli import LEADVAL, last_json, run_leadval

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


@pytest.mark.parametrize(("args", "flag"), [(["score", "leads", "--chunk-size", "abc"], "--chunk-size"),
                                           (["import", "--table", "orders", "x.csv", "--allow-dates-from", "18000101"],
                                            "--allow-dates-from")])
def test_a_bad_flag_value_names_the_flag(args: list[str], flag: str, tmp_path: Path) -> None:
    result = run_leadval(*args, "--db", f"sqlite:///{tmp_path / 'crm.db'}", check=False)
    assert result.returncode == 2
    assert f"Error: Invalid value for '{flag}'" in result.stderr and "BadParameter" not in result.stderr
    assert not (tmp_path / "crm.db").exists()


@pytest.mark.slow  # the installed console script, as a process
def test_unreachable_database_is_one_line_error(tmp_path: Path) -> None:
    result = run("generate", "--db", "postgresql+psycopg://x@127.0.0.1:1/none", "--leads", "10")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: cannot reach database")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_the_demo_crm_ends_now_and_the_demo_pins_no_date(tmp_path: Path) -> None:
    (_, generate), *later = DEMO_STEPS
    assert generate[0] == "generate" and "--end" not in generate
    assert all("--as-of" not in args and "--end" not in args for _, args in later), "the demo scores as of now"
    assert ("score", "leads") in [args for _, args in later]

    url = f"sqlite:///{tmp_path / 'demo.db'}"
    before = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    out = last_json(run_leadval(*generate, "--db", url, "--json"))
    after = datetime.now(UTC).replace(tzinfo=None)
    ends = datetime.fromisoformat(out["end"])
    assert before <= ends <= after
    engine = connect(url)
    _, last_event = crm_period(engine)
    engine.dispose()
    assert ends - timedelta(hours=3) < last_event.to_pydatetime() < ends, "the CRM's latest events are the latest hours"
