"""The RFM summary does not depend on the orders' row order, id type or date range (each takes its own code path)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.rfm import calibration_and_holdout, daily_purchases, rfm_summary

END = "2024-12-31"


def _orders(order: str, ids: str, seed: int = 0) -> pd.DataFrame:
    """2,000 orders of 150 customers over two years in the given row order; whole amounts, so sums are exact.

    ``grouped``: each customer's orders together, customers and their orders in random order.
    """
    rng = np.random.default_rng(seed)
    customer = rng.integers(0, 150, 2000)
    stamp = pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 2 * 365 * 24 * 60, 2000), unit="min")
    frame = pd.DataFrame({"customer_id": customer, "ordered_at": stamp, "amount": rng.integers(1, 500, 2000) * 1.0})
    if ids == "str":
        frame["customer_id"] = pd.array([f"c{c:03d}" for c in customer], dtype="str")
    if order == "sorted":
        frame = frame.sort_values(["customer_id", "ordered_at"])
    elif order == "grouped":
        frame = frame.iloc[np.lexsort((rng.random(2000), rng.permutation(150)[customer]))]
    elif order == "by_time":
        frame = frame.sort_values("ordered_at")
    return frame.reset_index(drop=True)


def _reference(tx: pd.DataFrame, end: str) -> pd.DataFrame:
    """The summary by pandas group-bys, for comparison."""
    day = tx["ordered_at"].to_numpy().astype("datetime64[D]").astype(np.int64)
    end_day = int(np.datetime64(end, "D").astype(np.int64))
    orders = pd.DataFrame({"customer_id": tx["customer_id"].to_numpy(), "day": day, "amount": tx["amount"]})
    kept = orders[day <= end_day]
    days = kept.groupby(["customer_id", "day"], sort=True)["amount"].sum().reset_index()
    per = days.groupby("customer_id", sort=True)
    frequency = per.size().to_numpy() - 1
    first = per["day"].min().to_numpy()
    spend = per["amount"].sum().to_numpy() - per["amount"].first().to_numpy()
    return pd.DataFrame({
        "customer_id": per.size().index.to_numpy(),
        "frequency": frequency,
        "recency": (per["day"].max().to_numpy() - first) * 1.0,
        "T": (end_day - first) * 1.0,
        "monetary_value": np.where(frequency > 0, spend / np.maximum(frequency, 1), 0.0),
    })


def _assert_same_values(rfm: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert rfm["customer_id"].tolist() == expected["customer_id"].tolist()
    for column in ["frequency", "recency", "T", "monetary_value"]:
        np.testing.assert_array_equal(rfm[column].to_numpy(), expected[column].to_numpy(), err_msg=column)


@pytest.mark.parametrize("ids", ["str", "int"])
@pytest.mark.parametrize("order", ["sorted", "grouped", "shuffled", "by_time"])
def test_summary_is_the_same_in_any_row_order(order: str, ids: str) -> None:
    tx = _orders(order, ids)
    _assert_same_values(rfm_summary(tx, "2024-10-31"), _reference(tx, "2024-10-31"))
    baseline = _orders("shuffled", ids)
    pd.testing.assert_frame_equal(calibration_and_holdout(tx, "2024-06-30", END),
                                  calibration_and_holdout(baseline, "2024-06-30", END))
    pd.testing.assert_frame_equal(daily_purchases(tx, END), daily_purchases(baseline, END))


def test_dates_too_far_apart_to_pack_in_one_key_are_still_ordered() -> None:
    """Second-resolution dates millions of years apart: day, customer and row need more than 63 bits."""
    rng = np.random.default_rng(1)
    days = rng.integers(-(2**46), 2**46, 1500)
    days[:700] = rng.integers(19_700, 19_800, 700)
    tx = pd.DataFrame({
        "customer_id": [f"c{c:03d}" for c in rng.integers(0, 300, 1500)],
        "ordered_at": pd.Series((days * 86_400).astype("datetime64[s]")),
        "amount": rng.integers(1, 500, 1500) * 1.0,
    })
    _assert_same_values(rfm_summary(tx, END), _reference(tx, END))
