"""Brand awareness proxies on a small hand-made CRM whose answers are worked out by hand below."""

from __future__ import annotations

import math
from datetime import date

import pandas as pd
import pytest

from features.errors import InvalidInput
from features.kpi.awareness import BRAND_AWARENESS_DEFINITION, BRAND_PATTERN, TREND_COLUMNS, brand_awareness
from features.kpi.tables import KpiTables, kpi_tables, report_window

T = pd.Timestamp
WINDOW_ARGS = (date(2025, 1, 1), date(2025, 2, 28))
SPEND = pd.DataFrame(
    [
        (date(2025, 1, 3), "paid_search", "Brand_Core", 10.0, 900, 30),
        (date(2025, 1, 3), "paid_search", "generic", 10.0, 2000, 60),
        (date(2025, 1, 3), "organic_search", "", 1.0, 500, 10),
        (date(2025, 1, 3), "paid_social", "brand_video", 10.0, 5000, 20),  # a brand campaign, but not search
        (date(2025, 1, 3), "email", "news", 1.0, 800, 100),
        (date(2025, 2, 3), "paid_search", "Brand_Core", 10.0, 700, 20),
        (date(2025, 2, 3), "paid_search", "generic", 10.0, 2500, 80),
        (date(2025, 2, 3), "paid_social", "brand_video", 10.0, 7000, 15),
        (date(2025, 3, 3), "paid_search", "Brand_Core", 10.0, 999, 999),  # after the window
    ],
    columns=["date", "channel", "campaign", "spend", "impressions", "clicks"],
)
LEADS = pd.DataFrame(
    [
        ("L1", T("2025-01-05"), "paid_search", "Brand_Core"),
        ("L2", T("2025-01-06"), "paid_search", "generic"),
        ("L3", T("2025-01-07"), "organic_search", None),
        ("L4", T("2025-01-08"), "direct", None),
        ("L5", T("2025-01-09"), "email", "news"),
        ("L6", T("2025-02-05"), "paid_search", "Brand_Core"),
        ("L7", T("2025-02-06"), "direct", None),
        ("L8", T("2025-02-07"), "direct", None),
        ("L9", T("2025-02-08"), "paid_social", "brand_video"),
        ("L10", T("2025-03-02"), "paid_search", "Brand_Core"),  # after the window
    ],
    columns=["lead_id", "created_at", "source_channel", "campaign"],
).assign(converted_at=pd.NaT)


@pytest.fixture
def crm() -> KpiTables:
    return kpi_tables(LEADS, marketing_spend=SPEND)


def test_branded_share_of_search_clicks_and_leads_with_the_default_pattern(crm: KpiTables) -> None:
    result = brand_awareness(crm, report_window(crm, *WINDOW_ARGS), "month")
    totals = result.totals
    assert BRAND_PATTERN == "brand" and result.brand_pattern == "brand"
    assert (totals["brand_search_clicks_branded"], totals["brand_search_clicks_total"]) == (50, 200)
    assert totals["brand_search_click_share"] == pytest.approx(0.25)  # organic clicks count as non-brand
    assert (totals["brand_search_leads_branded"], totals["brand_search_leads_total"]) == (2, 4)
    assert totals["brand_search_lead_share"] == pytest.approx(0.5)
    assert totals["brand_direct_lead_share"] == pytest.approx(3 / 9)
    assert totals["brand_social_reach_impressions"] == 12_000
    assert all(key.startswith("brand_") for key in totals)
    assert "proxies" in BRAND_AWARENESS_DEFINITION


def test_a_custom_pattern_picks_other_campaigns(crm: KpiTables) -> None:
    window = report_window(crm, *WINDOW_ARGS)
    generic = brand_awareness(crm, window, "month", brand_pattern="GENERIC")
    assert generic.totals["brand_search_click_share"] == pytest.approx(140 / 200)
    assert generic.totals["brand_search_lead_share"] == pytest.approx(1 / 4)
    anchored = brand_awareness(crm, window, "month", brand_pattern="^brand_")
    assert anchored.totals["brand_search_click_share"] == pytest.approx(0.25)
    nothing = brand_awareness(crm, window, "month", brand_pattern="acme")
    assert nothing.totals["brand_search_click_share"] == 0
    assert "matches the brand pattern 'acme'" in nothing.warnings[0]
    with pytest.raises(InvalidInput, match="not a regular expression"):
        brand_awareness(crm, window, "month", brand_pattern="(")


def test_trend_per_month_and_its_slope(crm: KpiTables) -> None:
    result = brand_awareness(crm, report_window(crm, *WINDOW_ARGS), "month")
    trend = result.trend.set_index("period")
    assert tuple(result.trend.columns) == TREND_COLUMNS
    assert list(trend.index) == [T("2025-01-01"), T("2025-02-01")] and trend["complete"].all()
    assert list(trend["search_click_share"]) == pytest.approx([0.3, 0.2])
    assert list(trend["search_lead_share"]) == pytest.approx([1 / 3, 1.0])
    assert list(trend["direct_lead_share"]) == pytest.approx([1 / 5, 2 / 4])
    assert list(trend["social_reach_impressions"]) == [5000, 7000]
    assert result.totals["brand_search_click_share_trend_per_period"] == pytest.approx(-0.1)
    assert result.totals["brand_social_reach_impressions_trend_per_period"] == pytest.approx(2000)


def test_weeks_and_quarters_cover_the_window(crm: KpiTables) -> None:
    window = report_window(crm, *WINDOW_ARGS)
    weeks = brand_awareness(crm, window, "week").trend
    assert len(weeks) == 9 and not weeks["complete"].iloc[0]  # 2024-12-30 .. 2025-02-24, first and last partial
    assert weeks["search_clicks_total"].sum() == 200
    quarter = brand_awareness(crm, window, "quarter").trend
    assert len(quarter) == 1 and not quarter["complete"].iloc[0]
    assert math.isnan(brand_awareness(crm, window, "quarter").totals["brand_search_click_share_trend_per_period"])
    with pytest.raises(InvalidInput, match="grain"):
        brand_awareness(crm, window, "fortnight")


def test_a_crm_without_search_or_social_data_gives_nan_not_errors() -> None:
    crm = kpi_tables(LEADS[LEADS["source_channel"] == "email"])
    result = brand_awareness(crm, report_window(crm, *WINDOW_ARGS), "month")
    for key in ("brand_search_click_share", "brand_search_lead_share", "brand_social_reach_impressions",
                "brand_search_click_share_trend_per_period", "brand_social_reach_impressions_trend_per_period"):
        assert math.isnan(result.totals[key]), key
    assert result.totals["brand_direct_lead_share"] == 0  # one lead, not direct
    assert result.warnings == ()
    empty = kpi_tables(LEADS.iloc[:0])
    nothing = brand_awareness(empty, report_window(empty, *WINDOW_ARGS), "month")
    assert math.isnan(nothing.totals["brand_direct_lead_share"])
    assert len(nothing.trend) == 2 and nothing.trend["search_click_share"].isna().all()
