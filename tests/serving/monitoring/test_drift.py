"""Input and score drift: a stationary simulated CRM six months after training is ok (3 seeds), a new country and
another channel mix alert, and drift_checks reads the champion's reference and the scoring runs."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, text

from features.crm.store import connect, create_schema
from features.simulate.config import DEFAULT_CHANNELS, SimulationConfig
from features.simulate.generate import generate_crm
from serving.batch.jobs import score_open_leads
from serving.monitoring.checks import overall
from serving.monitoring.drift import drift_checks, input_drift, open_lead_features, psi, score_drift
from tests.mlflow_stores import empty_tracking_uri
from training.leads.data.splits import CrmTrainingConfig, crm_splits
from training.leads.job import train_and_register
from training.leads.reference import feature_reference
from training.registry import LEAD_MODEL_URI

END = datetime(2025, 12, 31)
CUTOFF = END - timedelta(days=182)
"""Training sees the CRM up to six months before the night that is checked."""


def stationary_crm(folder: Path, seed: int) -> Engine:
    """A simulated CRM without trends: every campaign always on, flat lead demand, no A/B tests."""
    channels = tuple(replace(c, campaigns=tuple(replace(k, active=((0.0, 1.0),)) for k in c.campaigns))
                     for c in DEFAULT_CHANNELS)
    engine = connect(f"sqlite:///{folder / 'crm.db'}")
    create_schema(engine)
    generate_crm(engine, SimulationConfig(n_leads=3_000, n_customers=100, seed=seed, end=END, channels=channels,
                                          lead_growth=0.0, experiments=()))
    return engine


def drift_after_cutoff(engine: Engine) -> None:
    """A new country for ~30% of the leads created after the cutoff, and paid search's leads moved to events."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE leads SET country = 'Atlantis' WHERE created_at > :d AND abs(random()) % 10 < 3"),
                     {"d": CUTOFF})
        conn.execute(text("UPDATE leads SET source_channel = 'events' WHERE created_at > :d "
                          "AND source_channel = 'paid_search'"), {"d": CUTOFF})


@pytest.mark.parametrize("seed", [1])  # seeds 2 and 3 through the whole monitor: test_end_to_end.py
def test_a_stationary_crm_six_months_on_is_ok_and_a_drifted_one_alerts(tmp_path: Path, seed: int) -> None:
    engine = stationary_crm(tmp_path, seed)
    splits = crm_splits(engine, CrmTrainingConfig(as_of=str(CUTOFF)))
    reference = feature_reference(splits.train, splits.spec.categorical, splits.spec.numeric)
    stationary = input_drift(reference, open_lead_features(engine, END), "lead-scoring")
    worst = max((r.value for r in stationary if r.check.startswith("input_drift:")), default=0.0)
    assert overall(stationary) == "ok", [(r.check, r.value) for r in stationary if r.status != "ok"]
    assert worst < 0.1
    assert "input_drift:days_since_created" not in {r.check for r in stationary}
    drift_after_cutoff(engine)
    drifted = {r.check: r for r in input_drift(reference, open_lead_features(engine, END), "lead-scoring")}
    engine.dispose()
    assert drifted["new_categories:country"].status == "alert"
    assert "Atlantis" in drifted["new_categories:country"].detail
    assert drifted["input_drift:country"].status == "alert"
    assert drifted["input_drift:source_channel"].status == "alert"
    assert overall(drifted.values()) == "alert"


def test_psi_is_zero_for_equal_shares_and_finite_for_an_empty_bin() -> None:
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0
    assert psi(np.array([0.9, 0.1]), np.array([1.0, 0.0])) == pytest.approx(0.7, abs=0.1)


def test_without_a_reference_input_drift_says_no_data_and_to_retrain() -> None:
    (result,) = input_drift(None, pd.DataFrame({"x": [1.0]}), "lead-scoring")
    assert result.status == "no_data" and "retrain to get a reference" in result.detail


def test_score_drift_against_previous_runs() -> None:
    rng = np.random.default_rng(0)
    runs = [pd.Series(rng.integers(1, 100, 2_000)) for _ in range(3)]
    assert [r.status for r in score_drift(runs[0], [], "lead-scoring")] == ["no_data"]
    same = score_drift(runs[0], runs[1:], "lead-scoring")
    assert overall(same) == "ok" and len(same) == 5
    higher = {r.check: r for r in score_drift(pd.Series(rng.integers(60, 100, 2_000)), runs, "lead-scoring")}
    assert higher["score_drift"].status == "alert" and higher["score_band_share:A"].status == "alert"


def test_drift_checks_reads_the_champions_reference_and_the_scoring_runs(tmp_path: Path) -> None:
    engine = stationary_crm(tmp_path, 4)
    config = CrmTrainingConfig(as_of=str(CUTOFF))
    train_and_register(crm_splits(engine, config), config, empty_tracking_uri(tmp_path), str(tmp_path / "artifacts"))
    assert drift_checks(engine, LEAD_MODEL_URI, END)[-1].check == "score_drift"  # no run yet: no_data
    for night in (END - timedelta(days=2), END - timedelta(days=1), END):
        score_open_leads(engine, LEAD_MODEL_URI, as_of=night)
    results = {r.check: r for r in drift_checks(engine, LEAD_MODEL_URI, END, runs=2)}
    engine.dispose()
    assert results["input_drift:source_channel"].status == "ok"
    assert results["score_drift"].status == "ok" and "previous 2 run(s)" in results["score_drift"].detail
    assert {"score_band_share:A", "missing_rate:country", "new_categories:country"} <= set(results)
    assert overall(results.values()) == "ok", [(c, r.value) for c, r in results.items() if r.status != "ok"]
