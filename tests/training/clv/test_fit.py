"""BG/NBD, MBG/NBD, Pareto/NBD and Gamma-Gamma fits: published values through our own RFM pipeline, lifetimes'
likelihoods and fits, parameter recovery, input checks, the Pareto/NBD integral."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from autograd import value_and_grad
from lifetimes import BetaGeoFitter, GammaGammaFitter, ModifiedBetaGeoFitter, ParetoNBDFitter
from lifetimes.datasets import load_cdnow_summary
from scipy.integrate import quad

from features.errors import InvalidInput
from features.rfm import calibration_and_holdout, rfm_summary
from features.simulate.config import OrderValue, PurchaseProcess
from features.simulate.orders import simulate_orders
from tests.conftest import REPO_ROOT
from training.clv.fit import (
    GammaGammaAssumptionWarning,
    ModelDidNotConverge,
    check_gamma_gamma_assumption,
    fit_bgnbd,
    fit_gamma_gamma,
    fit_purchases,
    frequency_monetary_correlation,
    gamma_gamma_assumption_holds,
    unique_rows,
    validate_rfm,
)
from training.clv.likelihood import BgNbdData, GammaGammaData, bgnbd_objective, gamma_gamma_objective, mbgnbd_objective
from training.clv.pareto_nbd import ParetoNbdData, pareto_nbd_objective, tails

CDNOW_SAMPLE = next((REPO_ROOT / ".venv" / "lib").glob("python3*/site-packages/lifetimes/datasets/CDNOW_sample.txt"))
TRUE_PURCHASES = PurchaseProcess(r=0.9, alpha=60.0, a=0.9, b=4.0)
TRUE_ORDER_VALUE = OrderValue(p=6.0, q=3.8, v=150.0)


def cdnow_transactions() -> pd.DataFrame:
    """The raw CDNOW sample shipped with lifetimes: customer id, id2, date YYYYMMDD, quantity, amount."""
    raw = pd.read_csv(CDNOW_SAMPLE, sep=r"\s+", header=None, names=["customer_id", "id2", "date", "quantity", "amount"],
                      dtype={"customer_id": str, "date": str})
    raw["date"] = pd.to_datetime(raw["date"], format="%Y%m%d")
    return raw


def simulated_transactions(n: int, seed: int, end: str = "2024-12-31", purchases: PurchaseProcess = TRUE_PURCHASES,
                           order_value: OrderValue = TRUE_ORDER_VALUE, channels: tuple[str, ...] = ()) -> pd.DataFrame:
    """Orders from the simulator's true BG/NBD + Gamma-Gamma process, first orders 200-900 days before ``end``.

    With ``channels``, adds an ``acquisition_channel`` column drawn per customer.
    """
    rng = np.random.default_rng(seed)
    end_day = pd.Timestamp(end)
    age_days = rng.integers(200, 900, n)
    orders, _ = simulate_orders(age_days + 1, purchases, order_value, rng)
    starts = end_day - pd.to_timedelta(age_days, unit="D")
    owner = orders["customer"].to_numpy()
    tx = pd.DataFrame({
        "customer_id": np.char.add("c", np.char.zfill(owner.astype(str), 6)).astype(object),
        "ordered_at": starts[owner] + pd.to_timedelta(orders["day"].to_numpy(), unit="D"),
        "amount": orders["amount"].to_numpy(),
    })
    if channels:
        tx["acquisition_channel"] = np.asarray(channels, dtype=object)[rng.integers(0, len(channels), n)][owner]
    return tx


def test_bgnbd_matches_fader_hardie_lee_2005() -> None:
    """CDNOW sample, calibration to 1997-09-30, weeks: r=0.243, alpha=4.414, a=0.793, b=2.426, LL=-9582.4."""
    rfm = calibration_and_holdout(cdnow_transactions(), "1997-09-30", "1998-06-30", date_col="date", time_unit="W")
    assert len(rfm) == 2357
    bg = fit_bgnbd(rfm, time_unit="W")
    assert bg.r == pytest.approx(0.243, abs=5e-4)
    assert bg.alpha == pytest.approx(4.414, abs=5e-4)
    assert bg.a == pytest.approx(0.793, abs=5e-4)
    assert bg.b == pytest.approx(2.426, abs=5e-4)
    assert bg.log_likelihood == pytest.approx(-9582.4, abs=0.05)


def test_gamma_gamma_matches_fader_hardie_2013() -> None:
    """Same calibration period, 946 repeat buyers' mean repeat-order value: p=6.25, q=3.74, gamma=15.44."""
    rfm = calibration_and_holdout(cdnow_transactions(), "1997-09-30", "1998-06-30", date_col="date", time_unit="W")
    gg = fit_gamma_gamma(rfm)
    assert gg.n_customers == 946
    assert gg.p == pytest.approx(6.25, abs=5e-3)
    assert gg.q == pytest.approx(3.74, abs=5e-3)
    assert gg.v == pytest.approx(15.44, abs=5e-3)


