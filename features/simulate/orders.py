"""Orders of simulated customers: a true BG/NBD purchase process with Gamma-Gamma order values.

References
----------
Fader, P. S., Hardie, B. G. S., & Lee, K. L. (2005). "Counting Your Customers" the Easy Way: An
Alternative to the Pareto/NBD Model. Marketing Science, 24(2), 275-284.
Fader, P. S., & Hardie, B. G. S. (2013). The Gamma-Gamma Model of Monetary Value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.simulate.config import OrderValue, PurchaseProcess, SimulationConfig


def simulate_orders(
    observation_days: np.ndarray,
    purchases: PurchaseProcess,
    order_value: OrderValue,
    rng: np.random.Generator,
    dropout_factor: np.ndarray | float = 1.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Orders of customers whose first order is at day 0 and who are watched for ``observation_days``.

    Each customer draws ``lambda ~ Gamma(r, alpha)``, ``p ~ Beta(a, b)`` and ``nu ~ Gamma(q, v)``. While
    alive, repeat orders arrive as a Poisson process with rate ``lambda`` per day; after each repeat
    order the customer drops out with probability ``p`` (never right after the first order, as in
    BG/NBD); ``dropout_factor`` (per customer) multiplies ``p``, capped at 1. Order values are
    ``Gamma(p, nu)``, rounded to cents. Orders fall strictly before the end. Times are continuous, so two orders can (rarely, at these rates) fall on the same calendar day; the
    RFM summary merges such orders, as ``lifetimes`` does.

    Returns
    -------
    orders
        ``customer`` (position in ``observation_days``), ``day`` (days since the first order, 0 for the
        first) and ``amount``, sorted by customer and day.
    customers
        Per customer: ``purchase_rate`` (lambda), ``dropout_probability`` (p), ``nu``,
        ``mean_order_value`` (order_value.p / nu), ``repeat_purchases`` (before the end),
        ``alive_at_end`` and ``dropout_day`` (NaN while alive).
    """
    horizon = np.asarray(observation_days, dtype="float64")
    n = len(horizon)
    rate = rng.gamma(purchases.r, 1.0 / purchases.alpha, n)
    dropout = np.minimum(rng.beta(purchases.a, purchases.b, n) * dropout_factor, 1.0)
    nu = rng.gamma(order_value.q, 1.0 / order_value.v, n)
    purchases_until_dropout = rng.geometric(dropout)
    # A Poisson process on [0, T] is N ~ Poisson(lambda T) uniform points, sorted; the customer makes the
    # first min(N, purchases_until_dropout) of them.
    arrivals = rng.poisson(rate * horizon)
    owner = np.repeat(np.arange(n), arrivals)
    day = rng.random(len(owner)) * horizon[owner]
    order = np.lexsort((day, owner))
    owner, day = owner[order], day[order]
    rank = np.arange(len(owner)) - np.repeat(np.cumsum(arrivals) - arrivals, arrivals)
    made = rank < purchases_until_dropout[owner]
    repeat_owner, repeat_day = owner[made], day[made]
    repeats = np.bincount(repeat_owner, minlength=n)
    alive = purchases_until_dropout > arrivals
    dropout_day = np.full(n, np.nan)
    last = np.flatnonzero(~alive)
    if len(last):
        starts = np.cumsum(repeats) - repeats
        dropout_day[last] = repeat_day[starts[last] + repeats[last] - 1]

    all_owner = np.concatenate([np.arange(n), repeat_owner])
    all_day = np.concatenate([np.zeros(n), repeat_day])
    order = np.lexsort((all_day, all_owner))
    all_owner, all_day = all_owner[order], all_day[order]
    amount = np.round(rng.gamma(order_value.p, 1.0 / nu[all_owner]), 2)
    orders = pd.DataFrame({"customer": all_owner, "day": all_day, "amount": amount})
    customers = pd.DataFrame({
        "purchase_rate": rate,
        "dropout_probability": dropout,
        "nu": nu,
        "mean_order_value": order_value.p / nu,
        "repeat_purchases": repeats,
        "alive_at_end": alive,
        "dropout_day": dropout_day,
    })
    return orders, customers


def customer_orders(
    observation_days: np.ndarray,
    acquisition_channel: np.ndarray,
    config: SimulationConfig,
    rng: np.random.Generator,
    dropout_factor: np.ndarray | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``simulate_orders`` for customers of several channels, each with its channel's purchase process
    (and each customer's ``dropout_factor``, default 1).

    Returns the same two frames, ``customer`` being the position in the inputs; channels are simulated in
    the order of ``config.channels`` so the result depends only on the inputs and the generator.
    """
    orders, truth = [], []
    positions = np.arange(len(observation_days))
    factors = np.ones(len(positions)) if dropout_factor is None else np.asarray(dropout_factor, dtype="float64")
    for channel in config.channels:
        mine = positions[acquisition_channel == channel.name]
        if not len(mine):
            continue
        channel_orders, channel_truth = simulate_orders(observation_days[mine], channel.purchases,
                                                        config.order_value, rng, factors[mine])
        channel_orders["customer"] = mine[channel_orders["customer"].to_numpy()]
        orders.append(channel_orders)
        truth.append(channel_truth.set_axis(mine))
    if not orders:
        return simulate_orders(np.zeros(0), config.channels[0].purchases, config.order_value, rng)
    all_orders = pd.concat(orders, ignore_index=True).sort_values(["customer", "day"], kind="stable")
    return all_orders.reset_index(drop=True), pd.concat(truth).sort_index()
