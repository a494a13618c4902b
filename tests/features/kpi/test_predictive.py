"""Predictive KPIs: the score histogram's bins, when the scores are as of, and conversion by band from a backtest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.errors import InvalidInput
from features.kpi.predictive import SCORE_BINS, backtest_calibration, customer_list, score_distribution, scores_as_of

T = pd.Timestamp


def test_score_bins_fit_scores_1_to_99_and_count_older_0_and_100_at_the_ends() -> None:
    scores = [0, 1, 10, 11, 50, 90, 91, 99, 100]
    leads = pd.DataFrame({"lead_id": [f"L{i}" for i in range(len(scores))], "source_channel": "email"})
    table = score_distribution(leads, pd.DataFrame({"lead_id": leads["lead_id"], "score": scores}))
    counts = dict(zip(table["score_bin"], table["leads"]))
    assert list(counts) == ["1-10", "11-20", "21-30", "31-40", "41-50", "51-60", "61-70", "71-80", "81-90", "91-99"]
    assert (counts["1-10"], counts["11-20"], counts["41-50"], counts["81-90"], counts["91-99"]) == (3, 1, 1, 1, 3)
    assert sum(counts.values()) == len(scores) and SCORE_BINS[0] == 1


def test_scores_as_of_is_the_range_of_the_score_rows() -> None:
    scores = pd.DataFrame({"as_of": [T("2025-03-01"), None, T("2025-02-01")],
                           "scored_at": [T("2025-03-01 02:00"), T("2025-03-02 02:00"), T("2025-02-01 02:00")]})
    assert scores_as_of(scores) == (T("2025-02-01"), T("2025-03-02 02:00"))  # a row without as_of: when scored
    assert scores_as_of(scores.iloc[:0]) == (None, None)


def test_backtest_calibration_pools_the_as_of_dates_weighting_each_lead_once() -> None:
    bands = pd.DataFrame({
        "as_of": [T("2025-01-01")] * 4 + [T("2025-02-01")] * 4,
        "band": ["A", "B", "C", "D"] * 2,
        "leads": [10, 20, 0, 70, 30, 20, 10, 40],
        "conversions": [4, 2, 0, 1, 6, 0, 1, 0],
        "predicted_rate": [0.5, 0.1, np.nan, 0.01, 0.3, 0.1, 0.05, 0.01],
        "actual_rate": [0.4, 0.1, np.nan, 1 / 70, 0.2, 0.0, 0.1, 0.0],
    })
    table = backtest_calibration(bands).set_index("band")
    assert table["leads"].tolist() == [40, 40, 10, 110] and table["conversions"].tolist() == [10, 2, 1, 1]
    assert table.loc["A", "predicted_rate"] == pytest.approx((10 * 0.5 + 30 * 0.3) / 40)
    assert table.loc["A", "actual_rate"] == pytest.approx(10 / 40)
    assert table.loc["C", "predicted_rate"] == pytest.approx(0.05) and table["as_ofs"].tolist() == [2, 2, 1, 2]
    empty = backtest_calibration(bands[bands["band"] != "B"]).set_index("band")
    assert empty.loc["B", "leads"] == 0 and np.isnan(empty.loc["B", "actual_rate"])
    assert backtest_calibration(pd.DataFrame()).empty


def test_customer_list_of_an_empty_segment_is_empty_but_a_typo_is_an_error() -> None:
    scores = pd.DataFrame({"customer_id": ["C1", "C2"], "segment": ["loyal", "lost"], "clv": [50.0, 1.0],
                           "p_alive": [0.9, 0.1]})
    orders = pd.DataFrame({"customer_id": ["C1"], "ordered_at": [T("2025-01-02")]})
    assert customer_list(scores, orders, "loyal")["customer_id"].tolist() == ["C1"]
    champions = customer_list(scores, orders, "champions")  # a segment of the CLV model, no one in it
    assert champions.empty
    assert list(champions.columns) == ["customer_id", "segment", "clv", "p_alive", "last_order_at"]
    with pytest.raises(InvalidInput, match=r"--segment 'champs' is unknown; segments with customers: lost, loyal"):
        customer_list(scores, orders, "champs")
