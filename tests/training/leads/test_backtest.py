"""The lead-model backtest: as-of dates, the retrain's recipe and leakage, per-band rates, storage, and the
issue's "done when" on a demo-sized CRM.

The pure parts run on hand-made frames with a stand-in model; one small simulated CRM (module fixture) holds the
retrain to :func:`training.leads.data.splits.crm_splits` + :func:`training.leads.fit.fit_lead_model`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from features.crm import schema
from features.crm.store import connect, create_schema, read_frame
from features.errors import InvalidInput
from features.lead_features import LeadFeatureArrays
from features.lead_history import crm_period, load_crm_frames
from features.simulate.config import SimulationConfig
from features.simulate.generate import generate_crm
from training.leads.backtest import (
    Backtest,
    Recipe,
    SnapshotCache,
    backtest_as_of_dates,
    band_rates,
    latest_backtest,
    parse_every,
    recipe_config,
    retrained_scorer,
    run_backtest,
    score_as_of,
    store_backtest,
)
from training.leads.data.splits import CrmTrainingConfig, crm_splits
from training.leads.fit import LeadModelConfig, fit_lead_model

T = pd.Timestamp
END = datetime(2026, 6, 30, 12)
"""A fixed end for the simulated CRMs, so they are the same on every day the tests run."""


# --- as-of dates and flags -------------------------------------------------------------------------------------------

def test_default_as_of_dates_are_the_six_latest_midnights_whose_horizon_has_passed() -> None:
    dates = backtest_as_of_dates(T("2024-01-01 09:00"), T("2025-12-30 23:10"), 90)
    assert dates[-1] == T("2025-10-01") and dates[-1] + pd.Timedelta(days=90) <= T("2025-12-30 23:10")
    assert len(dates) == 6 and list(np.diff(dates)) == [pd.Timedelta(days=30)] * 5


def test_as_of_dates_from_to_every_count_back_from_to() -> None:
    dates = backtest_as_of_dates(T("2024-01-01"), T("2025-12-31"), 90, first=T("2025-01-01"), last=T("2025-03-01"),
                                 every_days=14)
    assert dates[-1] == T("2025-03-01") and dates[0] >= T("2025-01-01") and len(dates) == 5


@pytest.mark.parametrize(("first", "last", "message"), [
    (None, "2025-11-01", "--to 2025-11-01: its 90-day horizon ends after the CRM's last event"),
    ("2025-09-01", "2025-08-01", "--from 2025-09-01 is after the last as-of date 2025-08-01"),
    ("2023-01-01", "2023-06-01", "no as-of date in it after the CRM's start"),
])
def test_as_of_dates_that_cannot_be_backtested_are_clear_errors(first: str | None, last: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        backtest_as_of_dates(T("2024-01-01"), T("2025-12-31"), 90, first and T(first), T(last))


def test_every_reads_days_and_weeks() -> None:
    assert (parse_every("30d"), parse_every("4w"), parse_every("7")) == (30, 28, 7)
    for bad in ("0d", "monthly", "-3d", "3m"):
        with pytest.raises(InvalidInput, match="--every"):
            parse_every(bad)


# --- per as-of and per band, with a stand-in model -------------------------------------------------------------------

@dataclass(frozen=True)
class FixedScores:
    probability: np.ndarray
    band: np.ndarray


class StandIn:
    """A model scoring each lead by a probability and band fixed per lead id."""

    horizon_days = 30

    def __init__(self, by_lead: dict[str, tuple[float, str]]) -> None:
        self.by_lead = by_lead

    def predict_features(self, features: LeadFeatureArrays, reasons: bool = True) -> FixedScores:
        found = [self.by_lead[str(i)] for i in features.lead_ids]
        return FixedScores(np.array([p for p, _ in found]), np.array([b for _, b in found], dtype=object))


def _tiny_crm() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Five leads around an as-of of 2025-03-01 with a 30-day horizon."""
    leads = pd.DataFrame({
        "lead_id": ["L1", "L2", "L3", "L4", "L5"],
        "created_at": [T("2025-01-01"), T("2025-01-05"), T("2025-02-01"), T("2025-02-10"), T("2025-03-05")],
        "source_channel": ["paid_search"] * 5,
        "converted_at": [T("2025-02-15"),  # before the as-of: not open, left out
                         T("2025-03-20"),  # within the horizon: converted
                         T("2025-04-15"),  # after the horizon: not converted
                         pd.NaT,            # never
                         T("2025-03-10")],  # created after the as-of: left out
    })
    for name in ("campaign", "country", "industry", "company_size", "job_seniority", "email_domain_type",
                 "customer_id"):
        leads[name] = None
    activities = pd.DataFrame({"lead_id": ["L2", "L3"], "occurred_at": [T("2025-02-20"), T("2025-03-15")],
                               "activity_type": ["demo_request", "web_session"], "duration_seconds": [None, 60.0]})
    return leads, activities