def test_weighted_unique_rows_give_the_raw_fit() -> None:
    rfm = rfm_summary(simulated_transactions(1500, seed=3), "2024-12-31")
    assert len(unique_rows(rfm, ["frequency", "recency", "T"])) < len(rfm)
    weighted = fit_bgnbd(rfm)
    raw = BetaGeoFitter().fit(rfm["frequency"], rfm["recency"], rfm["T"]).params_
    np.testing.assert_allclose([weighted.r, weighted.alpha, weighted.a, weighted.b], raw.to_numpy(), rtol=1e-9)
    buyers = rfm[rfm["frequency"] > 0]
    raw_gg = GammaGammaFitter().fit(buyers["frequency"], buyers["monetary_value"]).params_
    gg = fit_gamma_gamma(rfm)
    np.testing.assert_allclose([gg.p, gg.q, gg.v], raw_gg.to_numpy(), rtol=1e-6)


def test_fit_recovers_the_simulators_true_parameters() -> None:
    rfm = rfm_summary(simulated_transactions(4000, seed=0), "2024-12-31")
    bg = fit_bgnbd(rfm)
    assert bg.r == pytest.approx(TRUE_PURCHASES.r, rel=0.15)
    assert bg.alpha == pytest.approx(TRUE_PURCHASES.alpha, rel=0.15)
    assert bg.a == pytest.approx(TRUE_PURCHASES.a, rel=0.25)
    assert bg.b == pytest.approx(TRUE_PURCHASES.b, rel=0.25)
    assert bg.r / bg.alpha == pytest.approx(TRUE_PURCHASES.r / TRUE_PURCHASES.alpha, rel=0.1)
    gg = fit_gamma_gamma(rfm)
    true = TRUE_ORDER_VALUE
    assert gg.p == pytest.approx(true.p, rel=0.25)
    assert gg.q == pytest.approx(true.q, rel=0.25)
    assert gg.v == pytest.approx(true.v, rel=0.25)
    assert gg.p * gg.v / (gg.q - 1) == pytest.approx(true.p * true.v / (true.q - 1), rel=0.1)
    assert gamma_gamma_assumption_holds(frequency_monetary_correlation(rfm))


def _rfm(**columns: list) -> pd.DataFrame:
    base = {"customer_id": ["a", "b", "c"], "frequency": [0, 2, 1], "recency": [0.0, 5.0, 3.0],
            "T": [10.0, 10.0, 10.0], "monetary_value": [0.0, 12.0, 8.0]}
    base.update(columns)
    return pd.DataFrame(base)


@pytest.mark.parametrize(
    ("columns", "monetary", "message"),
    [
        ({"recency": [0.0, np.nan, 3.0]}, False,
         r"recency: expected a value \(required\); 1 row: customer b \(empty\)"),
        ({"recency": [0.0, 12.0, 3.0]}, False, r"recency: expected a number <= T .*; 1 row: customer b '12.0'"),
        ({"frequency": [0, 2.5, 1]}, False, r"frequency: expected a whole number; 1 row: customer b '2.5'"),
        ({"recency": [1.0, 5.0, 3.0]}, False, r"recency: expected 0 when frequency is 0; 1 row: customer a '1.0'"),
        ({"monetary_value": [0.0, -1.0, 8.0]}, True, r"monetary_value: expected a number >= 0; 1 row: customer b"),
        ({"T": [10.0, np.inf, 10.0]}, False, r"T: expected a number; 1 row: customer b 'inf'"),
    ],
)
def test_invalid_rfm_is_named_before_lifetimes_sees_it(columns: dict, monetary: bool, message: str) -> None:
    with pytest.raises(InvalidInput, match=r"^RFM summary: 1 problem in 1 row; nothing was fitted\n  - " + message):
        validate_rfm(_rfm(**columns), monetary=monetary)


def test_every_broken_rfm_rule_is_named_with_its_customers() -> None:
    rfm = _rfm(frequency=[-1, 2, 0], recency=[0.0, -5.0, 2.0]).drop(columns="customer_id")
    with pytest.raises(InvalidInput) as info:
        validate_rfm(rfm)
    assert str(info.value).splitlines() == [
        "RFM summary: 3 problems in 3 rows; nothing was fitted",
        "  - frequency: expected a whole number >= 0; 1 row: row 0 '-1'",
        "  - recency: expected a number >= 0; 1 row: row 1 '-5.0'",
        "  - recency: expected 0 when frequency is 0; 1 row: row 2 '2.0'",
    ]
    with pytest.raises(InvalidInput, match="RFM summary: no customers"):
        validate_rfm(rfm.iloc[:0])
    with pytest.raises(InvalidInput, match=r"  - T: required column is missing"):
        validate_rfm(rfm.drop(columns="T"))


