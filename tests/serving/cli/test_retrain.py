"""``leadval retrain leads|clv [--if-needed]`` on a small CRM and a real MLflow store with a young lead champion."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from sqlalchemy import Column, DateTime, Float, MetaData, String, Table, Text, inspect

from features.crm.store import connect
from features.simulate.config import SimulationConfig
from tests.leadval_cli import last_json, run_leadval
from tests.mlflow_stores import empty_tracking_uri
from tests.serving.conftest import simulated_crm
from training.leads.data.splits import CrmTrainingConfig, crm_splits
from training.leads.job import train_and_register

SMALL = SimulationConfig(n_leads=1_000, n_customers=150, seed=4, end=datetime(2025, 12, 31))


@pytest.fixture(scope="module")
def young_champion(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(CRM file, MLflow store file, artifacts folder): lead-scoring v1 trained just now and @champion."""
    root = tmp_path_factory.mktemp("retrain_cli")
    crm_url = f"sqlite:///{root / 'crm.db'}"
    simulated_crm(crm_url, SMALL)
    tracking_uri = empty_tracking_uri(root)
    config = CrmTrainingConfig()
    engine = connect(crm_url)
    splits = crm_splits(engine, config)
    engine.dispose()
    train_and_register(splits, config, tracking_uri, str(root / "artifacts"))
    return root / "crm.db", root / "mlflow.db", root / "artifacts"


@pytest.fixture
def crm(young_champion: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The URL of the test's own copy of the CRM; MLflow points at its own copy of the store."""
    crm_file, database, artifacts = young_champion
    shutil.copyfile(crm_file, tmp_path / "crm.db")
    shutil.copyfile(database, tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("LEADVAL_ARTIFACT_ROOT", str(artifacts))
    return f"sqlite:///{tmp_path / 'crm.db'}"


def _monitoring_rows(crm_url: str, rows: list[dict]) -> None:
    """``rows`` in the CRM's ``monitoring_runs`` (created with the columns ``leadval monitor`` writes if absent)."""
    engine = connect(crm_url)
    if inspect(engine).has_table("monitoring_runs"):
        table = Table("monitoring_runs", MetaData(), autoload_with=engine)
    else:
        table = Table("monitoring_runs", MetaData(), Column("run_id", String(64)), Column("checked_at", DateTime()),
                      Column("as_of", DateTime()), Column("model", String(32)), Column("check", String(255)),
                      Column("status", String(8)), Column("value", Float), Column("warn", Float),
                      Column("alert", Float), Column("detail", Text))
        table.create(engine)
    with engine.begin() as connection:
        connection.execute(table.insert(), [{"as_of": datetime(2025, 12, 31), "value": None, "warn": None,
                                             "alert": None, **row} for row in rows])
    engine.dispose()


def _versions() -> list[str]:
    return [str(v.version) for v in MlflowClient().search_model_versions("name = 'lead-scoring'")]


def test_if_needed_with_a_young_champion_and_no_monitoring_does_nothing(crm: str) -> None:
    ran = run_leadval("retrain", "leads", "--db", crm, "--if-needed", "--json")
    out = last_json(ran)
    assert (out["retrained"], out["promoted"], out["champion_version"]) == (False, None, "1")
    assert "no monitoring yet" in out["why"] and out["monitoring"] is None
    assert ran.stdout.startswith("lead-scoring: not retrained: champion v1 was trained 0.0 days ago (limit 30)")
    assert _versions() == ["1"]


def test_if_needed_retrains_a_champion_older_than_max_age_days_and_records_why(crm: str) -> None:
    out = last_json(run_leadval("retrain", "leads", "--db", crm, "--if-needed", "--max-age-days", "0", "--json"))
    assert out["retrained"] is True and out["new_version"] == "2"
    assert out["why"].startswith("champion v1 was trained ") and "more than --max-age-days 0" in out["why"]
    assert out["promoted"] is (out["champion_version"] == "2")
    assert "on the same holdout" in out["promotion_reason"]  # the existing gate: candidate vs champion, same rows
    client = MlflowClient()
    assert client.get_model_version("lead-scoring", "2").tags["retrain_reason"] == out["why"]
    assert client.get_run(out["run_id"]).data.tags["retrain_reason"] == out["why"]


def _overall(run_id: str, day: int, status: str, detail: str, model: str = "lead-scoring") -> dict:
    """A model's overall monitoring row, checked on 2026-01-``day``."""
    return {"run_id": run_id, "checked_at": datetime(2026, 1, day), "model": model, "check": "overall",
            "status": status, "detail": detail}


def test_if_needed_retrains_when_the_latest_monitoring_says_alert(crm: str) -> None:
    _monitoring_rows(crm, [_overall("m1", 1, "ok", "all ok"),
                           _overall("m2", 2, "alert", "input drift on source_channel"),
                           _overall("m3", 3, "ok", "", model="clv")])
    out = last_json(run_leadval("retrain", "leads", "--db", crm, "--if-needed", "--json"))
    assert out["retrained"] is True and out["monitoring"]["run_id"] == "m2"
    assert out["why"] == ("the latest monitoring (run m2 checked at 2026-01-02 00:00:00) says alert for lead-scoring: "
                          "input drift on source_channel")


def test_a_latest_monitoring_that_is_not_alert_does_not_retrain(crm: str) -> None:
    _monitoring_rows(crm, [_overall("m1", 1, "alert", "drift"), _overall("m2", 2, "warn", "score drift")])
    out = last_json(run_leadval("retrain", "leads", "--db", crm, "--if-needed", "--json"))
    assert out["retrained"] is False and "says warn" in out["why"]


def test_an_alert_about_a_version_that_is_no_longer_the_champion_does_not_retrain(crm: str) -> None:
    _monitoring_rows(crm, [_overall("m1", 1, "alert", "drift") | {"model_version": "7"}])
    out = last_json(run_leadval("retrain", "leads", "--db", crm, "--if-needed", "--json"))
    assert out["retrained"] is False and "says alert, but for v7, no longer the champion" in out["why"]


def test_clv_without_a_champion_is_retrained_even_with_if_needed(crm: str) -> None:
    out = last_json(run_leadval("retrain", "clv", "--db", crm, "--if-needed", "--json"))
    assert (out["retrained"], out["why"], out["promoted"]) == (True, "clv has no @champion yet", True)
    assert out["champion_version"] == out["new_version"] == "1"


def test_an_unknown_target_is_refused(crm: str) -> None:
    ran = run_leadval("retrain", "leadz", "--db", crm, check=False)
    assert ran.returncode == 2 and "No such command 'leadz'" in ran.stderr
