"""Scenario ``drift`` of the CRM simulator: the process changes at a known date, with the change as ground truth.

From the change date on (``SimulationConfig.change_at``), as set by :class:`~features.simulate.config.Drift`:
one channel's leads convert less, a new campaign of that channel and a new country appear, customers
acquired from then on churn faster, and what predicts conversion changes: leads created from then on convert
by a new propensity shown only by some behaviour (webinar attendance, content downloads), while the rest of
their behaviour (demo requests, pricing-page views...) follows their interest and converts nobody. In scenario ``stationary`` every function here is the identity, so a
stationary CRM is bit-identical to one written before drift existed.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from features.errors import InvalidInput
from features.simulate.config import Campaign, SimulationConfig

TRUTH_DRIFT_COLUMNS: tuple[str, ...] = ("change", "scenario", "change_date", "subject", "factor", "description")


def change_seconds(config: SimulationConfig) -> float:
    """Seconds from the timeline's start to the change (infinite in scenario ``stationary``)."""
    if config.change_at is None:
        return np.inf
    return (config.change_at - config.starts_at).total_seconds()


def drifted(config: SimulationConfig, countries: tuple[str, ...]) -> SimulationConfig:
    """``config`` with the drift's new campaign added to its channel from the change date on.

    ``countries`` are the simulator's usual countries: the drift's country must be new, like its campaign.
    """
    if config.change_at is None:
        return config
    drift = config.drift
    channels = {c.name: c for c in config.channels}
    channel = channels.get(drift.channel)
    if channel is None or not channel.campaigns:
        raise InvalidInput(f"drift: channel {drift.channel!r} must be one of the campaign-driven channels "
                           f"{[c.name for c in config.channels if c.campaigns]}")
    if drift.campaign in {k.name for c in config.channels for k in c.campaigns} or drift.campaign_weight <= 0:
        raise InvalidInput(f"drift: campaign {drift.campaign!r} must be new and have a weight > 0")
    intents = {name for name, _ in config.conversion.activity_effects}
    if not drift.signals or not set(drift.signals) <= intents or set(drift.signals) == intents:
        raise InvalidInput(f"drift: signals {list(drift.signals)} must be some, not all, of the intent types "
                           f"{sorted(intents)}")
    if drift.country in countries:
        raise InvalidInput(f"drift: country {drift.country!r} must be new, not one of {list(countries)}")
    starts = (config.change_at - config.starts_at).total_seconds() / 86_400 / config.timeline_days
    campaign = Campaign(drift.campaign, drift.campaign_weight, ((starts, 1.0),))
    grown = replace(channel, campaigns=(*channel.campaigns, campaign))
    return replace(config, channels=tuple(grown if c is channel else c for c in config.channels))


