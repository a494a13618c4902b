"""KPI arithmetic on a small hand-made CRM whose answers are worked out by hand below."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.crm import schema
from features.crm.rows import conform_frame
from features.crm.schema import ACTIVITY_TYPES
from features.errors import InvalidInput
from features.kpi.definitions import CONTENT_WEIGHTS, METRICS, SNAPSHOT_METRICS
from features.kpi.metrics import KPI_COLUMNS, content_influence, kpi_table, kpi_totals, scope_values
from features.kpi.tables import KpiTables, kpi_tables, period_starts, report_window

T = pd.Timestamp


def hand_made_frames() -> dict[str, pd.DataFrame]:
    """Seven leads on three source channels, four customers, six orders, spend on two channels.

    Window 2025-01-01 .. 2025-02-28. Paid search: L1-L4 (L1, L4 converted), email: L5 (converted), L6;
    organic_search: L7. C4 is a direct customer without a lead. O6 and the March spend fall after the window.
    """
    leads = pd.DataFrame(
        [
            ("L1", T("2025-01-05"), "paid_search", "spring", T("2025-01-20"), "C1"),
            ("L2", T("2025-01-10"), "paid_search", "spring", pd.NaT, None),
            ("L3", T("2025-01-15"), "paid_search", "spring", pd.NaT, None),
            ("L4", T("2025-02-03"), "paid_search", None, T("2025-02-10"), "C2"),
            ("L5", T("2025-01-07"), "email", "newsletter", T("2025-02-01"), "C3"),
            ("L6", T("2025-02-10"), "email", "newsletter", pd.NaT, None),
            ("L7", T("2025-02-12"), "organic_search", None, pd.NaT, None),
        ],
        columns=["lead_id", "created_at", "source_channel", "campaign", "converted_at", "customer_id"],
    )
    customers = pd.DataFrame(
        [
            ("C1", "L1", T("2025-01-20"), "paid_search"),
            ("C2", "L4", T("2025-02-10"), None),
            ("C3", "L5", T("2025-02-01"), "email"),
            ("C4", None, T("2025-02-15"), "direct"),
        ],
        columns=["customer_id", "lead_id", "created_at", "acquisition_channel"],
    )
    orders = pd.DataFrame(
        [
            ("O1", "C1", T("2025-01-20"), 100.0),
            ("O2", "C1", T("2025-02-20"), 50.0),
            ("O3", "C2", T("2025-02-10"), 200.0),
            ("O4", "C3", T("2025-02-01"), 80.0),
            ("O5", "C4", T("2025-02-15"), 30.0),
            ("O6", "C1", T("2025-03-05"), 1000.0),
        ],
        columns=["order_id", "customer_id", "ordered_at", "amount"],
    )
    spend = pd.DataFrame(
        [
            (date(2025, 1, 1), "paid_search", "spring", 150.0, 1000, 50),
            (date(2025, 2, 1), "paid_search", "spring", 150.0, 1000, 30),
            (date(2025, 1, 1), "email", "newsletter", 40.0, 500, 0),
            (date(2025, 3, 1), "paid_search", "spring", 999.0, 9999, 999),
        ],
        columns=["date", "channel", "campaign", "spend", "impressions", "clicks"],
    )
    acts = [
        ("A01", "L1", "2025-01-06 10:00", "web_session", "web", None),
        ("A02", "L1", "2025-01-06 10:01", "page_view", "web", "blog-1"),
        ("A03", "L1", "2025-01-08", "email_sent", "email", "em-1"),
        ("A04", "L1", "2025-01-09", "email_click", "email", "em-1"),
        ("A05", "L1", "2025-01-10", "content_download", "web", "ebook"),
        ("A06", "L2", "2025-01-11 09:00", "web_session", "web", None),
        ("A07", "L2", "2025-01-11 09:05", "form_submit", "web", "newsletter"),
        ("A08", "L2", "2025-01-12", "email_sent", "email", "em-1"),
        ("A09", "L3", "2025-01-16", "email_sent", "email", "em-1"),
        ("A10", "L3", "2025-01-17", "email_open", "email", "em-1"),
        ("A11", "L3", "2025-01-18", "social_engagement", "social", "post-1"),
        ("A12", "L5", "2025-01-08", "webinar_register", "event", "web-1"),
        ("A13", "L5", "2025-01-09", "web_session", "web", None),
        ("A14", "L5", "2025-01-20", "email_sent", "email", "em-2"),
        ("A15", "L5", "2025-01-21", "email_click", "email", "em-2"),
        ("A16", "L6", "2025-02-11", "web_session", "web", None),
        ("A17", "L4", "2025-02-04", "social_engagement", "social", "post-1"),
        ("A18", "L1", "2025-01-25", "page_view", "web", "blog-1"),
        ("A19", "L7", "2025-03-02", "web_session", "web", None),
    ]
    activities = pd.DataFrame(acts, columns=["activity_id", "lead_id", "occurred_at", "activity_type", "channel",
                                             "content_id"])
    activities["occurred_at"] = pd.to_datetime(activities["occurred_at"], format="ISO8601")
    customer_scores = pd.DataFrame(
        [("C1", 2.0, 0.9, 150.0, 300.0, "champions"), ("C2", 0.5, 0.5, 200.0, 100.0, "promising"),
         ("C3", 1.0, 0.8, 60.0, 60.0, "loyal")],
        columns=["customer_id", "expected_purchases", "p_alive", "expected_order_value", "clv", "segment"],
    ).assign(scored_at=T("2025-02-28 06:00"))
    return {"leads": leads, "activities": activities, "customers": customers, "orders": orders,
            "marketing_spend": spend, "customer_scores": customer_scores}


def hand_made_crm() -> KpiTables:
    return kpi_tables(**hand_made_frames())


WINDOW_ARGS = (date(2025, 1, 1), date(2025, 2, 28))


@pytest.fixture
def crm() -> KpiTables:
    return hand_made_crm()


@pytest.fixture
def channels(crm: KpiTables) -> pd.DataFrame:
    return kpi_table(crm, report_window(crm, *WINDOW_ARGS), "channel").set_index("channel")


def test_window_covers_both_days_and_defaults_to_the_data(crm: KpiTables) -> None:
    window = report_window(crm, *WINDOW_ARGS)
    assert (window.start, window.end) == (T("2025-01-01"), T("2025-03-01"))
    assert window.label == "2025-01-01 to 2025-02-28"
    everything = report_window(crm)
    assert (everything.start, everything.end) == (T("2025-01-01"), T("2025-03-06"))
    with pytest.raises(InvalidInput, match="before --from"):
        report_window(crm, date(2025, 2, 1), date(2025, 1, 1))


def test_conversion_rate_cac_roi_and_clv_per_channel(channels: pd.DataFrame) -> None:
    paid = channels.loc["paid_search"]
    assert (paid["leads"], paid["conversions"]) == (4, 2)
    assert paid["conversion_rate"] == pytest.approx(0.5)
    assert paid["new_customers"] == 2  # C1, and C2 through its lead's source channel
    assert paid["spend"] == pytest.approx(300.0)  # March spend is outside the window
    assert paid["cac"] == pytest.approx(150.0)
    assert paid["attributed_revenue"] == pytest.approx(100 + 50 + 200)  # O6 is after the window
    assert paid["roi"] == pytest.approx((350 - 300) / 300)
    assert paid["historic_cltv"] == pytest.approx(175.0)
    assert paid["predicted_cltv"] == pytest.approx((300 + 100) / 2)
    assert paid["clv_to_cac"] == pytest.approx((350 + 400) / 300)
    assert paid["ad_ctr"] == pytest.approx(80 / 2000)
    email = channels.loc["email"]
    assert (email["leads"], email["conversions"], email["new_customers"]) == (2, 1, 1)
    assert email["cac"] == pytest.approx(40.0)
    assert email["roi"] == pytest.approx((80 - 40) / 40)
    assert email["clv_to_cac"] == pytest.approx((80 + 60) / 40)
    organic = channels.loc["organic_search"]
    assert (organic["leads"], organic["conversion_rate"], organic["spend"]) == (1, 0.0, 0.0)
    assert math.isnan(organic["cac"]) and math.isnan(organic["roi"])  # no customers, no spend: undefined
    direct = channels.loc["direct"]
    assert direct["new_customers"] == 1 and math.isnan(direct["conversion_rate"])
    assert math.isnan(direct["cac"])  # no recorded spend: not "free" customers, just unknown cost
    assert math.isnan(direct["predicted_cltv"])  # C4 has no score


def test_email_ctr_social_rate_and_engagement_index(channels: pd.DataFrame) -> None:
    paid = channels.loc["paid_search"]
    assert (paid["web_sessions"], paid["page_views"], paid["email_sent"]) == (2, 2, 3)
    assert paid["email_ctr"] == pytest.approx(1 / 3)
    assert paid["email_open_rate"] == pytest.approx(1 / 3)
    assert paid["engagement_index"] == pytest.approx(2 / 2)  # a download and a newsletter sign-up, two sessions
    assert paid["social_engagement_rate"] == pytest.approx(2 / 4)  # L3, L4 of the active L1-L4
    email = channels.loc["email"]
    assert email["email_ctr"] == pytest.approx(1.0)
    assert email["engagement_index"] == pytest.approx(1 / 2)
    assert email["social_engagement_rate"] == 0.0


def test_totals_add_up_over_channels(crm: KpiTables, channels: pd.DataFrame) -> None:
    totals = kpi_totals(crm, report_window(crm, *WINDOW_ARGS))
    assert totals["leads"] == 7 and totals["conversions"] == 3
    assert totals["conversion_rate"] == pytest.approx(3 / 7)
    # Paid CAC: spend on paid_search and email / their 3 new customers (C1, C2, C3); blended: / all 4 (with C4, direct)
    assert totals["paid_new_customers"] == 3 and totals["new_customers"] == 4
    assert totals["cac"] == totals["paid_cac"] == pytest.approx(340 / 3)
    assert totals["blended_cac"] == pytest.approx(340 / 4)
    assert totals["roi"] == pytest.approx((430 - 340) / 340)  # C4's 30 came through no paid channel
    assert totals["clv_to_cac"] == pytest.approx((430 + 300 + 100 + 60) / 340)
    assert totals["email_ctr"] == pytest.approx(2 / 4)
    assert totals["engagement_index"] == pytest.approx(3 / 4)
    assert totals["social_engagement_rate"] == pytest.approx(2 / 6)
    for column in ("leads", "conversions", "new_customers", "spend", "attributed_revenue", "web_sessions"):
        assert channels[column].sum() == pytest.approx(totals[column])


def test_monthly_trend_marks_complete_periods(crm: KpiTables) -> None:
    window = report_window(crm, *WINDOW_ARGS)
    monthly = kpi_table(crm, window, "all", "month")
    assert monthly["period"].tolist() == [T("2025-01-01"), T("2025-02-01")]
    assert monthly["leads"].tolist() == [4, 3]
    assert monthly["conversion_rate"].tolist() == pytest.approx([2 / 4, 1 / 3])
    assert monthly["complete"].tolist() == [True, True]
    partial = kpi_table(crm, report_window(crm, date(2025, 1, 1), date(2025, 2, 14)), "all", "month")
    assert partial["complete"].tolist() == [True, False]
    per_channel = kpi_table(crm, window, "channel", "month")
    organic = per_channel[per_channel["channel"] == "organic_search"]
    assert organic["leads"].tolist() == [0, 1]  # every channel gets every period, zero-filled


def test_campaign_and_segment_scopes(crm: KpiTables) -> None:
    window = report_window(crm, *WINDOW_ARGS)
    campaigns = kpi_table(crm, window, "campaign").set_index("campaign")
    assert campaigns.loc["spring", "leads"] == 3 and campaigns.loc["spring", "spend"] == 300
    assert campaigns.loc["(none)", "leads"] == 2
    segments = kpi_table(crm, window, "segment").set_index("segment")
    assert segments.loc["champions", "historic_cltv"] == pytest.approx(150.0)
    assert segments.loc["(unscored)", "new_customers"] == 1
    assert segments["leads"].isna().all()  # lead KPIs do not apply to customer segments
    known = scope_values(crm)
    assert {"paid_search", "email", "organic_search", "direct"} <= known["channel"]
    assert known["segment"] == {"champions", "promising", "loyal"}


def test_content_influence_weights(crm: KpiTables) -> None:
    table = content_influence(crm, report_window(crm, *WINDOW_ARGS)).set_index("content_id")
    assert table.loc["em-1", "weighted_interactions"] == pytest.approx(3 + 1)  # a click and an open; sends are 0
    assert table.loc["em-1", "interactions"] == 5 and table.loc["em-1", "leads"] == 3
    assert table.loc["em-1", "converted_leads"] == 1  # only L1 touched it and converted afterwards
    assert table.loc["ebook", "influence_index"] == pytest.approx(100 * 5 / 4)  # mean weighted = 28 / 7
    assert table.loc["post-1", "converted_leads"] == 1  # L4 engaged before converting, L3 is open
    assert set(CONTENT_WEIGHTS) == set(ACTIVITY_TYPES)


def test_bad_input_names_table_and_column() -> None:
    frames = hand_made_frames()
    with pytest.raises(InvalidInput, match=r"^leads: 1 problem;.*\n  - created_at: required column is missing"):
        kpi_tables(**{**frames, "leads": frames["leads"].drop(columns="created_at")})
    with pytest.raises(InvalidInput, match=r"^customers: .*\n  - customer_id: expected each customer_id once in the "
                                           r"table; 8 rows: row 0 'C1'"):
        kpi_tables(**{**frames, "customers": pd.concat([frames["customers"]] * 2)})
    bad = frames["activities"].assign(activity_type=["page_view"] * 18 + ["telepathy"])
    with pytest.raises(InvalidInput, match=r"^activities: .*\n  - activity_type: expected one of: web_session, .*; "
                                           r"1 row: row 18 'telepathy'$"):
        kpi_tables(**{**frames, "activities": bad})
    with pytest.raises(InvalidInput, match="no leads"):
        report_window(kpi_tables(frames["leads"].iloc[:0]))


def test_tables_are_checked_by_the_shared_schema_rules() -> None:
    """kpi_tables refuses what conform_frame refuses, with its message: one mechanism for rows wherever they enter."""
    frames = hand_made_frames()
    bad = {
        "activities": frames["activities"].assign(activity_type=["page_view"] * 18 + ["telepathy"]),
        "customers": pd.concat([frames["customers"]] * 2, ignore_index=True),
        "orders": frames["orders"].assign(amount=[1.0, -2.0, 3.0, 4.0, 5.0, 6.0],
                                          ordered_at=["2025-01-20", "soon", *frames["orders"]["ordered_at"][2:]]),
    }
    for name, frame in bad.items():
        with pytest.raises(InvalidInput) as direct:
            conform_frame(schema.table(name), frame)
        with pytest.raises(InvalidInput) as through_kpis:
            kpi_tables(**{**frames, name: frame})
        assert str(through_kpis.value) == str(direct.value)
    assert str(through_kpis.value).splitlines()[1:] == [
        "  - ordered_at: expected a date-time in ISO 8601 (e.g. 2025-03-31T14:05:00 or 2025-03-31T14:05:00+02:00); "
        "1 row: row 1 'soon'",
        "  - amount: expected a number >= 0; 1 row: row 1 '-2.0'",
    ]


def test_tables_are_typed_and_missing_columns_are_typed_nulls() -> None:
    frames = hand_made_frames()
    as_text = frames["leads"].astype({"created_at": "str"})
    spend = frames["marketing_spend"].drop(columns=["campaign", "impressions"])
    crm = kpi_tables(as_text, marketing_spend=spend)
    pd.testing.assert_series_equal(crm.leads["created_at"], hand_made_crm().leads["created_at"])
    assert crm.marketing_spend["date"].dtype == "datetime64[ns]" and crm.marketing_spend["spend"].dtype == "float64"
    assert crm.marketing_spend["campaign"].eq("").all() and crm.marketing_spend["clicks"].dtype == "int64"
    assert crm.marketing_spend["impressions"].isna().all() and crm.marketing_spend["impressions"].dtype == "float64"
    scores = crm.lead_scores
    assert list(scores.columns) == [c.name for c in schema.lead_scores.columns] and scores.empty
    assert scores["scored_at"].dtype == "datetime64[ns]" and scores["probability"].dtype == "float64"
    reasons = [[{"text": "Visited pricing 3 times"}], None]
    scored = pd.DataFrame({"lead_id": ["L1", "L2"], "score": [90, 10], "probability": [0.9, 0.1], "band": ["A", "D"],
                           "reasons": reasons})
    assert kpi_tables(frames["leads"], lead_scores=scored).lead_scores["reasons"].tolist() == reasons  # JSON as is


def test_every_metric_is_a_column_with_a_definition() -> None:
    assert set(METRICS) <= set(KPI_COLUMNS) | set(SNAPSHOT_METRICS)
    assert all(m.definition and m.label for m in METRICS.values())


def test_weekly_periods_cover_the_window(crm: KpiTables) -> None:
    window = report_window(crm, date(2025, 1, 1), date(2025, 1, 31))
    starts = period_starts(window, "week")
    assert starts[0] <= window.start and starts[-1] < window.end
    weekly = kpi_table(crm, window, "all", "week")
    assert weekly["leads"].sum() == 4


@st.composite
def random_crms(draw: st.DrawFn) -> KpiTables:
    rng = np.random.default_rng(draw(st.integers(0, 10_000)))
    n = draw(st.integers(1, 40))
    created = T("2025-01-01") + pd.to_timedelta(rng.integers(0, 90, n), unit="D")
    converts = rng.random(n) < 0.4
    converted_at = created + pd.to_timedelta(rng.integers(0, 60, n), unit="D")
    leads = pd.DataFrame({
        "lead_id": [f"L{i}" for i in range(n)],
        "created_at": created,
        "source_channel": rng.choice(["a", "b", "c"], n),
        "campaign": rng.choice(["x", "y", None], n),
        "converted_at": pd.Series(converted_at).where(converts),
        "customer_id": [f"C{i}" if c else None for i, c in enumerate(converts)],
    })
    won = leads[converts]
    customers = pd.DataFrame({"customer_id": won["customer_id"], "lead_id": won["lead_id"],
                              "created_at": won["converted_at"], "acquisition_channel": None})
    orders = pd.DataFrame({"order_id": [f"O{i}" for i in range(len(won))], "customer_id": won["customer_id"],
                           "ordered_at": won["converted_at"], "amount": rng.uniform(0, 500, len(won))})
    days = pd.date_range("2025-01-01", periods=90)
    spend = pd.DataFrame({"date": np.repeat(days, 2), "channel": ["a", "b"] * 90, "campaign": "",
                          "spend": rng.uniform(0, 20, 180), "impressions": 100, "clicks": rng.integers(0, 100, 180)})
    return kpi_tables(leads, None, customers, orders, spend)


@given(random_crms())
@settings(max_examples=12, deadline=None)
def test_rates_stay_in_range_and_channels_add_up(crm: KpiTables) -> None:
    window = report_window(crm)
    table = kpi_table(crm, window, "channel")
    totals = kpi_totals(crm, window)
    for rate in ("conversion_rate", "ad_ctr"):
        values = table[rate].dropna()
        assert ((values >= 0) & (values <= 1)).all()
    assert (table["roi"].dropna() >= -1).all()
    assert table["leads"].sum() == totals["leads"]
    assert table["spend"].sum() == pytest.approx(totals["spend"])
    monthly = kpi_table(crm, window, "all", "month")
    assert monthly["conversions"].sum() == totals["conversions"]
