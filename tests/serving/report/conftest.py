"""The report tests' small simulated CRM, one per test module (a module may add rows of its own to it)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from serving.cli.app import app

RUNNER = CliRunner()


@pytest.fixture(scope="module")
def crm_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small simulated CRM (with its experiments) in SQLite."""
    url = f"sqlite:///{tmp_path_factory.mktemp('crm') / 'crm.db'}"
    result = RUNNER.invoke(app, ["generate", "--db", url, "--leads", "400", "--customers", "100", "--seed", "5",
                                 "--end", "2026-06-30T00:00:00"])
    assert result.exit_code == 0, result.output
    return url
