"""`leadval backtest leads`: flags checked at the boundary, the printed table and --json, storage, and the report.

Runs on a copy of the session's trained store (a small simulated CRM with its champion), in this process.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from features.crm import schema
from features.crm.store import connect, read_frame
from tests.leadval_cli import last_json, run_leadval
from tests.serving.conftest import TrainedStore

BAND_KEYS = {"band", "leads", "predicted_rate", "actual_rate", "as_of"}


@pytest.fixture
def crm_copy(trained_store: TrainedStore, tmp_path: Path) -> str:
    """A copy of the trained store's CRM, so the backtest's writes stay in this test."""
    target = tmp_path / "crm.db"
    with sqlite3.connect(make_url(trained_store.crm_url).database) as source, sqlite3.connect(target) as copy:
        source.backup(copy)
    return f"sqlite:///{target}"


@pytest.mark.parametrize("command", [["backtest"], ["backtest", "leads"]], ids=" ".join)
def test_backtest_commands_have_help(command: list[str]) -> None:
    ran = run_leadval(*command, "--help", check=False)
    assert ran.returncode == 0 and "Usage:" in ran.stdout, ran.stderr


@pytest.mark.parametrize(("flags", "message"), [
    (["--every", "monthly"], "error: --every 'monthly': expected a positive number of days such as 30d"),
    (["--model", "latest"], "error: --model 'latest': expected retrain or current"),
    (["--from", "2025-13-01"], "'2025-13-01' does not match the formats"),
])
def test_bad_flags_are_one_line_errors(flags: list[str], message: str, tmp_path: Path) -> None:
    ran = run_leadval("backtest", "leads", "--db", f"sqlite:///{tmp_path / 'none.db'}", *flags, check=False)
    assert ran.returncode != 0 and message in ran.stderr and "Traceback" not in ran.stderr


def test_an_as_of_whose_horizon_has_not_passed_is_refused(crm_copy: str, trained_store: TrainedStore) -> None:
    ran = run_leadval("backtest", "leads", "--db", crm_copy, "--tracking-uri", trained_store.tracking_uri, "--to",
                      f"{trained_store.as_of:%Y-%m-%d}", check=False)
    assert ran.returncode == 1 and "horizon ends after the CRM's last event" in ran.stderr


@pytest.mark.slow  # leadval backtest leads end to end, then the report
def test_backtest_prints_the_tables_stores_them_and_the_report_shows_them(crm_copy: str,
                                                                           trained_store: TrainedStore,
                                                                           tmp_path: Path) -> None:
    args = ("backtest", "leads", "--db", crm_copy, "--tracking-uri", trained_store.tracking_uri, "--json")
    ran = run_leadval(*args)
    result = last_json(ran)
    assert result["model"] == "retrain" and result["recipe"]["source"].startswith("config.json of the champion's")
    assert result["recipe"]["config"]["horizon_days"] == 90 and result["recipe"]["model_version"] == "1"
    assert 1 <= len(result["as_ofs"]) <= 6 and len(result["bands"]) == 4 * len(result["as_ofs"])
    assert all(set(band) == BAND_KEYS for band in result["bands"])
    assert all(row["trained_to"] <= row["as_of"] for row in result["as_ofs"])
    assert [row["band"] for row in result["pooled"]] == ["A", "B", "C", "D"]
    assert "Per band, pooled over the" in ran.stdout and "ROC AUC" in ran.stdout
    engine = connect(crm_copy)
    stored = len(read_frame(engine, schema.lead_backtests)), len(read_frame(engine, schema.lead_backtest_bands))
    assert stored == (len(result["as_ofs"]), len(result["bands"]))

    again = last_json(run_leadval(*args))  # the same work: the same id, its rows replaced
    assert again["backtest_id"] == result["backtest_id"] and again["bands"] == result["bands"]
    assert (len(read_frame(engine, schema.lead_backtests)), len(read_frame(engine, schema.lead_backtest_bands))) == stored

    report = last_json(run_leadval("report", "--db", crm_copy, "--out", str(tmp_path / "r.html"), "--json"))
    assert report["bands"] == result["bands"] and report["backtest"]["backtest_id"] == result["backtest_id"]

    current = run_leadval("backtest", "leads", "--db", crm_copy, "--tracking-uri", trained_store.tracking_uri,
                          "--model", "current", "--json")
    optimistic = last_json(current)
    assert optimistic["backtest_id"] != result["backtest_id"] and optimistic["model"] == "current"
    assert any("optimistic" in w for w in optimistic["warnings"]) and "warning: --model current" in current.stderr
    assert len(read_frame(engine, schema.lead_backtests)) == 2 * stored[0]
    engine.dispose()


def test_without_a_champion_the_default_recipe_is_used_and_said(crm_copy: str, trained_store: TrainedStore,
                                                                 tmp_path: Path) -> None:
    day = f"{trained_store.as_of - timedelta(days=120):%Y-%m-%d}"  # one as-of date: one retrain
    ran = run_leadval("backtest", "leads", "--db", crm_copy, "--tracking-uri", f"sqlite:///{tmp_path / 'empty.db'}",
                      "--from", day, "--to", day, "--json")
    assert [row["as_of"][:10] for row in last_json(ran)["as_ofs"]] == [day]
    result = last_json(ran)
    assert result["recipe"]["source"] == "the default training config (no model at models:/lead-scoring@champion)"
    assert result["recipe"]["model_version"] is None and "warning: no champion at" in ran.stderr
    current = run_leadval("backtest", "leads", "--db", crm_copy, "--tracking-uri",
                          f"sqlite:///{tmp_path / 'empty.db'}", "--model", "current", check=False)
    assert current.returncode == 1 and current.stderr.startswith(
        f"error: cannot load model 'models:/lead-scoring@champion': no MLflow store at {tmp_path / 'empty.db'} ")
    assert not (tmp_path / "empty.db").exists()  # neither backtest created the missing store
