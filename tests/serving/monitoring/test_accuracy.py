"""Realized accuracy of stored scores against what happened, on a simulated CRM scored at past dates by the
session's champions (tests/serving/conftest.py), and the KPI targets as checks."""

from __future__ import annotations

import shutil
import sys
import types
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from features.crm import schema
from features.crm.store import connect, read_frame
from serving.monitoring.accuracy import (
    AUC_FALLBACK,
    Champion,
    auc_standard_error,
    auc_thresholds,
    clv_accuracy,
    judged_auc,
    lead_accuracy,
    realized_lead_checks,
)
from serving.monitoring.checks import CheckResult
from serving.monitoring.kpi import kpi_checks
from serving.monitoring.run import champion_of
from tests.leadval_cli import run_leadval
from tests.serving.batch.conftest import batch_crm
from tests.serving.conftest import TrainedStore
from training.registry import CLV_MODEL_NAME, LEAD_MODEL_NAME, champion_uri
from training.tracking import use_tracking

LEAD_RUNS = ("2025-06-01", "2025-08-01")
"""Past dates the leads are scored at; with a 90-day horizon both have passed by the CRM's end (2025-12-31)."""
CLV_RUN = "2024-12-01"
"""Past date the customers are scored at; its 365-day horizon has passed by the CRM's end."""
MONITOR_AS_OF = datetime(2025, 12, 31)


def monitor_env(store: TrainedStore, folder: Path, crm_url: str) -> dict[str, str]:
    """`leadval` environment on a copy of the session's MLflow store (monitoring logs runs into it)."""
    source = Path(store.tracking_uri.removeprefix("sqlite:///"))
    shutil.copyfile(source, folder / "mlflow.db")
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "LEADVAL_ARTIFACT_ROOT": store.artifact_root,
            "LEADVAL_DB": crm_url, "OPENBLAS_NUM_THREADS": "1"}


def scored_crm(folder: Path, store: TrainedStore) -> dict[str, str]:
    """A simulated CRM with lead scoring runs at :data:`LEAD_RUNS` and a customer run at :data:`CLV_RUN`."""
    url = f"sqlite:///{folder / 'crm.db'}"
    batch_crm(url)
    env = monitor_env(store, folder, url)
    for day in LEAD_RUNS:
        run_leadval("score", "leads", "--as-of", day, env=env)
    run_leadval("score", "customers", "--as-of", CLV_RUN, env=env)
    return env


@pytest.fixture
def stub_drift(monkeypatch: pytest.MonkeyPatch) -> list[CheckResult]:
    """``serving.monitoring.drift`` replaced by a stub whose ``drift_checks`` returns the list this fixture gives
    (empty unless a test fills it): the tests of accuracy, targets and orchestration do not depend on drift."""
    given: list[CheckResult] = []
    stub = types.ModuleType("serving.monitoring.drift")
    stub.drift_checks = lambda engine, model_uri, as_of: [c for c in given if model_uri == champion_uri(c.model)]
    monkeypatch.setitem(sys.modules, "serving.monitoring.drift", stub)
    return given


