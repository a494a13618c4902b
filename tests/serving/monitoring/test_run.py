"""One monitoring run end to end: checks gathered, ``monitoring_runs`` written (idempotently), an MLflow run logged."""

from __future__ import annotations

from datetime import datetime

import pytest
from mlflow.tracking import MlflowClient
from sqlalchemy import func, select

from features.crm import schema
from features.crm.store import connect, read_frame
from serving.monitoring.checks import CheckResult
from serving.monitoring.run import EXPERIMENT_NAME, metric_key, monitor, monitoring_run_id
from tests.serving.conftest import TrainedStore
from tests.serving.monitoring.test_accuracy import MONITOR_AS_OF, scored_crm, stub_drift

__all__ = ["stub_drift"]


@pytest.fixture(scope="module")
def scored(trained_store: TrainedStore, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The scored CRM of this module and its environment."""
    return scored_crm(tmp_path_factory.mktemp("run"), trained_store)


def test_monitor_writes_every_check_and_an_overall_row_per_model(scored: dict[str, str],
                                                                 stub_drift: list[CheckResult]) -> None:
    engine = connect(scored["LEADVAL_DB"], create=False)
    run = monitor(engine, scored["MLFLOW_TRACKING_URI"], MONITOR_AS_OF, None, scored["LEADVAL_ARTIFACT_ROOT"])
    rows = read_frame(engine, schema.monitoring_runs)
    assert len(rows) == len(run.checks) and set(rows["run_id"]) == {run.run_id}
    overall = rows[rows["check"] == "overall"].set_index("model")["status"]
    assert set(overall.index) == {"lead-scoring", "clv", "kpi", "all"}
    assert overall["all"] == run.status and overall["kpi"] == "ok"  # no_data counts as ok
    auc = rows[(rows["check"] == "realized_auc")].iloc[0]
    assert auc["model_version"] == run.versions["lead-scoring"] and auc["value"] > 0.5
    assert auc["as_of"] == MONITOR_AS_OF

    again = monitor(engine, scored["MLFLOW_TRACKING_URI"], MONITOR_AS_OF, None, scored["LEADVAL_ARTIFACT_ROOT"])
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(schema.monitoring_runs)).scalar()
    assert again.run_id == run.run_id and stored == len(run.checks)


def test_monitor_logs_one_mlflow_run_with_a_metric_per_check_value(scored: dict[str, str],
                                                                   stub_drift: list[CheckResult]) -> None:
    engine = connect(scored["LEADVAL_DB"], create=False)
    run = monitor(engine, scored["MLFLOW_TRACKING_URI"], MONITOR_AS_OF, None, scored["LEADVAL_ARTIFACT_ROOT"])
    logged = MlflowClient(scored["MLFLOW_TRACKING_URI"]).get_run(run.mlflow_run_id)
    assert logged.info.experiment_id == MlflowClient(scored["MLFLOW_TRACKING_URI"]).get_experiment_by_name(
        EXPERIMENT_NAME).experiment_id
    auc = next(c for c in run.checks if c.check == "realized_auc")
    assert logged.data.metrics[metric_key(auc)] == pytest.approx(auc.value)
    assert logged.data.tags["status"] == run.status and logged.data.tags["monitoring_run_id"] == run.run_id
    assert logged.data.metrics["exit_code"] == run.exit_code


def test_a_drift_alert_makes_the_run_an_alert(scored: dict[str, str], stub_drift: list[CheckResult]) -> None:
    stub_drift.append(CheckResult("input_drift:source_channel", "lead-scoring", 0.4, 0.1, 0.25, "alert",
                                  "population stability index 0.40"))
    engine = connect(scored["LEADVAL_DB"], create=False)
    run = monitor(engine, scored["MLFLOW_TRACKING_URI"], datetime(2025, 7, 1), None, scored["LEADVAL_ARTIFACT_ROOT"])
    assert run.status == "alert" and run.exit_code == 4
    assert any("input_drift:source_channel: alert" in w for w in run.warnings)
    by_check = {(c.model, c.check): c.status for c in run.checks}
    assert by_check[("lead-scoring", "realized_auc")] == "no_data"
    assert by_check[("lead-scoring", "overall")] == "alert" and by_check[("clv", "overall")] == "ok"


def test_the_run_id_names_the_crm_as_of_champions_and_targets() -> None:
    day, versions = datetime(2025, 12, 31), {"lead-scoring": "1", "clv": None}
    same = monitoring_run_id(day, versions, None, "sqlite:///a.db")
    assert same == monitoring_run_id(day, versions, None, "sqlite:///a.db")
    assert same != monitoring_run_id(day, versions, None, "sqlite:///b.db")
    assert same != monitoring_run_id(day, {**versions, "clv": "2"}, None, "sqlite:///a.db")