def test_open_leads_at_the_as_of_are_judged_by_conversions_within_the_horizon() -> None:
    leads, activities = _tiny_crm()
    model = StandIn({"L2": (0.6, "A"), "L3": (0.2, "B"), "L4": (0.1, "B")})
    result = score_as_of(model, leads, activities, T("2025-03-01"), 30)
    assert {k: result.metrics[k] for k in ("leads", "conversions", "roc_auc", "pr_auc")} == {
        "leads": 3, "conversions": 1, "roc_auc": 1.0, "pr_auc": 1.0}
    assert result.metrics["base_rate"] == pytest.approx(1 / 3)
    bands = result.bands.set_index("band")
    assert bands["leads"].tolist() == [1, 2, 0, 0] and bands["conversions"].tolist() == [1, 0, 0, 0]
    assert bands.loc["A", "actual_rate"] == 1.0 and bands.loc["B", "predicted_rate"] == pytest.approx(0.15)
    assert np.isnan(bands.loc["C", "predicted_rate"]) and np.isnan(bands.loc["D", "actual_rate"])


def test_band_rates_have_every_band_once() -> None:
    table = band_rates(T("2025-01-01"), np.array(["D", "A", "D"]), np.array([0.1, 0.5, 0.2]), np.array([0.0, 1, 1]))
    assert table["band"].tolist() == ["A", "B", "C", "D"] and table["leads"].tolist() == [1, 0, 0, 2]
    assert table.loc[3, "predicted_rate"] == pytest.approx(0.15) and table.loc[3, "actual_rate"] == 0.5


def test_current_model_backtest_warns_that_it_is_optimistic() -> None:
    leads, activities = _tiny_crm()
    model = StandIn({"L2": (0.6, "A"), "L3": (0.2, "B"), "L4": (0.1, "B")})
    recipe = Recipe(CrmTrainingConfig(horizon_days=30), "test", model_version="7", trained_to=T("2025-05-01"))
    backtest = run_backtest(leads, activities, T("2025-01-01"), [T("2025-03-01")], recipe, "current", model)
    assert any("optimistic" in w and "2025-05-01" in w for w in backtest.warnings)
    summary = backtest.summary()
    assert summary["model"] == "current" and summary["bands"][0] == {
        "band": "A", "leads": 1, "predicted_rate": 0.6, "actual_rate": 1.0, "as_of": "2025-03-01T00:00:00"}
    assert summary["pooled"][0]["conversions"] == 1 and summary["as_ofs"][0]["trained_to"] is None
    with pytest.raises(InvalidInput, match="--model 'latest': expected retrain or current"):
        run_backtest(leads, activities, T("2025-01-01"), [T("2025-03-01")], recipe, "latest", model)


# --- the recipe ------------------------------------------------------------------------------------------------------

def test_recipe_comes_from_the_logged_config_ignoring_keys_it_does_not_know() -> None:
    logged = {"as_of": None, "horizon_days": 60, "snapshot_every_days": 14, "valid_snapshots": 3, "future": 1,
              "model": {"learning_rate": 0.1, "band_shares": [0.1, 0.2, 0.3], "not_yet": True}}
    config = recipe_config(logged)
    assert (config.horizon_days, config.snapshot_every_days, config.valid_snapshots) == (60, 14, 3)
    assert config.model == LeadModelConfig(learning_rate=0.1, band_shares=(0.1, 0.2, 0.3))
    assert config.test_snapshots == CrmTrainingConfig().test_snapshots
    with pytest.raises(InvalidInput, match="trained on a flat file"):
        recipe_config({"path": "leads.csv", "target": "y"})


# --- the retrain on a small simulated CRM ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_crm(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('backtest') / 'crm.db'}"
    engine = connect(url)
    create_schema(engine)
    generate_crm(engine, SimulationConfig(n_leads=2_000, n_customers=100, seed=5, end=END))
    engine.dispose()
    return url


def test_the_retrain_is_the_recipe_on_the_crm_as_it_was_at_the_as_of(small_crm: str) -> None:
    """Same snapshots and the same model as training with the as-of as the cutoff (which reads nothing after it),
    though the backtest reads the whole CRM once: nothing the retrained model learned happened after the as-of."""
    engine = connect(small_crm)
    start, end = crm_period(engine)
    as_of = backtest_as_of_dates(start, end, 90)[0]
    config = replace(CrmTrainingConfig(), as_of=as_of.isoformat())
    crm = load_crm_frames(engine)
    backtested, trained_to = retrained_scorer(SnapshotCache(crm.leads, crm.activities, 90), start, as_of, config)
    assert trained_to <= as_of
    splits = crm_splits(engine, config)
    trained = fit_lead_model(splits.train, splits.valid, splits.spec, splits.wording, config.model, "converted", 90)
    rows = splits.test
    np.testing.assert_array_equal(backtested.probability(rows), trained.probability(rows))
    assert backtested.spec == trained.spec
    engine.dispose()


def test_snapshots_whose_labels_end_after_the_cutoff_are_refused(small_crm: str) -> None:
    engine = connect(small_crm)
    crm = load_crm_frames(engine)
    with pytest.raises(ValueError, match="label windows ending after the cutoff"):
        SnapshotCache(crm.leads, crm.activities, 90).frame([T("2026-01-01")], T("2026-03-01"))
    engine.dispose()


