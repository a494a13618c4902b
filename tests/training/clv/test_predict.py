"""Per-customer CLV outputs: equal to lifetimes' own functions for BG/NBD, MBG/NBD and Pareto/NBD, valid for any
customer, persisted exactly; the segment rule."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lifetimes import BetaGeoFitter, GammaGammaFitter, ModifiedBetaGeoFitter, ParetoNBDFitter
from scipy.integrate import quad
from scipy.special import beta as beta_function

from features.errors import InvalidInput
from features.rfm import calibration_and_holdout
from tests.training.clv.test_fit import cdnow_transactions
from training.clv.fit import fit_bgnbd, fit_gamma_gamma, fit_purchases, validate_rfm
from training.clv.predict import (
    SEGMENTS,
    CLVParameters,
    SegmentRule,
    assign_segments,
    expected_purchases,
    new_customer_value,
    predict_clv,
    rfm_in_days,
    validate_customers,
)
from training.clv.purchases import (
    BgNbdParameters,
    cumulative_purchases,
    expected_purchases_new_customer,
    probability_of_buying,
)
from training.clv.pyfunc import load_parameters, parameters_from_dict, parameters_to_dict, save_parameters


@pytest.fixture(scope="module")
def cdnow_daily() -> tuple[CLVParameters, pd.DataFrame]:
    rfm = calibration_and_holdout(cdnow_transactions(), "1997-09-30", "1998-06-30", date_col="date")
    params = CLVParameters("D", fit_bgnbd(rfm), fit_gamma_gamma(rfm),
                           segment_rule=SegmentRule(value_lost=5.0, value_loyal=20.0, value_champions=80.0),
                           new_customer_value_overall=42.0, new_customer_value_by_channel={"email": 55.5})
    return params, rfm


@pytest.fixture(scope="module")
def cdnow_models(cdnow_daily: tuple[CLVParameters, pd.DataFrame]) -> dict[str, CLVParameters]:
    """The same CLV parameters with each purchase model fitted on CDNOW in days."""
    params, rfm = cdnow_daily
    return {"bgnbd": params, "mbgnbd": replace(params, purchases=fit_purchases("mbgnbd", rfm)),
            "pnbd": replace(params, purchases=fit_purchases("pnbd", rfm))}


def _lifetimes(params: CLVParameters) -> tuple[BetaGeoFitter, GammaGammaFitter]:
    fitter = {"bgnbd": BetaGeoFitter, "mbgnbd": ModifiedBetaGeoFitter, "pnbd": ParetoNBDFitter}[params.model]()
    fitter.params_ = pd.Series(params.purchases.values())
    fitter.predict = fitter.conditional_expected_number_of_purchases_up_to_time
    bgf = fitter
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
    weekly = replace(daily, time_unit="W", purchases=fit_bgnbd(rfm_weeks, time_unit="W"))
    assert weekly.purchases.alpha * 7 == pytest.approx(daily.purchases.alpha, rel=1e-4)
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


@pytest.mark.parametrize("kind", ["bgnbd", "mbgnbd", "pnbd"])
@settings(max_examples=100, deadline=None)
@given(rows=st.lists(customers, min_size=1, max_size=20), horizon=st.integers(0, 3 * 365),
       rate=st.floats(min_value=0, max_value=0.5))
def test_outputs_are_valid_for_any_customer(rows: list[tuple[float, float, float, float]], horizon: int, rate: float,
                                            kind: str, cdnow_models: dict[str, CLVParameters]) -> None:
    """Probabilities in [0, 1], purchases and CLV >= 0 and finite, exactly one known segment each, no one-time buyer
    loyal or a champion (every model)."""
    params = cdnow_models[kind]
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
    assert not out.loc[frame["frequency"].to_numpy() == 0, "segment"].isin(["loyal", "champions"]).any()


@pytest.mark.parametrize("kind", ["mbgnbd", "pnbd"])
def test_other_models_equal_lifetimes_own_functions(kind: str, cdnow_models: dict[str, CLVParameters],
                                                    cdnow_daily: tuple[CLVParameters, pd.DataFrame]) -> None:
    """MBG/NBD and Pareto/NBD: conditional expected purchases, P(alive) and the population curve against
    ``ModifiedBetaGeoFitter`` and ``ParetoNBDFitter`` on the CDNOW customers (days)."""
    params = cdnow_models[kind]
    _, rfm = cdnow_daily
    fitter, _ = _lifetimes(params)
    x, recency, age = (rfm[c].to_numpy(dtype="float64") for c in ("frequency", "recency", "T"))
    out = predict_clv(params, rfm_in_days(rfm, "D"), horizon_days=360)
    np.testing.assert_allclose(out["expected_purchases"], fitter.predict(360, x, recency, age), rtol=1e-9)
    np.testing.assert_allclose(out["p_alive"], fitter.conditional_probability_alive(x, recency, age), rtol=1e-9)
    t = np.array([1.0, 30.0, 365.0, 1000.0])
    np.testing.assert_allclose(expected_purchases_new_customer(params.purchases, t),
                               fitter.expected_number_of_purchases_up_to_time(t), rtol=1e-9)


def test_pareto_nbd_probability_of_buying_equals_lifetimes(cdnow_models: dict[str, CLVParameters],
                                                           cdnow_daily: tuple[CLVParameters, pd.DataFrame]) -> None:
    """P(at least one purchase in the next 90 days) against 1 - lifetimes' P(0 purchases) (Fader & Hardie note 028)."""
    params = cdnow_models["pnbd"]
    _, rfm = cdnow_daily
    fitter, _ = _lifetimes(params)
    sample = rfm.iloc[::40]
    x, recency, age = (sample[c].to_numpy(dtype="float64") for c in ("frequency", "recency", "T"))
    reference = 1 - fitter.conditional_probability_of_n_purchases_up_to_time(0, 90.0, x, recency, age)
    np.testing.assert_allclose(probability_of_buying(params.purchases, x, recency, age, 90.0), reference, rtol=1e-7)