@pytest.fixture(scope="module")
def scored(trained_store: TrainedStore, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The scored CRM of this module and its environment."""
    return scored_crm(tmp_path_factory.mktemp("accuracy"), trained_store)


def test_realized_auc_is_the_stored_scores_against_conversions_within_the_horizon(scored: dict[str, str]) -> None:
    use_tracking(scored["MLFLOW_TRACKING_URI"], create=False)
    champion = champion_of(LEAD_MODEL_NAME)
    engine = connect(scored["LEADVAL_DB"], create=False)
    checks = {c.check: c for c in lead_accuracy(engine, champion, MONITOR_AS_OF)}
    history = read_frame(engine, schema.lead_score_history, ["lead_id", "probability", "as_of"])
    leads = read_frame(engine, schema.leads, ["lead_id", "converted_at"])
    latest = history[history["as_of"] == pd.Timestamp(LEAD_RUNS[-1])].merge(leads, on="lead_id")
    start, end = pd.Timestamp(LEAD_RUNS[-1]), pd.Timestamp(LEAD_RUNS[-1]) + pd.Timedelta(days=90)
    latest = latest[~(latest["converted_at"] <= start)]
    y = ((latest["converted_at"] > start) & (latest["converted_at"] <= end)).astype(int)
    assert champion.horizon_days == 90 and champion.holdout_auc is not None
    assert checks["realized_auc"].value == pytest.approx(roc_auc_score(y, latest["probability"]))
    assert checks["realized_auc"].warn == pytest.approx(champion.holdout_auc - 0.05)
    assert checks["realized_auc"].alert == pytest.approx(champion.holdout_auc - 0.10)
    assert "as of 2025-08-01" in checks["realized_auc"].detail
    assert checks["realized_lift_top10"].value is not None
    assert {f"realized_calibration:{band}" for band in schema.SCORE_BANDS} <= set(checks)


def test_no_data_before_any_runs_horizon_has_passed(scored: dict[str, str]) -> None:
    use_tracking(scored["MLFLOW_TRACKING_URI"], create=False)
    engine = connect(scored["LEADVAL_DB"], create=False)
    early = datetime(2025, 8, 29)  # 2025-06-01 + 90 days is 2025-08-30
    leads = lead_accuracy(engine, champion_of(LEAD_MODEL_NAME), early)
    customers = clv_accuracy(engine, champion_of(CLV_MODEL_NAME), early)
    assert {c.status for c in leads + customers} == {"no_data"}
    assert "horizon has passed by 2025-08-29" in leads[0].detail


def test_realized_purchases_compare_orders_since_scoring_with_expected(scored: dict[str, str]) -> None:
    use_tracking(scored["MLFLOW_TRACKING_URI"], create=False)
    engine = connect(scored["LEADVAL_DB"], create=False)
    (check,) = clv_accuracy(engine, champion_of(CLV_MODEL_NAME), MONITOR_AS_OF)
    scores = read_frame(engine, schema.customer_score_history, ["customer_id", "expected_purchases"])
    orders = read_frame(engine, schema.orders, ["customer_id", "ordered_at"])
    start = pd.Timestamp(CLV_RUN)
    actual = orders[(orders["ordered_at"] > start) & (orders["ordered_at"] <= start + pd.Timedelta(days=365))
                    & orders["customer_id"].isin(scores["customer_id"])]
    assert check.value == pytest.approx(abs(len(actual) / scores["expected_purchases"].sum() - 1))
    assert check.status in ("ok", "warn", "alert")


def test_outcomes_leak_nothing_from_before_the_run_or_after_the_horizon() -> None:
    rng = np.random.default_rng(3)
    run_as_of = pd.Timestamp("2025-01-01")
    n = 400
    probability = rng.uniform(0, 1, n)
    converted = rng.uniform(0, 1, n) < probability
    converted_at = pd.Series(pd.NaT, index=range(n), dtype="datetime64[ns]")
    converted_at[converted] = run_as_of + pd.Timedelta(days=30)
    late = ~converted & (np.arange(n) % 3 == 0)  # converted after the horizon: an unconverted lead for this run
    converted_at[late] = run_as_of + pd.Timedelta(days=120)
    before = np.arange(n) % 7 == 0  # converted before the run: not open then, left out
    converted_at[before] = run_as_of - pd.Timedelta(days=1)
    young = np.arange(n) % 2 == 0  # created 89 days before the run; the others 90 days or more
    created_at = np.where(young, run_as_of - pd.Timedelta(days=89), run_as_of - pd.Timedelta(days=90))
    scored = pd.DataFrame({"lead_id": [f"L{i}" for i in range(n)], "probability": probability,
                           "band": np.where(probability > 0.5, "A", "D")})
    leads = pd.DataFrame({"lead_id": scored["lead_id"], "created_at": created_at, "converted_at": converted_at})
    champion = Champion("lead-scoring", "1", new_leads_auc=0.8)
    checks = {c.check: c for c in realized_lead_checks(scored, leads, run_as_of, 90, champion)}
    kept = ~before
    expected = roc_auc_score((converted & kept)[kept], probability[kept])
    assert checks["realized_auc"].value == pytest.approx(expected)
    assert f"{kept.sum():,} open leads" in checks["realized_auc"].detail
    new = kept & young
    assert checks["realized_auc_new_leads"].value == pytest.approx(roc_auc_score(converted[new], probability[new]))
    assert f"{new.sum():,} leads created in the 90 days before" in checks["realized_auc_new_leads"].detail
    assert checks["realized_auc_new_leads"].warn == pytest.approx(0.75)
    assert checks["realized_calibration:B"].status == "no_data"
    assert checks["realized_auc"].warn == AUC_FALLBACK.warn


def _outcomes(auc_gap: float, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes (10% converted) and probabilities that rank them well, ``auc_gap`` of them shuffled at random."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(0, 1, n) < 0.1).astype("float64")
    p = np.where(y == 1, rng.normal(1.5, 1, n), rng.normal(0, 1, n))
    noisy = rng.uniform(0, 1, n) < auc_gap
    return y, np.where(noisy, rng.normal(0.2, 1, n), p)


def test_an_auc_drop_alarms_only_beyond_chance() -> None:
    y, p = _outcomes(0.6, 20_000)
    auc = roc_auc_score(y, p)
    clear = judged_auc("realized_auc_new_leads", "lead-scoring", auc, auc + 0.12, y, "many leads")
    assert clear.status == "alert" and "chance" not in clear.detail
    few_y, few_p = y[:150], p[:150]
    few_auc = roc_auc_score(few_y, few_p)
    small = judged_auc("realized_auc_new_leads", "lead-scoring", few_auc, few_auc + 0.12, few_y, "few leads")
    assert small.status == "ok" and "within chance" in small.detail
    assert auc_standard_error(0.893, 51, 58) == pytest.approx(0.032, abs=1e-3)  # Hanley & McNeil's CT example


def test_new_leads_are_not_judged_without_a_recorded_holdout_auc_of_new_leads() -> None:
    y, p = _outcomes(0.2, 2_000)
    run_as_of = pd.Timestamp("2025-01-01")
    scored = pd.DataFrame({"lead_id": [f"L{i}" for i in range(len(y))], "probability": p, "band": "A"})
    leads = pd.DataFrame({"lead_id": scored["lead_id"], "created_at": run_as_of - pd.Timedelta(days=10),
                          "converted_at": np.where(y == 1, run_as_of + pd.Timedelta(days=5), pd.NaT)})
    checks = {c.check: c for c in realized_lead_checks(scored, leads, run_as_of, 90,
                                                       Champion("lead-scoring", "1", holdout_auc=0.9))}
    assert checks["realized_auc_new_leads"].status == "no_data"
    assert "retrain" in checks["realized_auc_new_leads"].detail
    assert checks["realized_auc"].status in ("ok", "warn", "alert")


def test_auc_thresholds_follow_the_recorded_holdout_auc() -> None:
    assert auc_thresholds(0.82).status(0.80) == "ok"
    assert auc_thresholds(0.82).status(0.76) == "warn"
    assert auc_thresholds(0.82).status(0.70) == "alert"
    assert auc_thresholds(None) == AUC_FALLBACK


def test_targets_become_checks_missed_is_alert_at_risk_is_warn(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    batch_crm(url)
    targets = tmp_path / "targets.toml"
    targets.write_text(TARGETS)
    engine = connect(url, create=False)
    checks = {c.check: c for c in kpi_checks(engine, MONITOR_AS_OF, targets)}
    assert checks["kpi_target:met easily"].status == "ok"
    assert checks["kpi_target:never reached"].status == "warn"
    assert checks["kpi_target:deadline passed"].status == "alert"
    assert checks["kpi_target:deadline passed"].warn == 1e9
    assert [c.status for c in kpi_checks(engine, MONITOR_AS_OF, None)] == ["no_data"]


TARGETS = """
[[targets]]
name = "met easily"
metric = "leads"
scope = "all"
target = 1
direction = "at_least"
deadline = "+3 months"

[[targets]]
name = "never reached"
metric = "leads"
scope = "all"
target = 1e9
direction = "at_least"
deadline = "+3 months"

[[targets]]
name = "deadline passed"
metric = "leads"
scope = "all"
target = 1e9
direction = "at_least"
deadline = 2025-06-30
"""
