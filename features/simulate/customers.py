"""Simulated customers: converted leads, customers from outside the tracked leads, and their orders.

A converted lead becomes customer ``C`` + the lead's number, created when it converted and acquired by
its source channel. Customers not from tracked leads (self-serve, sales-sourced, offline) are numbered
after the leads and arrive along the same demand curve as leads. Every customer's orders follow its
acquisition channel's true BG/NBD process (``simulated_orders``), the first order at its creation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.simulate.config import SimulationConfig
from features.simulate.drift import dropout_factors
from features.simulate.leads import COUNTRIES, DAY, format_ids, id_width, to_timestamps
from features.simulate.marketing import day_lengths, demand_curve
from features.simulate.orders import customer_orders

ORDER_ID_WIDTH = 10


def customers_from_leads(leads: pd.DataFrame) -> pd.DataFrame:
    """Customer rows of the converted ``leads`` (those with a ``customer_id``)."""
    won = leads[leads["customer_id"].notna()]
    return pd.DataFrame({
        "customer_id": won["customer_id"].to_numpy(),
        "lead_id": won["lead_id"].to_numpy(),
        "created_at": won["converted_at"].to_numpy(),
        "acquisition_channel": won["source_channel"].to_numpy(),
        "country": won["country"].to_numpy(),
    })


def plan_customers(config: SimulationConfig, rng: np.random.Generator) -> np.ndarray:
    """Cumulative count, per day, of the customers not from tracked leads created up to that day."""
    demand = demand_curve(config)
    return np.cumsum(rng.multinomial(config.n_customers, demand / demand.sum()))


def other_customers(
    config: SimulationConfig, cumulative: np.ndarray, first: int, stop: int, rng: np.random.Generator
) -> pd.DataFrame:
    """Customers not from tracked leads numbered ``first .. stop - 1`` (0-based) of ``plan_customers``;
    their ids continue after the leads' numbers (``C`` + n_leads + number + 1)."""
    n = stop - first
    day = np.searchsorted(cumulative, np.arange(first, stop), side="right")
    created = np.sort(np.floor(day * DAY + rng.random(n) * day_lengths(config)[day] * DAY))
    shares = np.array([c.customer_share for c in config.channels])
    channel = rng.choice(len(shares), size=n, p=shares / shares.sum())
    weights = np.array([w for _, w in COUNTRIES])
    country = rng.choice(len(COUNTRIES), size=n, p=weights / weights.sum())
    return pd.DataFrame({
        "customer_id": format_ids("C", config.n_leads + first + 1 + np.arange(n), id_width(config)),
        "lead_id": None,
        "created_at": to_timestamps(config.starts_at, created),
        "acquisition_channel": np.array([c.name for c in config.channels], dtype=object)[channel],
        "country": np.array([c for c, _ in COUNTRIES], dtype=object)[country],
    })


def orders_of(
    customers: pd.DataFrame, config: SimulationConfig, first_order: int, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Order rows of ``customers`` (ids continue from ``first_order``) and their ``truth_customers`` rows."""
    start = config.starts_at
    created = (customers["created_at"] - pd.Timestamp(start)).dt.total_seconds().to_numpy()
    channel = customers["acquisition_channel"].to_numpy()
    orders, truth = customer_orders((config.span_seconds - created) / DAY, channel, config, rng,
                                   dropout_factors(config, created))
    owner = orders["customer"].to_numpy()
    order_rows = pd.DataFrame({
        "order_id": format_ids("O", first_order + 1 + np.arange(len(orders)), ORDER_ID_WIDTH),
        "customer_id": customers["customer_id"].to_numpy()[owner],
        "ordered_at": to_timestamps(start, created[owner] + np.floor(orders["day"].to_numpy() * DAY)),
        "amount": orders["amount"].to_numpy(),
    })
    truth_rows = pd.DataFrame({
        "customer_id": customers["customer_id"].to_numpy(),
        "lead_id": customers["lead_id"].to_numpy(),
        "acquisition_channel": channel,
        **{k: truth[k].to_numpy() for k in ("purchase_rate", "dropout_probability", "nu", "mean_order_value",
                                            "repeat_purchases", "alive_at_end")},
        "dropout_at": to_timestamps(start, created + np.floor(truth["dropout_day"].to_numpy() * DAY)),
    })
    return order_rows, truth_rows