@pytest.mark.parametrize("kind", ["bgnbd", "mbgnbd", "pnbd"])
def test_probability_of_buying_takes_a_duration_per_customer(kind: str, cdnow_models: dict[str, CLVParameters],
                                                             cdnow_daily: tuple[CLVParameters, pd.DataFrame]) -> None:
    """Each customer's own duration gives the answer a call with that duration alone gives (none is widened to the
    longest)."""
    model = cdnow_models[kind].purchases
    _, rfm = cdnow_daily
    sample = rfm.iloc[::200]
    x, recency, age = (sample[c].to_numpy(dtype="float64") for c in ("frequency", "recency", "T"))
    durations = np.resize([7.0, 90.0, 365.0], len(x))
    one_by_one = [probability_of_buying(model, x[i:i + 1], recency[i:i + 1], age[i:i + 1], float(durations[i]))[0]
                  for i in range(len(x))]
    np.testing.assert_allclose(probability_of_buying(model, x, recency, age, durations), one_by_one, rtol=1e-12)


@pytest.mark.parametrize("kind", ["bgnbd", "mbgnbd", "pnbd"])
def test_expected_purchases_alone_equal_predict_clv(kind: str, cdnow_models: dict[str, CLVParameters],
                                                    cdnow_daily: tuple[CLVParameters, pd.DataFrame]) -> None:
    """The holdout evaluation's shortcut gives predict_clv's numbers exactly."""
    params = cdnow_models[kind]
    customers = rfm_in_days(cdnow_daily[1], "D")
    for days in (0.0, 45.5, 273.0):
        np.testing.assert_array_equal(expected_purchases(params, customers, days),
                                      predict_clv(params, customers, horizon_days=days)["expected_purchases"])


@pytest.mark.parametrize("kind", ["mbgnbd", "pnbd"])
def test_every_model_round_trips_exactly(tmp_path: Path, kind: str, cdnow_models: dict[str, CLVParameters],
                                        cdnow_daily: tuple[CLVParameters, pd.DataFrame]) -> None:
    """Format 2 stores the model's kind, its parameters, the segment basis and the warnings."""
    params = replace(cdnow_models[kind], warnings=("a warning",),
                     segment_rule=SegmentRule(basis="recency", recency_at_risk_days=60.0, recency_lost_days=120.0))
    loaded = load_parameters(save_parameters(params, tmp_path / "p.json"))
    assert loaded == params and loaded.model == kind
    stored = json.loads((tmp_path / "p.json").read_text())
    assert stored["format_version"] == 2 and stored["model"] == kind and stored["warnings"] == ["a warning"]
    customers = rfm_in_days(cdnow_daily[1], "D")
    pd.testing.assert_frame_equal(predict_clv(loaded, customers), predict_clv(params, customers))


