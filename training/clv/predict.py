"""Per-customer CLV outputs from a fitted purchase model (BG/NBD, MBG/NBD or Pareto/NBD) and Gamma-Gamma.

For each customer (RFM in days): ``expected_purchases`` over the horizon (conditional on their history),
``p_alive``, ``expected_order_value`` (Gamma-Gamma eq. 5), ``clv`` (discounted) and ``segment``.
:func:`predict_clv` is the one entry point (the API, the batch jobs and the notebook call it, through the
pyfunc); it dispatches on the purchase model (``training.clv.purchases``).

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
customers at the observation end (20th, 50th and 80th percentile of that value):

1. ``lost``: P(alive) < 0.2, or value below the 20th percentile;
2. ``at_risk``: P(alive) < 0.5 (still worth something: win them back);
3. ``promising``: a one-time buyer (no repeat purchase yet: never ``loyal`` or ``champions``, whatever
   their value; BG/NBD gives them P(alive) = 1 at any age, and without this rule the percentile cut-offs
   sorted them by age alone);
4. ``champions``: value at or above the 80th percentile;
5. ``loyal``: value at or above the median;
6. ``promising``: the rest (alive, below-median value so far: nurture).

When P(alive) carries no information (the central 98% of the customers at training within 0.05 of each
other, ``features.kpi.predictive.P_ALIVE_MIN_SPREAD``: a dropout that collapsed, as on a year of an online
retailer's transactions), rules 1 and 2 go by recency instead (``SegmentRule.basis = "recency"``):
``lost`` from the 80th percentile of days since the last purchase at training, ``at_risk`` from the 60th
(the oldest and the next fifth, as in RFM's recency quintiles); rules 3-6 are unchanged. The segment does
not depend on the horizon a caller asks for. Models saved before this rule (pyfunc format 1) keep theirs
(``SegmentRule.version = 1``: no rule 3, no recency basis), so they score as they did.

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

from features.crm.rows import check_rfm
from features.errors import InvalidInput
from features.rfm import days_per_unit
from training.clv.fit import GammaGammaParameters
from training.clv.purchases import PurchaseParameters, cumulative_purchases, probability_alive

SEGMENTS: tuple[str, ...] = ("champions", "loyal", "promising", "at_risk", "lost")
DAYS_PER_DISCOUNT_PERIOD = 30
DAYS_PER_YEAR = 365
INPUT_COLUMNS: tuple[str, ...] = ("customer_id", "frequency", "recency_days", "age_days", "monetary_value")
"""What the model takes per customer: RFM in days (``age_days`` is T, first purchase to now)."""
OUTPUT_COLUMNS: tuple[str, ...] = ("expected_purchases", "p_alive", "expected_order_value", "clv", "segment")
"""What :func:`predict_clv` returns per customer, after ``customer_id``."""


@dataclass(frozen=True)
class SegmentRule:
    """Cut-offs of the segment rule (see the module docstring).

    ``basis`` is ``"p_alive"``, or ``"recency"`` when P(alive) carries no information; the recency cut-offs
    (days since the last purchase) are then fixed at training. ``version`` 1 is the rule of models saved
    before one-time buyers were kept out of ``loyal`` and ``champions``.
    """

    p_alive_lost: float = 0.2
    p_alive_at_risk: float = 0.5
    value_lost: float = 0.0
    value_loyal: float = 0.0
    value_champions: float = 0.0
    basis: str = "p_alive"
    recency_at_risk_days: float = float("inf")
    recency_lost_days: float = float("inf")
    version: int = 2


@dataclass(frozen=True)
class CLVParameters:
    """Everything a fitted CLV model is: population parameters, defaults and the values fixed at training.

    ``purchases`` is the purchase model (BG/NBD, MBG/NBD or Pareto/NBD parameters); ``warnings`` what its
    training found doubtful (a degenerate fit, Gamma-Gamma's assumption, segments by recency), passed on
    by whoever scores with it.
    """

    time_unit: str
    purchases: PurchaseParameters
    gamma_gamma: GammaGammaParameters | None
    horizon_days: int = 365
    discount_rate: float = 0.10
    segment_rule: SegmentRule = SegmentRule()
    new_customer_value_overall: float = float("nan")
    new_customer_value_by_channel: dict[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def model(self) -> str:
        """The purchase model's short name: ``bgnbd``, ``mbgnbd`` or ``pnbd``."""
        return self.purchases.kind


def validate_customers(customers: pd.DataFrame) -> None:
    """Raise ``InvalidInput`` naming the field and rows when the RFM-in-days input cannot be scored.

    The RFM rules of training (``features.crm.rows.check_rfm``) on ``frequency``, ``recency_days``,
    ``age_days`` (T) and ``monetary_value``.
    """
    check_rfm(customers, "customers", "nothing was scored", recency="recency_days", age="age_days")


def period_ends_days(horizon_days: float) -> np.ndarray:
    """Ends of the discounting periods: every 30 days, and the horizon itself."""
    ends = np.arange(DAYS_PER_DISCOUNT_PERIOD, horizon_days, DAYS_PER_DISCOUNT_PERIOD, dtype="float64")
    return np.append(ends, float(horizon_days)) if horizon_days > 0 else np.array([], dtype="float64")


def _purchases_and_discounted(
    model: PurchaseParameters, unit_days: int, x: np.ndarray, recency: np.ndarray, age: np.ndarray,
    horizon_days: float, discount_rate: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Expected purchases over the horizon, and the same discounted period by period."""
    cumulative_at = cumulative_purchases(model, x, recency, age)
    previous = np.zeros_like(x)
    discounted = np.zeros_like(x)
    for end_days in period_ends_days(horizon_days):
        cumulative = cumulative_at(end_days / unit_days)
        discounted += (cumulative - previous) / (1 + discount_rate) ** (end_days / DAYS_PER_YEAR)
        previous = cumulative
    return previous, discounted


def expected_order_value(gg: GammaGammaParameters | None, x: np.ndarray, monetary: np.ndarray) -> np.ndarray:
    """Gamma-Gamma's expected mean order value: a weighted mean of the customer's own and the population's."""
    if gg is None:
        return np.full_like(x, np.nan)
    individual_weight = gg.p * x / (gg.p * x + gg.q - 1)
    population_mean = gg.v * gg.p / (gg.q - 1)
    return (1 - individual_weight) * population_mean + individual_weight * monetary


def assign_segments(p_alive: np.ndarray, value: np.ndarray, rule: SegmentRule, frequency: np.ndarray,
                    days_since_last: np.ndarray) -> np.ndarray:
    """One segment per customer from P(alive) (or recency), value and frequency, by the rule in the module
    docstring."""
    if rule.version == 1:
        conditions = [
            (p_alive < rule.p_alive_lost) | (value < rule.value_lost),
            p_alive < rule.p_alive_at_risk,
            value >= rule.value_champions,
            value >= rule.value_loyal,
        ]
        return np.select(conditions, ["lost", "at_risk", "champions", "loyal"], default="promising").astype(object)
    if rule.basis == "recency":
        gone = [days_since_last >= rule.recency_lost_days, days_since_last >= rule.recency_at_risk_days]
    else:
        gone = [(p_alive < rule.p_alive_lost) | (value < rule.value_lost), p_alive < rule.p_alive_at_risk]
    conditions = [*gone, frequency == 0, value >= rule.value_champions, value >= rule.value_loyal]
    return np.select(conditions, ["lost", "at_risk", "promising", "champions", "loyal"],
                     default="promising").astype(object)


def days_since_last_purchase(customers: pd.DataFrame) -> np.ndarray:
    """Days from each customer's last purchase to now (T - recency), for RFM rows in days."""
    return customers["age_days"].to_numpy(dtype="float64") - customers["recency_days"].to_numpy(dtype="float64")


def customer_value(params: CLVParameters, discounted_purchases: np.ndarray, order_value: np.ndarray) -> np.ndarray:
    """The value segments rank by: CLV, or discounted expected purchases for a model without order values."""
    return discounted_purchases if params.gamma_gamma is None else order_value * discounted_purchases


def segment_values(params: CLVParameters, customers: pd.DataFrame) -> np.ndarray:
    """Each customer's value as segments rank it (model horizon and rate), for RFM rows in days."""
    unit_days = days_per_unit(params.time_unit)
    x = customers["frequency"].to_numpy(dtype="float64")
    recency = customers["recency_days"].to_numpy(dtype="float64") / unit_days
    age = customers["age_days"].to_numpy(dtype="float64") / unit_days
    _, discounted = _purchases_and_discounted(params.purchases, unit_days, x, recency, age,
                                              params.horizon_days, params.discount_rate)
    order_value = expected_order_value(params.gamma_gamma, x, customers["monetary_value"].to_numpy(dtype="float64"))
    return customer_value(params, discounted, order_value)


def expected_purchases(params: CLVParameters, customers: pd.DataFrame, horizon_days: float) -> np.ndarray:
    """Expected repeat purchases over ``horizon_days`` for RFM rows in days: :func:`predict_clv`'s
    ``expected_purchases``, the same numbers, without the rest (for holdout evaluations)."""
    unit_days = days_per_unit(params.time_unit)
    x = customers["frequency"].to_numpy(dtype="float64")
    recency = customers["recency_days"].to_numpy(dtype="float64") / unit_days
    age = customers["age_days"].to_numpy(dtype="float64") / unit_days
    if horizon_days <= 0:
        return np.zeros_like(x)
    return cumulative_purchases(params.purchases, x, recency, age)(float(horizon_days) / unit_days)


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

    purchases, discounted = _purchases_and_discounted(params.purchases, unit_days, x, recency, age, horizon, rate)
    alive = probability_alive(params.purchases, x, recency, age)
    order_value = expected_order_value(params.gamma_gamma, x, monetary)
    clv = order_value * discounted
    if horizon == params.horizon_days and rate == params.discount_rate:
        value = customer_value(params, discounted, order_value)
    else:
        _, own_discounted = _purchases_and_discounted(
            params.purchases, unit_days, x, recency, age, params.horizon_days, params.discount_rate
        )
        value = customer_value(params, own_discounted, order_value)
    out = pd.DataFrame(
        {
            "expected_purchases": purchases,
            "p_alive": alive,
            "expected_order_value": order_value,
            "clv": clv,
            "segment": assign_segments(alive, value, params.segment_rule, x, days_since_last_purchase(customers)),
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
