"""Engagement time on a small hand-made CRM whose answers are worked out by hand below."""

from __future__ import annotations

import dataclasses
import math
from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.kpi.engagement import ENGAGEMENT_TIME_DEFINITION, NO_CONTENT, EngagementTime, engagement_time
from features.kpi.tables import kpi_tables, report_window

T = pd.Timestamp
LEADS = pd.DataFrame(
    [("L1", T("2024-12-01"), "paid_search", pd.NaT), ("L2", T("2024-12-02"), "direct", pd.NaT),
     ("L3", T("2024-12-03"), "email", pd.NaT)],
    columns=["lead_id", "created_at", "source_channel", "converted_at"],
)
ACTIVITIES = [
    # L1: a 5-minute session holding two page views (the last one exactly at its end), a page view hours later,
    # and a second session the next day; the idle time in between is not engagement.
    ("A01", "L1", "2025-01-05 10:00:00", "web_session", "/", 300.0),
    ("A02", "L1", "2025-01-05 10:01:00", "page_view", "/product", 60.0),
    ("A03", "L1", "2025-01-05 10:05:00", "pricing_page_view", "/pricing", 40.0),
    ("A04", "L1", "2025-01-05 14:00:00", "page_view", "/blog", 30.0),
    ("A05", "L1", "2025-01-06 10:00:00", "web_session", "/docs", 120.0),
    ("A06", "L1", "2025-01-07 09:00:00", "email_open", "em-1", None),
    # L2: a webinar (the registration has no time), and a page view while L1 (not L2) is in a session.
    ("A07", "L2", "2025-01-10 15:00:00", "webinar_register", "webinar-1", None),
    ("A08", "L2", "2025-01-10 16:00:00", "webinar_attend", "webinar-1", 1800.0),
    ("A09", "L2", "2025-01-05 10:01:00", "page_view", "/product", 20.0),
    # L3: a session before the window holding a page view inside the window, and a session after it.
    ("A10", "L3", "2024-12-31 23:58:00", "web_session", "/", 600.0),
    ("A11", "L3", "2025-01-01 00:02:00", "page_view", "/product", 50.0),
    ("A12", "L3", "2025-02-01 08:00:00", "web_session", "/", 100.0),
]
WINDOW_ARGS = (date(2025, 1, 1), date(2025, 1, 31))


def activities() -> pd.DataFrame:
    frame = pd.DataFrame(ACTIVITIES, columns=["activity_id", "lead_id", "occurred_at", "activity_type", "content_id",
                                              "duration_seconds"])
    frame["occurred_at"] = pd.to_datetime(frame["occurred_at"])
    return frame


def measured(frame: pd.DataFrame | None = None) -> EngagementTime:
    crm = kpi_tables(LEADS, activities() if frame is None else frame)
    return engagement_time(crm, report_window(crm, *WINDOW_ARGS))


@pytest.fixture
def engagement() -> EngagementTime:
    return measured()


def test_page_views_inside_a_session_are_not_counted_twice(engagement: EngagementTime) -> None:
    totals = engagement.totals
    assert totals["engagement_time_sessions"] == 2  # A01, A05; A10 and A12 are outside the window
    assert totals["engagement_time_session_seconds"] == 300 + 120
    assert totals["engagement_time_page_views_in_sessions"] == 3  # A02, A03 (at the session's end), A11
    assert totals["engagement_time_page_views_outside_sessions"] == 2  # A04 after the session, A09 another lead's
    assert totals["engagement_time_page_view_seconds"] == 30 + 20
    assert totals["engagement_time_per_session_seconds"] == pytest.approx(210.0)


def test_webinar_attendance_counts_and_registration_does_not(engagement: EngagementTime) -> None:
    assert engagement.totals["engagement_time_webinars"] == 1
    assert engagement.totals["engagement_time_webinar_seconds"] == 1800
    assert engagement.by_content.set_index("content_id").loc["webinar-1", "engagement_seconds"] == 1800


