"""The training reference: decile bins, category shares and missing rates per age stratum, read back exactly."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.crm.store import connect, create_schema
from features.simulate.config import SimulationConfig
from features.simulate.generate import generate_crm
from tests.mlflow_stores import empty_tracking_uri
from training.leads.data.splits import CrmTrainingConfig, crm_splits
from training.leads.job import train_and_register
from training.leads.reference import AGE_EDGES_DAYS, REFERENCE_FILE, FeatureReference, feature_reference
from training.leads.scorer import LeadScorer


def training_rows(seed: int, n: int = 2_000) -> pd.DataFrame:
    """Made-up training rows: a lead age, a numeric with 20% missing, a zero-inflated count and a channel."""
    rng = np.random.default_rng(seed)
    amount = rng.gamma(2.0, 10.0, n)
    amount[rng.random(n) < 0.2] = np.nan
    return pd.DataFrame({
        "days_since_created": rng.uniform(0, 500, n),
        "amount": amount,
        "visits_7d": np.where(rng.random(n) < 0.7, 0.0, rng.poisson(3, n)),
        "channel": pd.Series(rng.choice(["email", "paid", "direct", None], n, p=[0.5, 0.3, 0.15, 0.05]),
                             dtype=object),
    })


def test_numerics_are_binned_at_training_deciles_and_categoricals_counted_per_category() -> None:
    rows = training_rows(0)
    reference = feature_reference(rows, ("channel",), ("amount", "visits_7d"))
    young = rows[rows["days_since_created"] < AGE_EDGES_DAYS[-1]]
    amount = reference.features[1]
    assert amount.edges == pytest.approx(np.quantile(young["amount"].dropna(), np.linspace(0.1, 0.9, 9)).tolist())
    assert amount.shares == pytest.approx([0.1] * 10, abs=0.01)
    assert amount.missing_rate == pytest.approx(young["amount"].isna().mean(), abs=1e-6)
    visits = reference.features[2]
    assert visits.edges[0] == 0 and visits.shares[0] > 0.6  # the zero-inflated count's ties stay in one bin
    channel = reference.features[0]
    assert channel.bins[0] == "email" and sum(channel.shares) == pytest.approx(1.0)
    assert channel.missing_rate == pytest.approx(young["channel"].isna().mean(), abs=1e-6)


def test_leads_a_year_old_or_older_are_left_out_and_the_rest_counted_by_age() -> None:
    rows = training_rows(1)
    reference = feature_reference(rows, ("channel",), ())
    strata = reference.strata(rows)
    assert ((strata == -1) == (rows["days_since_created"] >= AGE_EDGES_DAYS[-1])).all()
    counted = np.asarray(reference.features[0].counts).sum(axis=1) + np.asarray(reference.features[0].missing)
    assert counted.tolist() == np.bincount(strata[strata >= 0], minlength=len(AGE_EDGES_DAYS) - 1).tolist()


def test_rows_without_an_age_form_one_stratum() -> None:
    rows = training_rows(2).drop(columns="days_since_created")
    reference = feature_reference(rows, ("channel",), ("amount",))
    assert reference.age_column is None and len(reference.features[0].counts) == 1
    assert (reference.strata(rows) == 0).all()


def test_json_round_trip_is_exact() -> None:
    rows = training_rows(3)
    scores = pd.Series(np.arange(1, 100).repeat(3))
    bands = pd.Series(np.where(scores >= 91, "A", np.where(scores >= 71, "B", np.where(scores >= 41, "C", "D"))))
    reference = feature_reference(rows, ("channel",), ("amount", "visits_7d"), scores, bands)
    assert FeatureReference.from_json(reference.to_json()) == reference
    assert reference.scores.shares[0] == pytest.approx(10 / 99, abs=1e-6)
    assert reference.scores.bands["A"] == pytest.approx(9 / 99, abs=1e-6)


def test_the_scorer_saves_its_reference_and_a_model_without_one_loads_with_none(tmp_path: Path,
                                                                               trained_scorer: LeadScorer) -> None:
    trained_scorer.save(tmp_path / "with")
    assert (tmp_path / "with" / REFERENCE_FILE).exists()
    assert LeadScorer.load(tmp_path / "with").reference == trained_scorer.reference
    (tmp_path / "with" / REFERENCE_FILE).unlink()
    assert LeadScorer.load(tmp_path / "with").reference is None


@pytest.fixture(scope="module")
def trained_scorer(tmp_path_factory: pytest.TempPathFactory) -> LeadScorer:
    """A lead scorer trained by the job on a small simulated CRM (real MLflow store), with its reference."""
    root = tmp_path_factory.mktemp("reference_store")
    engine = connect(f"sqlite:///{root / 'crm.db'}")
    create_schema(engine)
    generate_crm(engine, SimulationConfig(n_leads=1_200, n_customers=100, seed=5, end=datetime(2025, 6, 30)))
    config = CrmTrainingConfig()
    result = train_and_register(crm_splits(engine, config), config, empty_tracking_uri(root), str(root / "artifacts"))
    engine.dispose()
    assert result.scorer.reference is not None and result.scorer.reference.scores is not None
    return result.scorer
