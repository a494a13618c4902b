"""Scenario drift of the CRM simulator: a stationary CRM is unchanged, a drifting one changes at its change date."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from features.errors import InvalidInput
from features.simulate.config import SimulationConfig
from tests.features.simulate.test_experiments import tables
from tests.leadval_cli import run_leadval

END = pd.Timestamp("2025-12-31")
CHANGE = date(2025, 6, 30)
TINY = SimulationConfig(n_leads=240, n_customers=40, seed=3, chunk_leads=100, end=END)
STATIONARY_HASHES = {
    "leads": 4228954448384840065, "activities": 4830323581387096099, "customers": 2496969413342142013,
    "orders": 1915394569417251183, "marketing_spend": 541570145989403983,
    "experiment_assignments": 1004101534938664488, "truth_parameters": 2097322284396034846,
    "truth_leads": 8339123742712210541, "truth_customers": 9045348774911534273,
    "truth_experiments": 6637960342313823899,
}
"""Frame hashes of ``TINY``'s tables as the simulator wrote them before scenarios existed (the truth tables'
floats to 12 decimals: CPUs with other vector units round the last bits of numpy's exp and log differently)."""


def frame_hash(frame: pd.DataFrame) -> int:
    """A hash of the frame's values, floats rounded to 12 decimals."""
    floats = {column: 12 for column in frame.select_dtypes("float").columns}
    return int(pd.util.hash_pandas_object(frame.round(floats), index=True).sum() % (1 << 63))