def test_idle_gaps_are_not_counted(engagement: EngagementTime) -> None:
    first = engagement.by_lead.set_index("lead_id").loc["L1"]
    assert first["engagement_seconds"] == 300 + 30 + 120  # not the ~24 hours from the first to the last hit
    assert engagement.totals["engagement_time_seconds"] == 300 + 120 + 1800 + 30 + 20
    assert engagement.totals["engagement_time_engaged_leads"] == 2  # L3 did nothing timed in the window
    assert engagement.totals["engagement_time_per_engaged_lead_seconds"] == pytest.approx(2270 / 2)
    assert "dwell time" in ENGAGEMENT_TIME_DEFINITION and "idle" in ENGAGEMENT_TIME_DEFINITION


def test_channel_content_and_lead_sums_equal_the_total(engagement: EngagementTime) -> None:
    total = engagement.totals["engagement_time_seconds"]
    channels = engagement.by_channel.set_index("channel")["engagement_seconds"]
    assert channels.to_dict() == {"direct": 1820.0, "paid_search": 450.0}  # the leads' source channels
    contents = engagement.by_content.set_index("content_id")["engagement_seconds"]
    assert contents.to_dict() == {"webinar-1": 1800.0, "/": 300.0, "/docs": 120.0, "/blog": 30.0, "/product": 20.0}
    for table in (engagement.by_channel, engagement.by_content, engagement.by_lead):
        assert table["engagement_seconds"].sum() == pytest.approx(total)
        assert table["sessions"].sum() == engagement.totals["engagement_time_sessions"]
    assert list(engagement.by_channel["channel"]) == ["direct", "paid_search"]  # most engagement first
    assert engagement.warnings == ()


def test_missing_duration_and_content_columns_give_nan_not_errors() -> None:
    crm = kpi_tables(LEADS, activities())
    bare = dataclasses.replace(crm, activities=crm.activities.drop(columns=["duration_seconds", "content_id"]))
    result = engagement_time(bare, report_window(crm, *WINDOW_ARGS))
    assert math.isnan(result.totals["engagement_time_seconds"])
    assert math.isnan(result.totals["engagement_time_per_engaged_lead_seconds"])
    assert result.totals["engagement_time_sessions"] == 2
    assert result.totals["engagement_time_engaged_leads"] == 0
    assert list(result.by_content["content_id"]) == [NO_CONTENT]
    assert "unknown" in result.warnings[0]


def test_a_session_without_duration_holds_no_page_views() -> None:
    frame = activities()
    frame.loc[frame["activity_id"] == "A01", "duration_seconds"] = np.nan
    result = measured(frame)
    assert result.totals["engagement_time_page_views_outside_sessions"] == 4  # A02, A03 now count on their own
    assert result.totals["engagement_time_seconds"] == 120 + 1800 + 60 + 40 + 30 + 20
    assert result.totals["engagement_time_unmeasured"] == 1
    assert "1 of 7" in result.warnings[0]


def test_no_activities_give_nan_time_and_empty_tables() -> None:
    crm = kpi_tables(LEADS)
    result = engagement_time(crm, report_window(crm, *WINDOW_ARGS))
    assert math.isnan(result.totals["engagement_time_seconds"])
    assert result.totals["engagement_time_sessions"] == 0
    assert result.by_channel.empty and result.by_content.empty and result.by_lead.empty
    assert all(key.startswith("engagement_time_") for key in result.totals)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["L1", "L2", "L3"]), st.integers(0, 20_000),
                          st.sampled_from(["web_session", "page_view", "webinar_attend", "email_open"]),
                          st.integers(0, 900)), min_size=1, max_size=30))
def test_engagement_never_exceeds_the_recorded_durations_and_sums_by_scope(events: list[tuple]) -> None:
    frame = pd.DataFrame({
        "activity_id": [f"A{k}" for k in range(len(events))],
        "lead_id": [e[0] for e in events],
        "occurred_at": [T("2025-01-10") + pd.Timedelta(seconds=e[1]) for e in events],
        "activity_type": [e[2] for e in events],
        "content_id": "c",
        "duration_seconds": [float(e[3]) for e in events],
    })
    result = measured(frame)
    timed = frame[frame["activity_type"] != "email_open"]["duration_seconds"].sum()
    total = result.totals["engagement_time_seconds"]
    assert math.isnan(total) or total <= timed
    if not math.isnan(total):
        assert result.by_channel["engagement_seconds"].sum() == pytest.approx(total)
        assert result.by_lead["engagement_seconds"].sum() == pytest.approx(total)
