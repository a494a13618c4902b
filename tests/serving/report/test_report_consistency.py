"""One value per quantity on the page and in --json: converted leads against new customers, paid and blended CAC,
attribution on the channel table's channels, on the hand-made CRM whose answers are worked out by hand."""

from __future__ import annotations

import html
import re

import pytest

from features.kpi.attribution import METHODS
from features.kpi.tables import report_window
from serving.report.data import build_report, report_json
from serving.report.page import render_html, touch_mapping
from tests.features.kpi.test_metrics import WINDOW_ARGS, hand_made_crm


@pytest.fixture(scope="module")
def built() -> tuple[dict, str]:
    crm = hand_made_crm()
    report = build_report(crm, report_window(crm, *WINDOW_ARGS))
    text = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", render_html(report))))
    return report_json(report), text


def _tile(text: str, label: str) -> str:
    """The value and hint of a headline tile, as the page shows them."""
    headline = text[text.index(" Headline "):text.index(" Channels One row")]
    return headline[headline.index(f" {label} ") + len(label) + 2:][:120]


def test_paid_and_blended_cac_in_json_and_on_the_page(built: tuple[dict, str]) -> None:
    result, text = built
    totals = result["totals"]
    # 340 spent on paid_search (300) and email (40); their 3 new customers C1-C3, plus C4 from direct (no spend).
    assert (totals["new_customers"], totals["paid_new_customers"], totals["spend"]) == (4, 3, 340)
    assert totals["paid_cac"] == totals["cac"] == pytest.approx(340 / 3)
    assert totals["blended_cac"] == pytest.approx(340 / 4)
    channels = {c["channel"]: c for c in result["channels"]}
    assert channels["paid_search"]["cac"] == 150 and channels["email"]["cac"] == 40
    assert channels["direct"]["cac"] is None and channels["direct"]["new_customers"] == 1
    assert _tile(text, "Paid CAC").startswith("113.33 spend / the 3 new customers of channels with spend")
    assert _tile(text, "Blended CAC").startswith("85.00 spend / all 4 new customers")
    assert _tile(text, "Marketing ROI (paid)").startswith(f"{100 * (430 - 340) / 340:.1f}%")
    assert "CLV:CAC (paid)" in text


def test_converted_leads_and_new_customers_are_labelled_apart(built: tuple[dict, str]) -> None:
    result, text = built
    assert (result["totals"]["conversions"], result["totals"]["new_customers"]) == (3, 4)
    assert _tile(text, "Converted leads").startswith("3 of those leads became customers")
    assert _tile(text, "New customers (all)").startswith("4 acquired in the window, with or without a lead; 3 through")
    assert _tile(text, "Leads").startswith("7 created in the window Converted leads 3 ")
    assert "The 3 converted leads of the channel table" in text  # the attribution section counts the same 3


def test_attribution_credits_the_channel_tables_channels_and_conversions(built: tuple[dict, str]) -> None:
    result, text = built
    channels = {c["channel"]: c for c in result["channels"]}
    attribution = {a["channel"]: a for a in result["attribution"]}
    assert set(attribution) <= set(channels)
    assert not {"web", "event", "social"} & set(attribution)
    for method in METHODS:
        assert sum(a[method] for a in attribution.values()) == pytest.approx(result["totals"]["conversions"])
        assert sum(a[f"{method}_share"] for a in attribution.values()) == pytest.approx(1.0)
    for name, row in channels.items():  # first touch is the lead's source channel: the table's conversions
        assert attribution.get(name, {}).get("first_touch", 0.0) == row["conversions"]
    assert touch_mapping() == ("web \u2192 the lead's own source channel, email \u2192 email, event \u2192 events, "
                               "social \u2192 paid_social")
    glossary = text[text.index(" Glossary "):]
    assert touch_mapping() in glossary and "Blended CAC" in glossary and "Paid CAC" in glossary
