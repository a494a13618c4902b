"""Per-customer CLV outputs from fitted BG/NBD + Gamma-Gamma parameters: fast, and exactly lifetimes' formulas.

For each customer (RFM in days): ``expected_purchases`` over the horizon (BG/NBD eq. 10),
``p_alive`` (Fader, Hardie & Lee 2008), ``expected_order_value`` (Gamma-Gamma eq. 5),
``clv`` (discounted) and ``segment``.

Discounted CLV follows lifetimes' ``GammaGammaFitter.customer_lifetime_value`` for daily data: the
horizon is cut into 30-day periods (lifetimes' month for ``freq="D"``), the expected purchases of each
period are valued at the expected order value and discounted at the period's end; an annual rate
``d`` becomes ``(1 + d) ** (30 / 365) - 1`` per period, so period ``i`` is discounted by
``(1 + d) ** (30 i / 365)``. A horizon that is not a multiple of 30 days ends with a shorter period
discounted at the horizon. With a 360-day horizon this equals lifetimes' function with ``time=12``
and that monthly rate (a test holds them together). Speed: the cumulative expectation at each period
end is computed once, and its hypergeometric part only once per distinct (frequency, T).

Segments (every customer gets exactly one, first rule that matches wins), from P(alive) and the
customer's value: CLV at the model's own horizon and discount rate (discounted expected purchases
when the model has no order values), compared with cut-offs fixed at training time on the
calibration customers (20th, 50th and 80th percentile of that value):

1. ``lost``: P(alive) < 0.2, or value below the 20th percentile;
2. ``at_risk``: P(alive) < 0.5 (still worth something: win them back);
3. ``champions``: value at or above the 80th percentile;
4. ``loyal``: value at or above the median;
5. ``promising``: the rest (alive, below-median value so far: nurture).

BG/NBD gives one-time buyers P(alive) = 1 whatever their age; rule 1's value cut-off is what moves
long-dormant one-time buyers to ``lost``. The segment does not depend on the horizon a caller asks for.

References
----------
Fader, P. S., Hardie, B. G. S., & Lee, K. L. (2005). "Counting Your Customers" the Easy Way.
Fader, P. S., Hardie, B. G. S., & Shang, J. (2008/2019). Computing P(alive) using the BG/NBD model.
http://www.brucehardie.com/notes/021/
Fader, P. S., & Hardie, B. G. S. (2013). The Gamma-Gamma Model of Monetary Value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import expit, hyp2f1

from features.crm.rows import check_rfm
from features.errors import InvalidInput
from features.rfm import days_per_unit
from training.clv.fit import BgNbdParameters, GammaGammaParameters

SEGMENTS: tuple[str, ...] = ("champions", "loyal", "promising", "at_risk", "lost")
DAYS_PER_DISCOUNT_PERIOD = 30
DAYS_PER_YEAR = 365
INPUT_COLUMNS: tuple[str, ...] = ("customer_id", "frequency", "recency_days", "age_days", "monetary_value")
"""What the model takes per customer: RFM in days (``age_days`` is T, first purchase to now)."""
OUTPUT_COLUMNS: tuple[str, ...] = ("expected_purchases", "p_alive", "expected_order_value", "clv", "segment")
"""What :func:`predict_clv` returns per customer, after ``customer_id``."""


@dataclass(frozen=True)
class SegmentRule:
    """Cut-offs of the segment rule (see the module docstring)."""

    p_alive_lost: float = 0.2
    p_alive_at_risk: float = 0.5
    value_lost: float = 0.0
    value_loyal: float = 0.0
    value_champions: float = 0.0


@dataclass(frozen=True)
class CLVParameters:
    """Everything a fitted CLV model is: population parameters, defaults and the values fixed at training."""

    time_unit: str
    bgnbd: BgNbdParameters
    gamma_gamma: GammaGammaParameters | None
    horizon_days: int = 365
    discount_rate: float = 0.10
    segment_rule: SegmentRule = SegmentRule()
    new_customer_value_overall: float = float("nan")
    new_customer_value_by_channel: dict[str, float] = field(default_factory=dict)


def validate_customers(customers: pd.DataFrame) -> None:
    """Raise ``InvalidInput`` naming the field and rows when the RFM-in-days input cannot be scored.

    The RFM rules of training (``features.crm.rows.check_rfm``) on ``frequency``, ``recency_days``,
    ``age_days`` (T) and ``monetary_value``.
    """
    check_rfm(customers, "customers", "nothing was scored", recency="recency_days", age="age_days")


def _distinct(x: np.ndarray, age: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (frequency, T) pairs and the index of each customer's pair."""
    x_values, x_code = np.unique(x, return_inverse=True)
    t_values, t_code = np.unique(age, return_inverse=True)
    key = x_code.astype(np.int64) * len(t_values) + t_code
    keys, inverse = np.unique(key, return_inverse=True)
    return x_values[keys // len(t_values)], t_values[keys % len(t_values)], inverse


def _cumulative_numerator(bg: BgNbdParameters, x: np.ndarray, age: np.ndarray, t: float) -> np.ndarray:
    """The t-dependent part of BG/NBD's conditional expectation (eq. 10), as lifetimes computes it."""
    r, alpha, a, b = bg.r, bg.alpha, bg.a, bg.b
    _a = r + x
    _b = b + x
    _c = a + b + x - 1
    _z = t / (alpha + age + t)
    with np.errstate(divide="ignore", invalid="ignore"):
        ln_hyp = np.log(hyp2f1(_a, _b, _c, _z))
        infinite = np.isinf(ln_hyp)
        if infinite.any():
            alt = np.log(hyp2f1(_c - _a, _c - _b, _c, _z)[infinite]) + (_c - _a - _b)[infinite] * np.log(1 - _z[infinite])
            ln_hyp[infinite] = alt
    first_term = (a + b + x - 1) / (a - 1)
    second_term = 1 - np.exp(ln_hyp + (r + x) * np.log((alpha + age) / (alpha + t + age)))
    return first_term * second_term


def period_ends_days(horizon_days: float) -> np.ndarray:
    """Ends of the discounting periods: every 30 days, and the horizon itself."""
    ends = np.arange(DAYS_PER_DISCOUNT_PERIOD, horizon_days, DAYS_PER_DISCOUNT_PERIOD, dtype="float64")
    return np.append(ends, float(horizon_days)) if horizon_days > 0 else np.array([], dtype="float64")


def _purchases_and_discounted(
    bg: BgNbdParameters, unit_days: int, x: np.ndarray, recency: np.ndarray, age: np.ndarray,
    horizon_days: float, discount_rate: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Expected purchases over the horizon, and the same discounted period by period."""
    denominator = 1 + (x > 0) * (bg.a / (bg.b + x - 1)) * ((bg.alpha + age) / (bg.alpha + recency)) ** (bg.r + x)
    ux, uage, inverse = _distinct(x, age)
    previous = np.zeros_like(x)
    discounted = np.zeros_like(x)
    for end_days in period_ends_days(horizon_days):
        cumulative = _cumulative_numerator(bg, ux, uage, end_days / unit_days)[inverse] / denominator
        discounted += (cumulative - previous) / (1 + discount_rate) ** (end_days / DAYS_PER_YEAR)
        previous = cumulative
    return previous, discounted


def probability_alive(bg: BgNbdParameters, x: np.ndarray, recency: np.ndarray, age: np.ndarray) -> np.ndarray:
    """P(alive) given (frequency, recency, T) in the model's time unit; 1 for one-time buyers."""
    log_div = (bg.r + x) * np.log((bg.alpha + age) / (bg.alpha + recency)) + np.log(bg.a / (bg.b + np.maximum(x, 1) - 1))
    return np.where(x == 0, 1.0, expit(-log_div))


def expected_order_value(gg: GammaGammaParameters | None, x: np.ndarray, monetary: np.ndarray) -> np.ndarray:
    """Gamma-Gamma's expected mean order value: a weighted mean of the customer's own and the population's."""
    if gg is None:
        return np.full_like(x, np.nan)
    individual_weight = gg.p * x / (gg.p * x + gg.q - 1)
    population_mean = gg.v * gg.p / (gg.q - 1)
    return (1 - individual_weight) * population_mean + individual_weight * monetary


def assign_segments(p_alive: np.ndarray, value: np.ndarray, rule: SegmentRule) -> np.ndarray:
    """One segment per customer from P(alive) and value, by the rule in the module docstring."""
    conditions = [
        (p_alive < rule.p_alive_lost) | (value < rule.value_lost),
        p_alive < rule.p_alive_at_risk,
        value >= rule.value_champions,
        value >= rule.value_loyal,
    ]
    return np.select(conditions, ["lost", "at_risk", "champions", "loyal"], default="promising").astype(object)


def customer_value(params: CLVParameters, discounted_purchases: np.ndarray, order_value: np.ndarray) -> np.ndarray:
    """The value segments rank by: CLV, or discounted expected purchases for a model without order values."""
    return discounted_purchases if params.gamma_gamma is None else order_value * discounted_purchases


def segment_values(params: CLVParameters, customers: pd.DataFrame) -> np.ndarray:
    """Each customer's value as segments rank it (model horizon and rate), for RFM rows in days."""
    unit_days = days_per_unit(params.time_unit)
    x = customers["frequency"].to_numpy(dtype="float64")
    recency = customers["recency_days"].to_numpy(dtype="float64") / unit_days
    age = customers["age_days"].to_numpy(dtype="float64") / unit_days
    _, discounted = _purchases_and_discounted(params.bgnbd, unit_days, x, recency, age,
                                              params.horizon_days, params.discount_rate)
    order_value = expected_order_value(params.gamma_gamma, x, customers["monetary_value"].to_numpy(dtype="float64"))
    return customer_value(params, discounted, order_value)


def predict_clv(
    params: CLVParameters,
    customers: pd.DataFrame,
    horizon_days: float | None = None,
    discount_rate: float | None = None,
) -> pd.DataFrame:
    """Per-customer CLV outputs for RFM rows in days (``INPUT_COLUMNS``).

    Returns ``customer_id`` (when given) and ``expected_purchases``, ``p_alive``,
    ``expected_order_value``, ``clv`` (NaN for a model without order values) and ``segment``, in the
    input's row order. ``horizon_days`` and ``discount_rate`` (annual) default to the model's.
    """
    validate_customers(customers)
    horizon = float(params.horizon_days if horizon_days is None else horizon_days)
    rate = float(params.discount_rate if discount_rate is None else discount_rate)
    if not np.isfinite(horizon) or horizon < 0:
        raise InvalidInput(f"horizon_days must be a number >= 0, not {horizon_days!r}")
    if not np.isfinite(rate) or rate <= -1:
        raise InvalidInput(f"discount_rate must be an annual rate > -1 (e.g. 0.1), not {discount_rate!r}")
    unit_days = days_per_unit(params.time_unit)
    x = customers["frequency"].to_numpy(dtype="float64")
    recency = customers["recency_days"].to_numpy(dtype="float64") / unit_days
    age = customers["age_days"].to_numpy(dtype="float64") / unit_days
    monetary = customers["monetary_value"].to_numpy(dtype="float64")

    purchases, discounted = _purchases_and_discounted(params.bgnbd, unit_days, x, recency, age, horizon, rate)
    alive = probability_alive(params.bgnbd, x, recency, age)
    order_value = expected_order_value(params.gamma_gamma, x, monetary)
    clv = order_value * discounted
    if horizon == params.horizon_days and rate == params.discount_rate:
        value = customer_value(params, discounted, order_value)
    else:
        _, own_discounted = _purchases_and_discounted(
            params.bgnbd, unit_days, x, recency, age, params.horizon_days, params.discount_rate
        )
        value = customer_value(params, own_discounted, order_value)
    out = pd.DataFrame(
        {
            "expected_purchases": purchases,
            "p_alive": alive,
            "expected_order_value": order_value,
            "clv": clv,
            "segment": assign_segments(alive, value, params.segment_rule),
        },
        index=customers.index,
    )
    if "customer_id" in customers.columns:
        out.insert(0, "customer_id", customers["customer_id"].to_numpy())
    return out


def rfm_in_days(rfm: pd.DataFrame, time_unit: str) -> pd.DataFrame:
    """An RFM summary in ``time_unit`` (``frequency, recency, T``) as the model's input in days."""
    unit_days = days_per_unit(time_unit)
    out = pd.DataFrame(
        {
            "frequency": rfm["frequency"].to_numpy(dtype="int64"),
            "recency_days": rfm["recency"].to_numpy(dtype="float64") * unit_days,
            "age_days": rfm["T"].to_numpy(dtype="float64") * unit_days,
            "monetary_value": rfm["monetary_value"].to_numpy(dtype="float64") if "monetary_value" in rfm else 0.0,
        },
        index=rfm.index,
    )
    if "customer_id" in rfm.columns:
        out.insert(0, "customer_id", rfm["customer_id"].to_numpy())
    return out


def new_customer_value(params: CLVParameters, channel: str | None = None) -> float:
    """Predicted value of a new customer acquired through ``channel``; the overall value for unknown channels.

    It is the mean CLV over the model's horizon that the model predicted, at training time, for the
    calibration customers acquired through that channel (channels with too few customers are left
    out at training and fall back to the overall mean).
    """
    if channel is not None and channel in params.new_customer_value_by_channel:
        return params.new_customer_value_by_channel[channel]
    return params.new_customer_value_overall
