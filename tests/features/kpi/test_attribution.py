"""Attribution methods on paths whose credits are worked out by hand."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.errors import InvalidInput
from features.kpi.attribution import (
    METHODS,
    attribution_table,
    first_touch,
    last_touch,
    linear,
    markov,
    paths_frame,
    removal_effects,
    touchpoints,
)
from features.kpi.definitions import TOUCH_CHANNELS
from features.kpi.metrics import kpi_table
from features.kpi.tables import report_window
from tests.features.kpi.test_metrics import hand_made_crm


def test_rule_based_methods_on_three_paths() -> None:
    frame = paths_frame([["a", "b", "c"], ["a"], ["b", "c"]])
    assert first_touch(frame).to_dict() == {"a": 2.0, "b": 1.0}
    assert last_touch(frame).to_dict() == {"a": 1.0, "c": 2.0}
    assert linear(frame).to_dict() == pytest.approx({"a": 1 / 3 + 1, "b": 1 / 3 + 1 / 2, "c": 1 / 3 + 1 / 2})


def test_rule_based_methods_ignore_paths_that_did_not_convert() -> None:
    frame = paths_frame([["a", "b"], ["b"]], converted=[True, False])
    assert first_touch(frame).to_dict() == {"a": 1.0}
    assert linear(frame).to_dict() == {"a": 0.5, "b": 0.5}


def test_markov_removal_effect_known_answer() -> None:
    # start->A 2/3, start->B 1/3; A->conv 1/2, A->B 1/2; B->conv 1/2, B->null 1/2.
    # P(conv) = 2/3 * (1/2 + 1/2 * 1/2) + 1/3 * 1/2 = 2/3.
    # Without A: 1/3 * 1/2 = 1/6 -> effect 1 - (1/6)/(2/3) = 3/4. Without B: 2/3 * 1/2 = 1/3 -> effect 1/2.
    frame = paths_frame([["A"], ["A", "B"], ["B"]], converted=[True, True, False])
    assert removal_effects(frame).to_dict() == pytest.approx({"A": 3 / 4, "B": 1 / 2})
    # Two conversions shared 3/4 : 1/2.
    assert markov(frame).to_dict() == pytest.approx({"A": 2 * 3 / 5, "B": 2 * 2 / 5})


def test_markov_with_a_loop_back() -> None:
    # start->A 1/2, start->B 1/2; A->B 1/2, A->conv 1/2; B->A 1/2, B->null 1/2.
    # x_A = 1/2 + 1/2 x_B, x_B = 1/2 x_A -> x_A = 2/3, x_B = 1/3; P(conv) = 1/2 * 2/3 + 1/2 * 1/3 = 1/2.
    # Without A: 0 -> effect 1. Without B: 1/2 * 1/2 = 1/4 -> effect 1 - (1/4)/(1/2) = 1/2.
    frame = paths_frame([["A", "B", "A"], ["B"]], converted=[True, False])
    assert removal_effects(frame).to_dict() == pytest.approx({"A": 1.0, "B": 1 / 2})


def test_table_puts_methods_side_by_side_and_each_adds_up() -> None:
    frame = paths_frame([["a", "b", "c"], ["a"], ["b", "c"], ["c"]], converted=[True, True, True, False])
    table = attribution_table(frame)
    assert list(table.columns) == ["channel", *METHODS, "removal_effect", *(f"{m}_share" for m in METHODS)]
    for method in METHODS:
        assert table[method].sum() == pytest.approx(3.0)
    assert table["channel"].iloc[0] == "a"  # most linear credit first


def test_touchpoints_count_on_the_leads_source_channels() -> None:
    crm = hand_made_crm()
    tp = touchpoints(crm.leads, crm.activities, pd.Timestamp("2025-01-01"), pd.Timestamp("2025-03-01"))
    paths = tp.groupby("lead_id")["channel"].apply(list).to_dict()
    # L1: source, web session + page view and a download (web: its own source channel), sent email (no touch),
    # click (email); the page view after its conversion is not on the path.
    assert paths["L1"] == ["paid_search", "email", "paid_search"]
    # Without paid_social or events in the CRM, social and event touches count on the lead's own source channel.
    assert paths["L4"] == ["paid_search"]
    assert paths["L5"] == ["email"]
    assert paths["L7"] == ["organic_search"]  # its only activity falls after the window
    assert set(tp["channel"]) == {"paid_search", "email", "organic_search"}  # no web, social or event
    converted = tp.groupby("lead_id")["converted"].first()
    assert sorted(converted[converted].index) == ["L1", "L4", "L5"]


def test_touch_channels_map_onto_the_kpi_tables_channels() -> None:
    crm = hand_made_crm()
    channels = {"paid_search", "email", "organic_search", "direct", "paid_social", "events"}
    tp = touchpoints(crm.leads, crm.activities, pd.Timestamp("2025-01-01"), pd.Timestamp("2025-03-01"),
                     channels=channels)
    paths = tp.groupby("lead_id")["channel"].apply(list).to_dict()
    assert paths["L4"] == ["paid_search", "paid_social"]  # social -> paid_social
    assert paths["L5"] == ["email", "events", "email"]  # event -> events, web -> its own source (email)
    assert set(tp["channel"]) <= channels
    assert set(TOUCH_CHANNELS) == {"web", "email", "event", "social"}


def test_every_method_credits_the_kpi_tables_conversions_on_its_channels() -> None:
    """First, last, linear and Markov all credit the 3 converted leads, 100% each, on the KPI table's channels;
    first touch gives each channel exactly its conversions of the KPI table."""
    crm = hand_made_crm()
    window = report_window(crm, date(2025, 1, 1), date(2025, 2, 28))
    kpis = kpi_table(crm, window, "channel").set_index("channel")
    tp = touchpoints(crm.leads, crm.activities, window.start, window.end, channels=set(kpis.index))
    table = attribution_table(tp).set_index("channel")
    assert set(table.index) <= set(kpis.index)
    for method in METHODS:
        assert table[method].sum() == pytest.approx(kpis["conversions"].sum()) == pytest.approx(3.0)
        assert table[f"{method}_share"].sum() == pytest.approx(1.0)
    first = table["first_touch"].reindex(kpis.index, fill_value=0.0)
    pd.testing.assert_series_equal(first, kpis["conversions"], check_names=False)
    assert table.loc["paid_search", "last_touch"] == 2 and table.loc["email", "last_touch"] == 1
    assert table.loc["paid_search", "linear"] == pytest.approx(2 / 3 + 1)  # L1 ps-email-ps, L4 ps
    assert table.loc["email", "linear"] == pytest.approx(1 / 3 + 1)


def test_missing_columns_are_named() -> None:
    with pytest.raises(InvalidInput, match="touchpoints: missing column.*converted"):
        first_touch(pd.DataFrame({"lead_id": ["x"], "position": [0], "channel": ["a"]}))


paths = st.lists(st.lists(st.sampled_from("abcd"), min_size=1, max_size=5), min_size=1, max_size=12)


@given(paths, st.data())
@settings(max_examples=30, deadline=None)
def test_every_method_credits_exactly_the_conversions(paths: list[list[str]], data: st.DataObject) -> None:
    flags = data.draw(st.lists(st.booleans(), min_size=len(paths), max_size=len(paths)))
    table = attribution_table(paths_frame(paths, flags))
    for method in METHODS:
        assert table[method].sum() == pytest.approx(sum(flags))
        assert table[f"{method}_share"].sum() == pytest.approx(1.0 if any(flags) else 0.0)
        assert (table[method] >= -1e-12).all()
    assert ((table["removal_effect"] >= -1e-9) & (table["removal_effect"] <= 1 + 1e-9)).all()
