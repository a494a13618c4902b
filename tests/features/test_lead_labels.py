"""Labels within the horizon, stacked snapshots, and snapshot plans whose splits never overlap in time."""

from __future__ import annotations

import pandas as pd
import pytest

from features.errors import InvalidInput
from features.lead_features import PROFILE_FEATURES
from features.lead_labels import conversion_labels, open_leads, snapshot_plan, training_snapshots

AS_OF = pd.Timestamp("2025-03-01")


def crm_leads() -> pd.DataFrame:
    rows = [
        ("before", "2025-01-01", "2025-02-01"),   # converted before as_of: excluded
        ("at", "2025-01-01", "2025-03-01"),       # converted exactly at as_of: excluded
        ("inside", "2025-01-01", "2025-05-30"),   # within 90 days: 1
        ("edge", "2025-01-01", "2025-05-30 00:00"),  # as_of + 90 days exactly: 1
        ("outside", "2025-01-01", "2025-06-15"),  # after the horizon: 0
        ("open", "2025-02-01", None),             # never: 0
        ("future", "2025-04-01", "2025-04-10"),   # created after as_of: excluded
    ]
    return pd.DataFrame([{"lead_id": i, "created_at": pd.Timestamp(c), "converted_at": pd.Timestamp(v) if v else pd.NaT,
                          **dict.fromkeys(PROFILE_FEATURES, "x")} for i, c, v in rows])


def test_labels_count_conversions_inside_the_horizon_only() -> None:
    labels = conversion_labels(crm_leads(), AS_OF, horizon_days=90).set_index("lead_id")["converted"]
    assert labels.to_dict() == {"inside": 1, "edge": 1, "outside": 0, "open": 0}
    assert list(open_leads(crm_leads(), AS_OF)["lead_id"]) == ["inside", "edge", "outside", "open"]
    with pytest.raises(InvalidInput, match="horizon_days"):
        conversion_labels(crm_leads(), AS_OF, horizon_days=0)


def test_snapshots_stack_open_leads_with_their_label() -> None:
    activities = pd.DataFrame({"lead_id": ["inside"], "occurred_at": [pd.Timestamp("2025-02-20")],
                               "activity_type": ["demo_request"], "duration_seconds": [None]})
    stacked = training_snapshots(crm_leads(), activities, ["2025-03-01", "2025-01-15"], horizon_days=90)
    first = stacked[stacked["as_of"] == pd.Timestamp("2025-01-15")]
    assert set(first["lead_id"]) == {"before", "at", "inside", "edge", "outside"}
    assert first.set_index("lead_id")["converted"].to_dict() == {"before": 1, "at": 1, "inside": 0, "edge": 0,
                                                                 "outside": 0}
    second = stacked[stacked["as_of"] == AS_OF].set_index("lead_id")
    assert second["converted"].to_dict() == {"inside": 1, "edge": 1, "outside": 0, "open": 0}
    assert second.loc["inside", "demo_request_30d"] == 1 and first["demo_request_30d"].sum() == 0
    assert stacked["as_of"].is_monotonic_increasing


def test_plan_keeps_each_split_a_horizon_after_the_previous_one() -> None:
    plan = snapshot_plan("2024-01-01", "2025-12-31", horizon_days=90, every_days=30, valid_snapshots=2,
                         test_snapshots=2)
    assert plan.test[-1] == pd.Timestamp("2025-12-31") - pd.Timedelta(days=90)
    assert plan.valid[-1] + pd.Timedelta(days=90) <= plan.test[0]
    assert plan.train[-1] + pd.Timedelta(days=90) <= plan.valid[0]
    assert plan.train[0] >= pd.Timestamp("2024-01-31")
    assert len(plan.valid) == 2 and len(plan.test) == 2
    every = {b - a for split in (plan.train, plan.valid, plan.test) for a, b in zip(split, split[1:])}
    assert every == {pd.Timedelta(days=30)}


def test_too_short_a_history_is_a_clear_error() -> None:
    with pytest.raises(InvalidInput, match="needs at least"):
        snapshot_plan("2025-01-01", "2025-08-01", horizon_days=90)