# --- storage ---------------------------------------------------------------------------------------------------------

def _stored(backtest_id: str, as_ofs: list[str], created: str, actual_a: float = 0.5) -> Backtest:
    metrics = pd.DataFrame({"as_of": [T(d) for d in as_ofs], "leads": 10, "conversions": 2, "base_rate": 0.2,
                            "mean_probability": 0.25, "roc_auc": 0.8, "pr_auc": 0.5, "lift_top10": 2.5,
                            "trained_to": [T(d) - pd.Timedelta(days=120) for d in as_ofs]})
    bands = pd.concat([band_rates(T(d), np.array(["A", "A", "D"]), np.array([0.6, 0.4, 0.1]),
                                  np.array([1.0, 0.0 if actual_a == 0.5 else 1.0, 0.0])) for d in as_ofs],
                      ignore_index=True)
    recipe = Recipe(CrmTrainingConfig(), "test", model_version="3")
    return Backtest(backtest_id, "retrain", recipe, 90, 30, metrics, bands, (), datetime.fromisoformat(created))


def test_stored_backtests_replace_a_rerun_and_the_latest_is_read_back(db_url: str) -> None:
    engine = connect(db_url)
    assert latest_backtest(engine) is None
    first = _stored("bt-1", ["2025-01-01", "2025-02-01", "2025-03-01"], "2025-06-01T10:00:00")
    assert store_backtest(engine, first) == 3 + 12
    other = _stored("bt-2", ["2025-01-01"], "2025-06-02T10:00:00")
    store_backtest(engine, other)
    rerun = _stored("bt-1", ["2025-02-01", "2025-03-01"], "2025-06-03T10:00:00", actual_a=1.0)
    store_backtest(engine, rerun)
    runs = read_frame(engine, schema.lead_backtests)
    assert sorted(runs.groupby("backtest_id").size().items()) == [("bt-1", 2), ("bt-2", 1)]
    assert len(read_frame(engine, schema.lead_backtest_bands)) == 8 + 4
    latest_runs, latest_bands = latest_backtest(engine)
    assert latest_runs["backtest_id"].unique().tolist() == ["bt-1"]
    assert latest_runs["as_of"].tolist() == [T("2025-02-01"), T("2025-03-01")]
    assert latest_runs.loc[0, "recipe"]["source"] == "test" and latest_runs.loc[0, "model_version"] == "3"
    assert latest_bands["band"].tolist() == ["A", "B", "C", "D"] * 2
    assert latest_bands.loc[0, "actual_rate"] == 1.0 and latest_bands.loc[0, "leads"] == 2
    engine.dispose()


def test_a_failed_store_leaves_the_earlier_backtest_whole(sqlite_url: str) -> None:
    engine = connect(sqlite_url)
    create_schema(engine)
    store_backtest(engine, _stored("bt-1", ["2025-01-01"], "2025-06-01T10:00:00"))
    broken = _stored("bt-1", ["2025-02-01"], "2025-06-02T10:00:00")
    broken.bands.loc[0, "leads"] = None  # NOT NULL: the insert fails after the deletes
    with pytest.raises(Exception):  # noqa: B017 - the driver's integrity error
        store_backtest(engine, broken)
    runs, bands = latest_backtest(engine)
    assert runs["as_of"].tolist() == [T("2025-01-01")] and len(bands) == 4
    engine.dispose()


# --- the "done when" -----------------------------------------------------------------------------------------

@pytest.mark.slow  # the demo CRM (5,000 leads): six retrains end to end
def test_on_the_demo_crm_bands_rank_and_band_a_is_calibrated(tmp_path) -> None:
    """``leadval backtest leads`` defaults on the demo CRM (``generate --leads 5000 --customers 1000 --seed 42``):
    pooled over the six dates, actual rates A > B > C >= D, and band A's actual within a factor 1.5 of its
    predicted rate. A demo-sized CRM and six retrains: ~7 s."""
    engine = connect(f"sqlite:///{tmp_path / 'crm.db'}")
    create_schema(engine)
    generate_crm(engine, SimulationConfig(n_leads=5_000, n_customers=1_000, seed=42, end=END))
    start, end = crm_period(engine)
    crm = load_crm_frames(engine)
    backtest = run_backtest(crm.leads, crm.activities, start, backtest_as_of_dates(start, end, 90),
                            Recipe(CrmTrainingConfig(), "defaults"))
    pooled = backtest.pooled.set_index("band")
    actual, predicted = pooled["actual_rate"], pooled["predicted_rate"]
    assert len(backtest.metrics) == 6 and (backtest.metrics["roc_auc"] > 0.8).all(), backtest.metrics
    assert actual["A"] > actual["B"] > actual["C"] >= actual["D"], pooled
    assert 1 / 1.5 <= actual["A"] / predicted["A"] <= 1.5, pooled
    engine.dispose()