def test_gamma_gamma_rejects_repeat_buyers_without_value() -> None:
    with pytest.raises(InvalidInput, match=r"monetary_value: customer\(s\) b have repeat purchases worth 0"):
        fit_gamma_gamma(_rfm(monetary_value=[0.0, 0.0, 8.0]))


def test_non_convergence_says_what_to_try() -> None:
    # Everyone bought every day: the likelihood has no finite optimum.
    rfm = pd.DataFrame({"frequency": [10] * 50, "recency": [10.0] * 50, "T": [10.0] * 50})
    with pytest.raises(ModelDidNotConverge, match="Try: a larger penalizer"):
        fit_bgnbd(rfm)


def test_correlated_order_values_fail_the_assumption_check() -> None:
    rfm = pd.DataFrame({"frequency": [1, 2, 3, 4, 5, 6], "recency": [1.0] * 6, "T": [9.0] * 6,
                        "monetary_value": [10.0, 20.0, 30.0, 40.0, 50.0, 61.0]})
    with pytest.warns(GammaGammaAssumptionWarning, match=r"correlate \(r = 1\.00, \|r\| > 0\.3\)"):
        correlation = check_gamma_gamma_assumption(rfm)
    assert correlation > 0.9
    assert not gamma_gamma_assumption_holds(correlation)


def test_fast_likelihoods_equal_lifetimes_values_and_gradients() -> None:
    """The rearranged objectives and their analytic gradients against lifetimes' own, taped by autograd."""
    rfm = rfm_summary(simulated_transactions(800, seed=11), "2024-12-31")
    scale = 1.0 / rfm["T"].max()
    frequency = rfm["frequency"].to_numpy().astype(int)
    recency, age = rfm["recency"].to_numpy() * scale, rfm["T"].to_numpy() * scale
    weights = np.random.default_rng(1).integers(1, 4, len(rfm))
    buyers = rfm["frequency"].to_numpy() > 0
    money = rfm["monetary_value"].to_numpy()
    bg_data = BgNbdData.from_rows(frequency, recency, age, weights)
    gg_data = GammaGammaData.from_rows(frequency[buyers], money[buyers], weights[buyers])
    rng = np.random.default_rng(2)
    for penalizer in (0.0, 0.05):
        for _ in range(3):
            theta = rng.normal(0.0, 0.7, 4)
            expected = value_and_grad(BetaGeoFitter._negative_log_likelihood)(
                theta, frequency, recency, age, weights, penalizer)
            value, gradient = bgnbd_objective(theta, bg_data, penalizer)
            assert value == pytest.approx(expected[0], rel=1e-12)
            np.testing.assert_allclose(gradient, expected[1], rtol=1e-10, atol=1e-12)
            theta = rng.normal(0.0, 0.5, 3) + np.array([1.8, 1.3, 5.0])
            expected = value_and_grad(GammaGammaFitter._negative_log_likelihood)(
                theta, frequency[buyers].astype(float), money[buyers], weights[buyers], penalizer)
            value, gradient = gamma_gamma_objective(theta, gg_data, penalizer)
            assert value == pytest.approx(expected[0], rel=1e-12)
            np.testing.assert_allclose(gradient, expected[1], rtol=1e-10, atol=1e-12)
        for _ in range(3):
            theta = rng.normal(0.0, 0.7, 4)
            expected = value_and_grad(ModifiedBetaGeoFitter._negative_log_likelihood)(
                theta, frequency, recency, age, weights, penalizer)
            value, gradient = mbgnbd_objective(theta, bg_data, penalizer)
            assert value == pytest.approx(expected[0], rel=1e-12)
            np.testing.assert_allclose(gradient, expected[1], rtol=1e-10, atol=1e-12)


def _unit_log_likelihood(fitter: ModifiedBetaGeoFitter, summary: pd.DataFrame) -> float:
    """lifetimes' fitted log-likelihood (a mean in scaled time) in the data's own time unit."""
    return float(-fitter._negative_log_likelihood_ * len(summary)
                 + summary["frequency"].sum() * np.log(1 / summary["T"].max()))


