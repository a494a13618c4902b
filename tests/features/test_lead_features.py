"""Point-in-time lead features: hand-checked values, and no leakage from anything after as_of."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.crm.schema import ACTIVITY_TYPES
from features.errors import InvalidInput
from features.lead_features import (
    BEHAVIOUR_FEATURES,
    LEAD_FEATURE_COLUMNS,
    PROFILE_FEATURES,
    as_of_timestamp,
    lead_features,
)

AS_OF = pd.Timestamp("2025-06-30 12:00")
PROFILE = {"source_channel": "paid_social", "campaign": None, "country": "DE", "industry": "software",
           "company_size": "51-200", "job_seniority": "vp", "email_domain_type": "business"}


def leads_frame(*rows: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame([{"lead_id": lead, "created_at": pd.Timestamp(created), **PROFILE, "converted_at": None}
                         for lead, created in rows])


def activities_frame(*rows: tuple) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["lead_id", "occurred_at", "activity_type", "duration_seconds"]).astype(
        {"occurred_at": "datetime64[us]", "duration_seconds": "float64"})


def test_hand_checked_values() -> None:
    leads = leads_frame(("L1", "2025-06-01 12:00"), ("L2", "2025-06-29 12:00"), ("L3", "2025-07-01"))
    activities = activities_frame(
        ("L1", AS_OF - pd.Timedelta(days=1), "pricing_page_view", 60.0),
        ("L1", AS_OF - pd.Timedelta(days=3), "pricing_page_view", 120.0),
        ("L1", AS_OF - pd.Timedelta(days=7), "pricing_page_view", None),  # exactly 7 days: not in the 7-day window
        ("L1", AS_OF - pd.Timedelta(days=20), "email_sent", None),
        ("L1", AS_OF - pd.Timedelta(days=19), "email_sent", None),
        ("L1", AS_OF - pd.Timedelta(days=18), "email_open", None),
        ("L1", AS_OF, "demo_request", None),  # at as_of: counts
        ("L1", AS_OF + pd.Timedelta(seconds=1), "demo_request", None),  # after: ignored
        ("L1", AS_OF - pd.Timedelta(days=2), "not_a_type", 999.0),  # unknown type: ignored
        ("L9", AS_OF - pd.Timedelta(days=2), "demo_request", None),  # unknown lead: ignored
    )
    features = lead_features(leads, activities, AS_OF).set_index("lead_id")
    assert list(features.reset_index().columns) == list(LEAD_FEATURE_COLUMNS)
    assert list(features.index) == ["L1", "L2"]  # L3 was created after as_of
    one = features.loc["L1"]
    assert (one["pricing_page_view_7d"], one["pricing_page_view_30d"], one["pricing_page_view_90d"]) == (2, 3, 3)
    assert one["days_since_last_pricing_page_view"] == pytest.approx(1.0)
    assert one["demo_request_7d"] == 1 and one["days_since_last_demo_request"] == 0
    assert one["email_open_rate"] == pytest.approx(0.5) and one["email_click_rate"] == 0
    assert one["engagement_minutes_7d"] == pytest.approx(3.0)
    assert one["days_since_created"] == pytest.approx(29.0)
    assert one["days_since_last_activity"] == 0  # emails sent by marketing are not the lead's activity
    assert one["active_days_30d"] == 5  # days 0, 1, 3, 7 and 18 before as_of (emails sent excluded)
    two = features.loc["L2"]
    assert np.isnan(two["days_since_last_activity"]) and np.isnan(two["email_open_rate"])
    assert two[[f"{t}_90d" for t in ACTIVITY_TYPES]].sum() == 0
    assert features["campaign"].isna().all() and (features["source_channel"] == "paid_social").all()
    assert all(features[c].dtype == "float64" for c in BEHAVIOUR_FEATURES)


def test_time_zones_and_strings_are_normalised_to_naive_utc() -> None:
    leads = leads_frame(("L1", "2025-06-01 12:00"))
    leads["created_at"] = leads["created_at"].dt.tz_localize("UTC").dt.tz_convert("Europe/Berlin")
    activities = activities_frame(("L1", AS_OF - pd.Timedelta(hours=1), "web_session", 30.0))
    activities["occurred_at"] = activities["occurred_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    aware = lead_features(leads, activities, AS_OF.tz_localize("UTC").tz_convert("US/Eastern"))
    assert aware.loc[0, "days_since_created"] == pytest.approx(29.0)
    assert aware.loc[0, "web_session_7d"] == 1
    assert as_of_timestamp("2025-06-30") == pd.Timestamp("2025-06-30")
    with pytest.raises(InvalidInput, match="as_of: 9999-01-01 is outside the dates leadval can compute with"):
        as_of_timestamp("9999-01-01")  # a clear error, not pandas' OutOfBoundsDatetime


def test_bad_input_names_the_field() -> None:
    leads = leads_frame(("L1", "2025-06-01"), ("L1", "2025-06-02"))
    with pytest.raises(InvalidInput, match="lead_id: duplicated"):
        lead_features(leads, activities_frame(), AS_OF)
    with pytest.raises(InvalidInput, match="leads: missing columns"):
        lead_features(leads.drop(columns="industry"), activities_frame(), AS_OF)
    bad_time = activities_frame(("L1", AS_OF, "web_session", 1.0)).astype({"occurred_at": object})
    bad_time.loc[0, "occurred_at"] = "yesterday"
    with pytest.raises(InvalidInput, match=r"activities.occurred_at: rows \[0\]"):
        lead_features(leads.iloc[:1], bad_time, AS_OF)
    with pytest.raises(InvalidInput, match="as_of"):
        lead_features(leads.iloc[:1], activities_frame(), "soon")


DAY_SECONDS = 86_400
START = AS_OF - pd.Timedelta(days=200)


@st.composite
def crm_and_future(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A small CRM up to as_of, and the same CRM with arbitrary events after as_of added or changed."""
    n_leads = draw(st.integers(1, 6))
    seconds = st.integers(0, 200 * DAY_SECONDS)
    created = [START + pd.Timedelta(seconds=draw(seconds)) for _ in range(n_leads)]
    leads = pd.DataFrame({"lead_id": [f"L{i}" for i in range(n_leads)], "created_at": created,
                          **{c: draw(st.lists(st.sampled_from(["a", "b", None]), min_size=n_leads,
                                              max_size=n_leads)) for c in PROFILE_FEATURES},
                          "converted_at": pd.NaT})
    n_events = draw(st.integers(0, 30))
    past = pd.DataFrame({
        "lead_id": draw(st.lists(st.sampled_from(list(leads["lead_id"])), min_size=n_events, max_size=n_events)),
        "occurred_at": [START + pd.Timedelta(seconds=draw(seconds)) for _ in range(n_events)],
        "activity_type": draw(st.lists(st.sampled_from(ACTIVITY_TYPES), min_size=n_events, max_size=n_events)),
        "duration_seconds": draw(st.lists(st.one_of(st.none(), st.floats(0, 3600)), min_size=n_events,
                                          max_size=n_events)),
    }).astype({"duration_seconds": "float64"})
    n_future = draw(st.integers(1, 20))
    later = st.integers(1, 400 * DAY_SECONDS)
    future = pd.DataFrame({
        "lead_id": draw(st.lists(st.sampled_from([*leads["lead_id"], "NEW"]), min_size=n_future,
                                 max_size=n_future)),
        "occurred_at": [AS_OF + pd.Timedelta(seconds=draw(later)) for _ in range(n_future)],
        "activity_type": draw(st.lists(st.sampled_from(ACTIVITY_TYPES), min_size=n_future, max_size=n_future)),
        "duration_seconds": draw(st.lists(st.floats(0, 3600), min_size=n_future, max_size=n_future)),
    })
    later_leads = leads.copy()
    converts = draw(st.lists(st.booleans(), min_size=n_leads, max_size=n_leads))
    later_leads["converted_at"] = [AS_OF + pd.Timedelta(seconds=draw(later)) if c else pd.NaT for c in converts]
    new_lead = leads.iloc[:1].assign(lead_id="NEW", created_at=AS_OF + pd.Timedelta(seconds=draw(later)))
    return leads, past, pd.concat([later_leads, new_lead], ignore_index=True), pd.concat([past, future],
                                                                                          ignore_index=True)


@given(crm_and_future())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_no_event_after_as_of_changes_any_feature(
    case: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    leads, past, later_leads, with_future = case
    now = lead_features(leads, past, AS_OF)
    seen_later = lead_features(later_leads, with_future.sample(frac=1.0, random_state=0), AS_OF)
    pd.testing.assert_frame_equal(now, seen_later, check_exact=True)


def test_events_before_as_of_do_change_features() -> None:
    leads = leads_frame(("L1", "2025-06-01"))
    before = lead_features(leads, activities_frame(), AS_OF)
    after = lead_features(leads, activities_frame(("L1", AS_OF - pd.Timedelta(days=2), "demo_request", None)), AS_OF)
    assert before.loc[0, "demo_request_7d"] == 0 and after.loc[0, "demo_request_7d"] == 1