def junk_leads(config: SimulationConfig, channel: np.ndarray, created: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
    """Which leads (channel code, creation seconds) are junk: a share ``1 - conversion_factor`` of the drift
    channel's leads created from the change on. Draws nothing in scenario ``stationary``."""
    if config.change_at is None:
        return np.zeros(len(created), dtype=bool)
    names = [c.name for c in config.channels]
    hit = (channel == names.index(config.drift.channel)) & (created >= change_seconds(config))
    return hit & (rng.random(len(created)) >= config.drift.conversion_factor)


def rewire(config: SimulationConfig, created: np.ndarray, interest: np.ndarray, engagement: np.ndarray,
           junk: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per lead (creation seconds, interest, engagement, junk): the propensity that drives conversion and the
    engagement of the drift's signal events. Leads created from the change on get a new propensity,
    independent of their interest, and signal events at ``signal_strength`` x propensity on the log scale
    (junk leads ``engagement_factor`` times as many); others keep ``interest`` and ``engagement``. Draws nothing
    in scenario ``stationary``."""
    if config.change_at is None:
        return interest, engagement
    drift = config.drift
    shifted = np.asarray(created) >= change_seconds(config)
    propensity = np.where(shifted, rng.normal(0, 1, len(shifted)), interest)
    keen = config.activity_rate * np.exp(drift.signal_strength * propensity) * np.where(junk, drift.engagement_factor, 1)
    return propensity, np.where(shifted, keen, engagement)


def signal_logits(config: SimulationConfig, created: np.ndarray, kind: np.ndarray,
                  types: tuple[str, ...]) -> np.ndarray:
    """Added to the conversion logit of each intent event (its lead's creation seconds, its type code into
    ``types``): for leads created from the change on, ``signal_boost`` for the drift's signals and -inf (it
    never converts) for other intent types; 0 otherwise."""
    if config.change_at is None:
        return np.zeros(len(kind))
    signal = np.isin(kind, [types.index(name) for name in config.drift.signals])
    shifted = np.asarray(created) >= change_seconds(config)
    return np.where(shifted, np.where(signal, config.drift.signal_boost, -np.inf), 0.0)


def dropout_factors(config: SimulationConfig, created: np.ndarray) -> np.ndarray:
    """Multiplier of the BG/NBD dropout probability per customer (acquisition seconds): the drift's factor for
    customers acquired from the change on, else 1."""
    factors = np.ones(len(created))
    factors[np.asarray(created) >= change_seconds(config)] = config.drift.dropout_factor
    return factors


def relocate(config: SimulationConfig, rows: pd.DataFrame, created_column: str,
             rng: np.random.Generator) -> pd.DataFrame:
    """``rows`` (leads or customers) with a share of those created from the change on moved to the new country."""
    if config.change_at is None or rows.empty:
        return rows
    after = (rows[created_column] >= pd.Timestamp(config.change_at)).to_numpy()
    moved = after & (rng.random(len(rows)) < config.drift.country_share)
    return rows.assign(country=np.where(moved, config.drift.country, rows["country"].to_numpy()))


def drift_truth(config: SimulationConfig) -> pd.DataFrame:
    """The ``truth_drift`` rows of ``config``: what changed at the change date and by what factor (none if
    stationary)."""
    if config.change_date is None:
        return pd.DataFrame(columns=list(TRUTH_DRIFT_COLUMNS))
    drift, day = config.drift, config.change_date.isoformat()
    rows = [
        ("conversion", drift.channel, drift.conversion_factor,
         f"Conversion rate of {drift.channel} leads created from {day} on, times this: the rest are junk that "
         "never converts."),
        ("engagement", drift.channel, drift.engagement_factor,
         f"Behaviour event rates of the junk {drift.channel} leads, times this: they look keener than they are."),
        ("new_campaign", drift.campaign, drift.campaign_weight,
         f"New {drift.channel} campaign from {day} on, never seen before; its weight among the channel's campaigns."),
        ("new_country", drift.country, drift.country_share,
         f"New country from {day} on, never seen before; its share of the leads and customers created then."),
        ("propensity", "leads", 0.0,
         f"Propensity to convert of leads created from {day} on: a new latent, correlated this much with the "
         "interest that drives their other behaviour (sessions, email, social, demo requests, pricing-page views, "
         "forms)."),
        *(("signal_gained", name, drift.signal_boost,
           f"{name} of leads created from {day} on: occurs at {drift.signal_strength:g} x propensity on the log "
           "scale (0.5 x interest before) and carries intent: its conversion logit plus this.")
          for name in drift.signals),
        *(("signal_lost", name, 0.0,
           f"{name} of leads created from {day} on: still follows interest, so occurs independently of the "
           "propensity, and carries no intent: its conversion chance times this.")
          for name, _ in config.conversion.activity_effects if name not in drift.signals),
        ("dropout", "customers", drift.dropout_factor,
         f"BG/NBD dropout probability of customers acquired from {day} on, times this (capped at 1)."),
    ]
    frame = pd.DataFrame(rows, columns=["change", "subject", "factor", "description"])
    return frame.assign(scenario=config.scenario, change_date=config.change_date)[list(TRUTH_DRIFT_COLUMNS)]