def test_format_1_loads_as_bgnbd_with_its_own_segment_rule(cdnow_daily: tuple[CLVParameters, pd.DataFrame]) -> None:
    """A model saved before there was a choice ("bgnbd", no "model") keeps scoring as it did: one-time buyers can
    still be loyal under its rule."""
    params, _ = cdnow_daily
    values = parameters_to_dict(params)
    old = {k: v for k, v in values.items() if k not in ("model", "purchases", "warnings")}
    old |= {"format_version": 1, "bgnbd": {k: v for k, v in values["purchases"].items() if k != "at_bound"}}
    old["segment_rule"] = {k: v for k, v in values["segment_rule"].items()
                           if k in ("p_alive_lost", "p_alive_at_risk", "value_lost", "value_loyal", "value_champions")}
    loaded = parameters_from_dict(old)
    assert isinstance(loaded.purchases, BgNbdParameters) and loaded.segment_rule.version == 1
    assert loaded.warnings == ()
    one_time_valuable = pd.DataFrame({"frequency": [0], "recency_days": [0.0], "age_days": [1.0],
                                      "monetary_value": [0.0]})
    assert predict_clv(loaded, one_time_valuable)["segment"].iloc[0] in ("loyal", "champions")
    assert predict_clv(params, one_time_valuable)["segment"].iloc[0] == "promising"


def test_segment_rule_by_p_alive_and_by_recency() -> None:
    """P(alive) basis: lost/at_risk by P(alive) (and lost by low value); recency basis: by days since the last
    purchase only; either way a one-time buyer is promising at best, never loyal or a champion."""
    p_alive = np.array([0.1, 0.4, 0.9, 0.9, 0.9, 0.9, 0.99])
    value = np.array([50.0, 50.0, 50.0, 30.0, 12.0, 50.0, 1.0])
    frequency = np.array([3, 3, 3, 3, 3, 0, 3])
    silence = np.array([10.0, 10.0, 200.0, 90.0, 10.0, 10.0, 10.0])
    rule = SegmentRule(value_lost=5.0, value_loyal=20.0, value_champions=40.0)
    by_p = assign_segments(p_alive, value, rule, frequency, silence)
    assert by_p.tolist() == ["lost", "at_risk", "champions", "loyal", "promising", "promising", "lost"]
    by_recency = assign_segments(p_alive, value, replace(rule, basis="recency", recency_at_risk_days=60.0,
                                                         recency_lost_days=150.0), frequency, silence)
    assert by_recency.tolist() == ["champions", "champions", "lost", "at_risk", "promising", "promising", "promising"]


@pytest.mark.parametrize("b", [0.3, 0.658, 2.4])
def test_bgnbd_one_time_buyers_expectation_holds_when_a_plus_b_is_below_1(b: float) -> None:
    """With a + b < 1 (BG/NBD on CDNOW with penalizer 0.01: a=0.286, b=0.658) 2F1(r, b; a + b - 1; z) is negative for
    one-time buyers and lifetimes answers NaN (the log of it). Ours equals the expectation integrated over the
    dropout probability: E[(1 - ((alpha + T) / (alpha + T + p t)) ** r) / p], p ~ Beta(a, b) (eq. 8 with lambda
    integrated out; a one-time buyer is alive and their p still the prior's)."""
    r, alpha, a, t = 0.243, 4.43, 0.286, 39.0
    model = BgNbdParameters(r, alpha, a, b, 0.0, 0.0, 1)
    for age in (5.0, 60.0):
        def integrand(p: float, age: float = age) -> float:
            return -np.expm1(-r * np.log1p(p * t / (alpha + age))) / p if p > 0 else r * t / (alpha + age)

        expected = quad(integrand, 0, 1, weight="alg", wvar=(a - 1, b - 1), epsabs=1e-13, epsrel=1e-12)[0]
        ours = cumulative_purchases(model, np.array([0.0]), np.array([0.0]), np.array([age]))(t)
        assert ours[0] == pytest.approx(expected / beta_function(a, b), rel=1e-9)