def test_mbgnbd_matches_lifetimes_on_cdnow() -> None:
    """lifetimes' ModifiedBetaGeoFitter on its CDNOW summary (weeks): r=0.525, alpha=6.183, a=0.891, b=1.614; ours on
    the same summary to 1e-5, and through our own RFM pipeline from the raw transactions (the summary is rounded to
    two decimals) to 1e-3."""
    summary = load_cdnow_summary()
    reference = ModifiedBetaGeoFitter().fit(summary["frequency"], summary["recency"], summary["T"])
    expected = reference.params_[["r", "alpha", "a", "b"]].to_numpy()
    ours = fit_purchases("mbgnbd", summary, time_unit="W")
    np.testing.assert_allclose(list(ours.values().values()), expected, rtol=1e-5)
    assert ours.log_likelihood == pytest.approx(_unit_log_likelihood(reference, summary), rel=1e-8)
    assert [round(v, 3) for v in ours.values().values()] == [0.525, 6.183, 0.891, 1.614]
    rfm = calibration_and_holdout(cdnow_transactions(), "1997-09-30", "1998-06-30", date_col="date", time_unit="W")
    pipeline = fit_purchases("mbgnbd", rfm, time_unit="W")
    np.testing.assert_allclose(list(pipeline.values().values()), expected, rtol=1e-3)
    assert pipeline.log_likelihood == pytest.approx(-9582.1, abs=0.05)


def test_pareto_nbd_matches_fader_hardie_lee_2005() -> None:
    """CDNOW sample, calibration to 1997-09-30, weeks: r=0.553, alpha=10.578, s=0.606, beta=11.669 and a log-likelihood
    of -9595.0 (Fader, Hardie & Lee 2005, "RFM and CLV"; lifetimes' ParetoNBDFitter: 0.553, 10.58, 0.606, 11.67)."""
    rfm = calibration_and_holdout(cdnow_transactions(), "1997-09-30", "1998-06-30", date_col="date", time_unit="W")
    ours = fit_purchases("pnbd", rfm, time_unit="W")
    assert ours.r == pytest.approx(0.553, abs=5e-4)
    assert ours.alpha == pytest.approx(10.578, abs=5e-4)
    assert ours.s == pytest.approx(0.606, abs=5e-4)
    assert ours.beta == pytest.approx(11.669, abs=5e-4)
    assert ours.log_likelihood == pytest.approx(-9595.0, abs=0.05)
    assert ours.at_bound == ()
    summary = load_cdnow_summary()
    reference = ParetoNBDFitter().fit(summary["frequency"], summary["recency"], summary["T"])
    on_summary = fit_purchases("pnbd", summary, time_unit="W")
    np.testing.assert_allclose(list(on_summary.values().values()),
                               reference.params_[["r", "alpha", "s", "beta"]].to_numpy(), rtol=1e-3)
    # lifetimes stops its Nelder-Mead at tol 1e-4: our optimum is at least as likely
    scale = 1 / summary["T"].max()
    theirs = reference.params_[["r", "alpha", "s", "beta"]].to_numpy() * np.array([1, scale, 1, scale])
    data = ParetoNbdData.from_rows(summary["frequency"], summary["recency"] * scale, summary["T"] * scale,
                                   np.ones(len(summary)))
    assert pareto_nbd_objective(np.log(theirs), data, 0.0)[0] >= pareto_nbd_objective(
        np.log([on_summary.r, on_summary.alpha * scale, on_summary.s, on_summary.beta * scale]), data, 0.0)[0]


def test_weighted_unique_rows_give_the_raw_fit_for_mbgnbd_and_pareto_nbd() -> None:
    rfm = rfm_summary(simulated_transactions(1500, seed=3), "2024-12-31")
    raw = ModifiedBetaGeoFitter().fit(rfm["frequency"], rfm["recency"], rfm["T"]).params_
    np.testing.assert_allclose(list(fit_purchases("mbgnbd", rfm).values().values()), raw.to_numpy(), rtol=1e-6)
    weighted = fit_purchases("pnbd", rfm)
    scale = 1 / rfm["T"].max()
    raw_data = ParetoNbdData.from_rows(rfm["frequency"], rfm["recency"] * scale, rfm["T"] * scale, np.ones(len(rfm)))
    theta = np.log([weighted.r, weighted.alpha * scale, weighted.s, weighted.beta * scale])
    _, gradient = pareto_nbd_objective(theta, raw_data, 0.0)
    assert np.max(np.abs(gradient)) < 1e-6  # the weighted optimum is the raw one's


