"""RFM summaries and calibration/holdout splits in the conventions of Fader, Hardie and lifetimes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lifetimes.utils import summary_data_from_transaction_data

from features.crm.schema import RFM_COLUMNS
from features.errors import InvalidInput
from features.rfm import calibration_and_holdout, daily_purchases, default_dates, rfm_summary


def _tx(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "ordered_at", "amount"])
    frame["ordered_at"] = pd.to_datetime(frame["ordered_at"], format="ISO8601")
    return frame


def test_summary_follows_fader_hardie_conventions() -> None:
    tx = _tx([
        ("a", "2024-01-01 09:00", 10.0),
        ("a", "2024-01-01 17:30", 5.0),   # same day: merged with the first purchase
        ("a", "2024-01-05", 20.0),
        ("a", "2024-01-11", 40.0),
        ("b", "2024-01-03", 7.0),
        ("c", "2024-01-02", 3.0),
        ("c", "2024-02-01", 9.0),         # after the observation end: ignored
    ])
    rfm = rfm_summary(tx, "2024-01-31")
    assert list(rfm.columns) == list(RFM_COLUMNS)
    rows = rfm.set_index("customer_id")
    assert rows.loc["a"].to_dict() == {"frequency": 2, "recency": 10.0, "T": 30.0, "monetary_value": 30.0}
    assert rows.loc["b"].to_dict() == {"frequency": 0, "recency": 0.0, "T": 28.0, "monetary_value": 0.0}
    assert rows.loc["c"].to_dict() == {"frequency": 0, "recency": 0.0, "T": 29.0, "monetary_value": 0.0}


def test_same_day_purchases_count_once_with_amounts_summed() -> None:
    tx = _tx([("a", "2024-01-01", 1.0), ("a", "2024-01-02 08:00", 2.0), ("a", "2024-01-02 20:00", 3.0)])
    row = rfm_summary(tx, "2024-01-10").iloc[0]
    assert row["frequency"] == 1
    assert row["monetary_value"] == 5.0


def test_weeks_are_fractional_days_over_seven() -> None:
    tx = _tx([("a", "2024-01-01", 1.0), ("a", "2024-01-11", 2.0)])
    days = rfm_summary(tx, "2024-01-31").iloc[0]
    weeks = rfm_summary(tx, "2024-01-31", time_unit="W").iloc[0]
    assert weeks["recency"] == pytest.approx(days["recency"] / 7)
    assert weeks["T"] == pytest.approx(30 / 7)


def test_customers_first_buying_after_the_end_are_left_out() -> None:
    tx = _tx([("a", "2024-01-01", 1.0), ("late", "2024-03-01", 2.0)])
    assert rfm_summary(tx, "2024-01-31")["customer_id"].tolist() == ["a"]


def test_calibration_and_holdout_split() -> None:
    tx = _tx([
        ("a", "2024-01-01", 10.0), ("a", "2024-01-20", 20.0),
        ("a", "2024-02-05", 30.0), ("a", "2024-02-05 18:00", 6.0), ("a", "2024-02-20", 12.0),
        ("a", "2024-04-01", 99.0),        # after the observation end
        ("b", "2024-01-15", 5.0),
        ("new", "2024-02-10", 8.0),       # first purchase in the holdout: not a calibration customer
    ])
    split = calibration_and_holdout(tx, "2024-01-31", "2024-02-29").set_index("customer_id")
    assert split.index.tolist() == ["a", "b"]
    a = split.loc["a"]
    assert (a["frequency"], a["recency"], a["T"], a["monetary_value"]) == (1, 19.0, 30.0, 20.0)
    assert (a["frequency_holdout"], a["spend_holdout"], a["monetary_value_holdout"]) == (2, 48.0, 24.0)
    assert a["duration_holdout"] == 29.0
    b = split.loc["b"]
    assert (b["frequency_holdout"], b["spend_holdout"], b["monetary_value_holdout"]) == (0, 0.0, 0.0)


def test_summary_without_amounts_has_zero_monetary_value() -> None:
    tx = _tx([("a", "2024-01-01", 1.0), ("a", "2024-01-03", 2.0)]).drop(columns="amount")
    rfm = rfm_summary(tx, "2024-01-10", amount_col=None)
    assert rfm["monetary_value"].tolist() == [0.0]


def test_bad_dates_and_units_are_clear_errors() -> None:
    tx = _tx([("a", "2024-01-01", 1.0)])
    with pytest.raises(InvalidInput, match="observation end"):
        rfm_summary(tx, "not a date")
    with pytest.raises(InvalidInput, match="time unit"):
        rfm_summary(tx, "2024-01-31", time_unit="M")
    with pytest.raises(InvalidInput, match="must be after"):
        calibration_and_holdout(tx, "2024-02-01", "2024-01-31")
    with pytest.raises(InvalidInput, match="missing column"):
        rfm_summary(tx.rename(columns={"amount": "value"}), "2024-01-31")


def test_daily_purchases_count_first_and_repeat_purchase_days() -> None:
    tx = _tx([("a", "2024-01-01", 1.0), ("a", "2024-01-01 10:00", 1.0), ("a", "2024-01-03", 1.0),
              ("b", "2024-01-03", 1.0)])
    daily = daily_purchases(tx, "2024-01-31")
    assert daily["day"].dt.strftime("%Y-%m-%d").tolist() == ["2024-01-01", "2024-01-03"]
    assert daily["first_purchases"].tolist() == [1, 1]
    assert daily["repeat_purchases"].tolist() == [0, 1]


transactions = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d", "e"]),
        st.integers(min_value=0, max_value=120),        # day offset
        st.integers(min_value=0, max_value=23),         # hour
        st.floats(min_value=0, max_value=500, allow_nan=False).map(lambda v: round(v, 2)),
    ),
    min_size=1,
    max_size=40,
)


def _frame(rows: list[tuple[str, int, int, float]]) -> pd.DataFrame:
    start = pd.Timestamp("2024-01-01")
    return pd.DataFrame({
        "customer_id": [r[0] for r in rows],
        "ordered_at": [start + pd.Timedelta(days=r[1], hours=r[2]) for r in rows],
        "amount": [r[3] for r in rows],
    })


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=transactions, end_offset=st.integers(min_value=0, max_value=130))
def test_rfm_invariants(rows: list[tuple[str, int, int, float]], end_offset: int) -> None:
    """recency <= T, frequency >= 0, one-time buyers have recency and monetary value 0, late orders ignored."""
    tx = _frame(rows)
    end = pd.Timestamp("2024-01-01") + pd.Timedelta(days=end_offset)
    rfm = rfm_summary(tx, end)
    assert (rfm["frequency"] >= 0).all()
    assert (rfm["recency"] <= rfm["T"]).all()
    assert (rfm["recency"] >= 0).all()
    one_time = rfm["frequency"] == 0
    assert (rfm.loc[one_time, ["recency", "monetary_value"]] == 0).all().all()
    kept = tx[tx["ordered_at"] < end + pd.Timedelta(days=1)]
    pd.testing.assert_frame_equal(rfm, rfm_summary(kept, end))
    if len(kept):
        ref = summary_data_from_transaction_data(kept, "customer_id", "ordered_at", "amount",
                                                 observation_period_end=end).sort_index()
        assert rfm["customer_id"].tolist() == ref.index.tolist()
        np.testing.assert_array_equal(rfm["frequency"].to_numpy(), ref["frequency"].to_numpy())
        np.testing.assert_allclose(rfm[["recency", "T", "monetary_value"]].to_numpy(),
                                   ref[["recency", "T", "monetary_value"]].to_numpy(), rtol=1e-12, atol=1e-9)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=transactions, cal_offset=st.integers(min_value=0, max_value=60), extra=st.integers(1, 70))
def test_holdout_is_the_growth_between_the_two_summaries(
    rows: list[tuple[str, int, int, float]], cal_offset: int, extra: int
) -> None:
    tx = _frame(rows)
    cal = pd.Timestamp("2024-01-01") + pd.Timedelta(days=cal_offset)
    end = cal + pd.Timedelta(days=extra)
    split = calibration_and_holdout(tx, cal, end).set_index("customer_id")
    at_end = rfm_summary(tx, end).set_index("customer_id").loc[split.index]
    np.testing.assert_array_equal(split["frequency_holdout"], at_end["frequency"] - split["frequency"])
    assert (split["duration_holdout"] == extra).all()
    assert (split["spend_holdout"] >= 0).all()


def test_default_dates_come_from_the_orders() -> None:
    """Observation end: the last order's day; holdout: a third of the history, at most the horizon."""
    tx = pd.DataFrame({"ordered_at": pd.to_datetime(["2023-01-01", "2024-12-31 15:00"], format="ISO8601")})
    assert default_dates(tx, 365) == ("2024-05-02", "2024-12-31")
    assert default_dates(tx, 90) == ("2024-10-02", "2024-12-31")
    assert default_dates(tx, 365, observation_end="2024-06-30") == ("2023-12-31", "2024-06-30")
    with pytest.raises(InvalidInput, match="before the first order"):
        default_dates(tx, 365, calibration_end="2022-01-01")