@pytest.fixture(scope="module")
def drift(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    """A drifting CRM big enough to see the change, and leads of a stationary one of the same seed."""
    path = tmp_path_factory.mktemp("drift")
    size = {"n_leads": 12_000, "n_customers": 1_500, "seed": 5, "end": END}
    frames = tables(f"sqlite:///{path / 'drift.db'}", SimulationConfig(**size, scenario="drift"))
    stationary = tables(f"sqlite:///{path / 'stationary.db'}", SimulationConfig(**size))
    return frames | {"stationary_leads": stationary["leads"]}


def test_stationary_crm_is_unchanged_by_scenarios(tmp_path: Path) -> None:
    frames = tables(f"sqlite:///{tmp_path / 'crm.db'}", replace(TINY, scenario="stationary"))
    assert {name: frame_hash(frames[name]) for name in STATIONARY_HASHES} == STATIONARY_HASHES
    assert frames["truth_drift"].empty


def test_default_change_date_is_six_months_before_the_end() -> None:
    assert SimulationConfig(end=END, scenario="drift").change_date == CHANGE
    assert SimulationConfig(end=END).change_date is None


def test_drift_halves_the_channel_conversion_rate_after_the_change(drift: dict[str, pd.DataFrame]) -> None:
    def mine(leads: pd.DataFrame) -> pd.DataFrame:
        return leads[(leads["source_channel"] == "paid_social") & (leads["created_at"] >= pd.Timestamp(CHANGE))]

    truth = drift["truth_leads"].set_index("lead_id").loc[mine(drift["leads"])["lead_id"]]
    assert len(truth) > 600 and 0.5 < (truth["conversion_probability"] == 0).mean() < 0.8

    def relative_rate(leads: pd.DataFrame) -> float:
        """The channel's post-change conversion rate over the other channels' (the propensity shifts for all)."""
        after = leads[leads["created_at"] >= pd.Timestamp(CHANGE)]
        converted = after["converted_at"].notna().groupby(after["source_channel"] == "paid_social").mean()
        return converted[True] / converted[False]

    assert relative_rate(drift["leads"]) < 0.8 * relative_rate(drift["stationary_leads"])


def test_new_campaign_and_country_appear_only_after_the_change(drift: dict[str, pd.DataFrame]) -> None:
    leads, customers = drift["leads"], drift["customers"]
    after = leads["created_at"] >= pd.Timestamp(CHANGE)
    assert (leads.loc[after, "campaign"] == "tiktok_lead_ads").sum() > 100
    assert not (leads.loc[~after, "campaign"] == "tiktok_lead_ads").any()
    assert (leads.loc[after, "country"] == "JP").sum() > 100
    assert not (leads.loc[~after, "country"] == "JP").any()
    assert not (customers.loc[customers["created_at"] < pd.Timestamp(CHANGE), "country"] == "JP").any()
    assert (drift["marketing_spend"]["campaign"] == "tiktok_lead_ads").any()


def test_customers_acquired_after_the_change_drop_out_more(drift: dict[str, pd.DataFrame]) -> None:
    truth = drift["truth_customers"].merge(drift["customers"][["customer_id", "created_at"]], on="customer_id")
    after = truth["created_at"] >= pd.Timestamp(CHANGE)
    before, later = truth.loc[~after, "dropout_probability"].mean(), truth.loc[after, "dropout_probability"].mean()
    assert 1.6 < later / before < 2.4


def test_after_the_change_webinars_not_demos_tell_converters_apart(drift: dict[str, pd.DataFrame]) -> None:
    leads, activities = drift["leads"], drift["activities"]
    counts = (activities.assign(activity_type=activities["activity_type"].astype(str))
              .groupby(["lead_id", "activity_type"]).size().unstack(fill_value=0))
    frame = leads.set_index("lead_id").assign(after=leads["created_at"].ge(pd.Timestamp(CHANGE)).to_numpy(),
                                              converted=leads["converted_at"].notna().to_numpy())
    frame = frame[["after", "converted"]].join(counts).fillna(0)
    rates = frame.groupby(["after", "converted"])[["demo_request", "pricing_page_view", "webinar_attend"]].mean()
    ratio = rates.xs(True, level="converted") / rates.xs(False, level="converted")
    assert ratio.loc[False, "demo_request"] > 2.5 and ratio.loc[False, "pricing_page_view"] > 1.5
    assert 0.6 < ratio.loc[True, "demo_request"] < 1.5 and 0.6 < ratio.loc[True, "pricing_page_view"] < 1.5
    assert ratio.loc[True, "webinar_attend"] > 2.5 * ratio.loc[False, "webinar_attend"]
    triggers = drift["truth_leads"].set_index("lead_id").loc[frame.index[frame["after"]], "trigger_activity_type"]
    assert set(triggers.dropna()) == {"webinar_attend", "content_download"}


def test_truth_drift_names_every_change(drift: dict[str, pd.DataFrame]) -> None:
    truth = drift["truth_drift"].set_index("change")
    assert set(truth.index) == {"conversion", "engagement", "new_campaign", "new_country", "propensity",
                                "signal_gained", "signal_lost", "dropout"}
    assert set(truth.loc["signal_gained", "subject"]) == {"webinar_attend", "content_download"}
    assert {"demo_request", "pricing_page_view"} <= set(truth.loc["signal_lost", "subject"])
    assert (truth["scenario"] == "drift").all() and (pd.to_datetime(truth["change_date"]) == pd.Timestamp(CHANGE)).all()
    assert truth.loc["conversion", "factor"] == 0.5 and truth.loc["dropout", "factor"] == 2.0
    assert (truth.loc["signal_lost", "factor"] == 0).all() and (truth.loc["signal_gained", "factor"] > 0).all()


@pytest.mark.parametrize("change", [date(2020, 1, 1), date(2026, 1, 5)])
def test_a_change_date_outside_the_crm_is_an_error(change: date) -> None:
    with pytest.raises(InvalidInput, match="must lie inside the CRM's period"):
        SimulationConfig(end=END, scenario="drift", change_date=change)


def test_cli_bad_change_date_is_a_one_line_error(tmp_path: Path) -> None:
    result = run_leadval("generate", "--db", f"sqlite:///{tmp_path / 'crm.db'}", "--leads", "50", "--end",
                         "2025-12-31", "--scenario", "drift", "--change-date", "2019-05-01", check=False)
    assert result.returncode != 0
    message = result.stderr.strip()
    assert "\n" not in message and "must lie inside the CRM's period" in message