def test_pareto_nbd_likelihood_equals_lifetimes_and_its_gradient_the_numerical_one() -> None:
    """Values against ``ParetoNBDFitter._conditional_log_likelihood`` (where its 2F1 is finite); the analytic
    gradient against central differences of the objective itself."""
    rfm = rfm_summary(simulated_transactions(800, seed=11), "2024-12-31")
    scale = 1.0 / rfm["T"].max()
    frequency = rfm["frequency"].to_numpy().astype(int)
    recency, age = rfm["recency"].to_numpy() * scale, rfm["T"].to_numpy() * scale
    weights = np.random.default_rng(1).integers(1, 4, len(rfm)).astype("float64")
    data = ParetoNbdData.from_rows(frequency, recency, age, weights)
    rng = np.random.default_rng(2)
    for penalizer in (0.0, 0.05):
        for _ in range(4):
            theta = rng.normal(0.0, 0.7, 4)
            value, gradient = pareto_nbd_objective(theta, data, penalizer)
            per_customer = ParetoNBDFitter._conditional_log_likelihood(np.exp(theta), frequency, recency, age)
            expected = -(weights * per_customer).sum() / weights.sum() + penalizer * (np.exp(theta) ** 2).sum()
            assert value == pytest.approx(expected, rel=1e-10)
            step = 1e-6
            numerical = [(pareto_nbd_objective(theta + step * e, data, penalizer)[0]
                          - pareto_nbd_objective(theta - step * e, data, penalizer)[0]) / (2 * step) for e in np.eye(4)]
            np.testing.assert_allclose(gradient, numerical, rtol=1e-6, atol=1e-8)


def _tail_by_adaptive_quadrature(pa: float, qb: float, alpha: float, beta: float, t: float) -> float:
    """log of the integral from t to infinity of (alpha+tau)^-pa (beta+tau)^-qb, by QUADPACK in y = log(min + tau),
    split at the kink log|alpha - beta| and at growing distances beyond."""
    low = min(alpha, beta)
    top = -pa * np.log(alpha + t) - qb * np.log(beta + t)

    def integrand(y: float) -> float:
        log_a, log_b = np.logaddexp(np.log(alpha - low + 1e-300), y), np.logaddexp(np.log(beta - low + 1e-300), y)
        return float(np.exp(y - pa * log_a - qb * log_b - top))

    edges = [np.log(low + t)]
    if abs(alpha - beta) > 0 and np.log(abs(alpha - beta)) > edges[0]:
        edges.append(np.log(abs(alpha - beta)))
    for width in (1e-3, 1e-2, 0.1, 1, 10, 100, 1e3, 1e4):
        edges.append(edges[-1] + width)
    total = sum(quad(integrand, lo, hi, epsabs=0, epsrel=1e-13, limit=500)[0] for lo, hi in zip(edges, edges[1:]))
    return float(np.log(total) + top)


def test_pareto_nbd_integral_matches_adaptive_quadrature() -> None:
    """The tanh-sinh pieces against QUADPACK: rates within a factor 20 of each other (real fits) to 1e-10, and far
    apart, frequent buyers and tiny or huge dropout (degenerate fits) to 1e-8."""
    rng = np.random.default_rng(7)
    for spread, tolerance in ((3.0, 1e-10), (12.0, 1e-8)):
        for _ in range(150):
            r, s = np.exp(rng.uniform(-3, 2, 2))
            x = float(rng.choice([0, 1, 2, 5, 20, 100]))
            alpha = float(np.exp(rng.uniform(-4, 3)))
            beta = float(alpha * np.exp(rng.uniform(-spread, spread)))
            t = float(rng.choice([0.0, rng.uniform(0, 1)]))
            ours = tails(np.array([r + x]), np.array([s + 1]), alpha, beta, np.array([t])).log_value[0]
            reference = _tail_by_adaptive_quadrature(r + x, s + 1, alpha, beta, t)
            assert ours == pytest.approx(reference, rel=tolerance, abs=tolerance), (r, s, x, alpha, beta, t)


def test_pareto_nbd_likelihood_stays_finite_where_lifetimes_overflows() -> None:
    """A frequent buyer (x = 400) with the dropout scale far above the purchase scale: lifetimes' 2F1 gives inf/NaN,
    ours the integral's value."""
    params = np.array([0.9, 0.01, 0.7, 40.0])
    x, recency, age = np.array([400]), np.array([0.6]), np.array([1.0])
    with np.errstate(all="ignore"):
        theirs = ParetoNBDFitter._conditional_log_likelihood(params, x, recency, age)
    assert not np.isfinite(theirs).all()
    value, gradient = pareto_nbd_objective(np.log(params), ParetoNbdData.from_rows(x, recency, age, np.ones(1)), 0.0)
    assert np.isfinite(value) and np.isfinite(gradient).all()
