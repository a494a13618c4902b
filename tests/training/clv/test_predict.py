"""Per-customer CLV outputs: equal to lifetimes' own functions, valid for any customer, persisted exactly."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lifetimes import BetaGeoFitter, GammaGammaFitter

from features.errors import InvalidInput
from features.rfm import calibration_and_holdout
from tests.training.clv.test_fit import cdnow_transactions
from training.clv.fit import fit_bgnbd, fit_gamma_gamma, validate_rfm
from training.clv.predict import (
    SEGMENTS,
    CLVParameters,
    SegmentRule,
    new_customer_value,
    predict_clv,
    rfm_in_days,
    validate_customers,
)
from training.clv.pyfunc import load_parameters, parameters_from_dict, parameters_to_dict, save_parameters


@pytest.fixture(scope="module")
def cdnow_daily() -> tuple[CLVParameters, pd.DataFrame]:
    rfm = calibration_and_holdout(cdnow_transactions(), "1997-09-30", "1998-06-30", date_col="date")
    params = CLVParameters("D", fit_bgnbd(rfm), fit_gamma_gamma(rfm),
                           segment_rule=SegmentRule(value_lost=5.0, value_loyal=20.0, value_champions=80.0),
                           new_customer_value_overall=42.0, new_customer_value_by_channel={"email": 55.5})
    return params, rfm


def _lifetimes(params: CLVParameters) -> tuple[BetaGeoFitter, GammaGammaFitter]:
    bgf = BetaGeoFitter()
    bgf.params_ = pd.Series({"r": params.bgnbd.r, "alpha": params.bgnbd.alpha, "a": params.bgnbd.a, "b": params.bgnbd.b})
    bgf.predict = bgf.conditional_expected_number_of_purchases_up_to_time
    ggf = GammaGammaFitter()
    ggf.params_ = pd.Series({"p": params.gamma_gamma.p, "q": params.gamma_gamma.q, "v": params.gamma_gamma.v})
    return bgf, ggf


def test_outputs_equal_lifetimes_own_functions(cdnow_daily: tuple[CLVParameters, pd.DataFrame]) -> None:
    """Expected purchases, P(alive), order value and a 12x30-day CLV against lifetimes on the CDNOW customers."""
    params, rfm = cdnow_daily
    monthly_rate = 0.01
    annual_rate = (1 + monthly_rate) ** (365 / 30) - 1
    out = predict_clv(params, rfm_in_days(rfm, "D"), horizon_days=360, discount_rate=annual_rate)
    bgf, ggf = _lifetimes(params)
    x, recency, age, money = rfm["frequency"], rfm["recency"], rfm["T"], rfm["monetary_value"]
    np.testing.assert_array_equal(out["expected_purchases"], bgf.predict(360, x, recency, age))
    np.testing.assert_array_equal(out["p_alive"], bgf.conditional_probability_alive(x.to_numpy(), recency.to_numpy(),
                                                                                    age.to_numpy()))
    np.testing.assert_allclose(out["expected_order_value"], ggf.conditional_expected_average_profit(x, money),
                               rtol=1e-14)
    reference = ggf.customer_lifetime_value(bgf, x, recency, age, money, time=12, discount_rate=monthly_rate, freq="D")
    np.testing.assert_allclose(out["clv"], reference, rtol=1e-12)
    assert out["customer_id"].tolist() == rfm["customer_id"].tolist()


def test_weekly_model_speaks_days(cdnow_daily: tuple[CLVParameters, pd.DataFrame]) -> None:
    """A model fitted in weeks takes and returns days: same predictions as the daily model of the same data."""
    daily, rfm_days = cdnow_daily
    rfm_weeks = calibration_and_holdout(cdnow_transactions(), "1997-09-30", "1998-06-30", date_col="date",
                                        time_unit="W")
    weekly = replace(daily, time_unit="W", bgnbd=fit_bgnbd(rfm_weeks, time_unit="W"))
    assert weekly.bgnbd.alpha * 7 == pytest.approx(daily.bgnbd.alpha, rel=1e-4)
    by_week = predict_clv(weekly, rfm_in_days(rfm_weeks, "W"))
    by_day = predict_clv(daily, rfm_in_days(rfm_days, "D"))
    np.testing.assert_allclose(by_week["expected_purchases"], by_day["expected_purchases"], rtol=1e-3)
    np.testing.assert_allclose(by_week["p_alive"], by_day["p_alive"], rtol=1e-3, atol=1e-6)


def test_parameters_round_trip_exactly(tmp_path: Path, cdnow_daily: tuple[CLVParameters, pd.DataFrame]) -> None:
    params, rfm = cdnow_daily
    loaded = load_parameters(save_parameters(params, tmp_path / "p.json"))
    assert loaded == params
    customers = rfm_in_days(rfm, "D")
    pd.testing.assert_frame_equal(predict_clv(loaded, customers), predict_clv(params, customers))
    without_money = replace(params, gamma_gamma=None, new_customer_value_overall=float("nan"))
    again = parameters_from_dict(json.loads(json.dumps(parameters_to_dict(without_money))))
    assert again.gamma_gamma is None and np.isnan(again.new_customer_value_overall)


def test_new_customer_value_by_channel_falls_back_to_overall(cdnow_daily: tuple[CLVParameters, pd.DataFrame]) -> None:
    params, _ = cdnow_daily
    assert new_customer_value(params, "email") == 55.5
    assert new_customer_value(params, "carrier_pigeon") == 42.0
    assert new_customer_value(params, None) == 42.0


def test_model_without_order_values_predicts_purchases_and_segments(
    cdnow_daily: tuple[CLVParameters, pd.DataFrame],
) -> None:
    params, rfm = cdnow_daily
    out = predict_clv(replace(params, gamma_gamma=None, segment_rule=SegmentRule()), rfm_in_days(rfm, "D"))
    assert out["clv"].isna().all() and out["expected_order_value"].isna().all()
    assert out["segment"].isin(SEGMENTS).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"recency_days": [50.0]}, r"recency_days: expected a number <= age_days .*; 1 row: row 0 '50.0'"),
        ({"frequency": [-1.0]}, r"frequency: expected a whole number >= 0; 1 row: row 0 '-1.0'"),
        ({"monetary_value": [float("nan")]}, r"monetary_value: expected a value \(required\); 1 row: row 0 \(empty\)"),
        ({"age_days": [float("inf")]}, r"age_days: expected a number; 1 row: row 0 'inf'"),
        ({"monetary_value": [-5.0]}, r"monetary_value: expected a number >= 0; 1 row: row 0 '-5.0'"),
    ],
)
def test_bad_customers_are_named(cdnow_daily: tuple[CLVParameters, pd.DataFrame], change: dict, message: str) -> None:
    params, _ = cdnow_daily
    customer = {"frequency": [2.0], "recency_days": [20.0], "age_days": [40.0], "monetary_value": [10.0]} | change
    with pytest.raises(InvalidInput, match=r"^customers: 1 problem in 1 row; nothing was scored\n  - " + message):
        predict_clv(params, pd.DataFrame(customer))


RFM_VALUES = st.sampled_from([0.0, 0.0, 1.0, 2.0, 2.5, 7.0, 30.0, -1.0, float("nan"), float("inf")])


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.tuples(RFM_VALUES, RFM_VALUES, RFM_VALUES, RFM_VALUES), min_size=1, max_size=8))
def test_training_and_scoring_apply_the_same_rfm_rules(rows: list[tuple[float, float, float, float]]) -> None:
    """The same customers in model units and in days: both validators pass, or both name the same problems."""
    rfm = pd.DataFrame(rows, columns=["frequency", "recency", "T", "monetary_value"])
    rfm.insert(0, "customer_id", [f"c{i}" for i in range(len(rfm))])
    in_days = rfm.rename(columns={"recency": "recency_days", "T": "age_days"})
    verdicts = []
    for validate, frame in ((lambda f: validate_rfm(f, monetary=True), rfm), (validate_customers, in_days)):
        try:
            validate(frame)
            verdicts.append([])
        except InvalidInput as exc:
            verdicts.append(str(exc).splitlines()[1:])
    in_model_units = [line.replace("recency_days", "recency").replace("age_days", "T") for line in verdicts[1]]
    assert verdicts[0] == in_model_units


def test_bad_horizon_and_rate_are_named(cdnow_daily: tuple[CLVParameters, pd.DataFrame]) -> None:
    params, rfm = cdnow_daily
    customers = rfm_in_days(rfm.head(3), "D")
    with pytest.raises(InvalidInput, match="horizon_days"):
        predict_clv(params, customers, horizon_days=-1)
    with pytest.raises(InvalidInput, match="discount_rate"):
        predict_clv(params, customers, discount_rate=-1.5)


customers = st.integers(min_value=0, max_value=60).flatmap(
    lambda x: st.tuples(
        st.just(float(x)),
        st.floats(min_value=0, max_value=2000, allow_nan=False),
        st.floats(min_value=0, max_value=1, allow_nan=False),
        st.floats(min_value=0, max_value=5000, allow_nan=False),
    )
)


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(customers, min_size=1, max_size=20), horizon=st.integers(0, 3 * 365),
       rate=st.floats(min_value=0, max_value=0.5))
def test_outputs_are_valid_for_any_customer(rows: list[tuple[float, float, float, float]], horizon: int, rate: float,
                                            cdnow_daily: tuple[CLVParameters, pd.DataFrame]) -> None:
    """Probabilities in [0, 1], purchases and CLV >= 0 and finite, exactly one known segment each."""
    params, _ = cdnow_daily
    frame = pd.DataFrame({
        "frequency": [r[0] for r in rows],
        "age_days": [r[1] for r in rows],
        "recency_days": [0.0 if r[0] == 0 else r[1] * r[2] for r in rows],
        "monetary_value": [0.0 if r[0] == 0 else r[3] for r in rows],
    })
    out = predict_clv(params, frame, horizon_days=horizon, discount_rate=rate)
    assert len(out) == len(frame)
    assert out["p_alive"].between(0, 1).all()
    for column in ("expected_purchases", "expected_order_value", "clv"):
        assert np.isfinite(out[column]).all() and (out[column] >= 0).all(), column
    assert out["segment"].isin(SEGMENTS).all()
    assert (out["clv"] <= out["expected_purchases"] * out["expected_order_value"] * (1 + 1e-9) + 1e-9).all()
