"""When simulated leads arrive, through which channel and campaign, and what the marketing cost.

Lead volume per day follows one demand curve (growth over the timeline, weekday/weekend, a summer and a
year-end dip, and the last day only up to the simulation's end) switched on and off by each campaign's
active windows. The expected leads of every (day, source) cell drive both the realised lead counts (one
multinomial draw over all cells) and the day's spend (``cost_per_lead`` x expected leads), impressions
and clicks, so spend and leads agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd

from features.simulate.config import SimulationConfig

SPEND_NOISE_SD = 0.15


@dataclass(frozen=True)
class LeadSource:
    """Where a lead comes from: a channel and (for campaign-driven channels) a campaign."""

    channel: str
    campaign: str | None


@dataclass(frozen=True)
class LeadPlan:
    """Expected and realised leads per day (rows) and lead source (columns)."""

    sources: tuple[LeadSource, ...]
    expected: np.ndarray
    counts: np.ndarray

    def locate(self, first: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Day index and source index of the leads numbered ``first .. stop - 1`` (in day order)."""
        cumulative = np.cumsum(self.counts.ravel())
        cell = np.searchsorted(cumulative, np.arange(first, stop), side="right")
        return cell // len(self.sources), cell % len(self.sources)


def day_lengths(config: SimulationConfig) -> np.ndarray:
    """Each timeline day's share of a whole day: 1.0, except the day of ``end`` (up to ``end``) when it is
    not a midnight. Events of a day fall in its first ``length x 24`` hours."""
    lengths = np.ones(config.timeline_days)
    lengths[-1] = config.last_day_fraction
    return lengths


def demand_curve(config: SimulationConfig) -> np.ndarray:
    """Relative lead demand per day: linear growth, quieter weekends, August and year-end dips; the day of
    ``end`` in proportion to its part before ``end``."""
    days = config.timeline_days
    calendar = pd.date_range(config.start, periods=days, freq="D")
    trend = 1.0 + config.lead_growth * np.arange(days) / days
    weekday = np.where(calendar.dayofweek >= 5, 0.35, 1.0)
    season = 1.0 + 0.1 * np.cos(2 * np.pi * (calendar.dayofyear.to_numpy() - 60) / 365.25)
    summer = np.where(calendar.month == 8, 0.8, 1.0)
    holidays = np.where(((calendar.month == 12) & (calendar.day >= 22)) | ((calendar.month == 1) & (calendar.day <= 2)),
                        0.5, 1.0)
    return trend * weekday * season * summer * holidays * day_lengths(config)


def _active_days(windows: tuple[tuple[float, float], ...], days: int) -> np.ndarray:
    on = np.zeros(days, dtype=bool)
    position = (np.arange(days) + 0.5) / days
    for start, stop in windows:
        on |= (position >= start) & (position < stop)
    return on


def lead_sources(config: SimulationConfig) -> tuple[tuple[LeadSource, ...], np.ndarray]:
    """Every lead source with its expected share of leads per day (columns sum to the channel shares)."""
    demand = demand_curve(config)
    total_share = sum(c.lead_share for c in config.channels)
    sources: list[LeadSource] = []
    columns: list[np.ndarray] = []
    for channel in config.channels:
        share = channel.lead_share / total_share
        if not channel.campaigns:
            sources.append(LeadSource(channel.name, None))
            columns.append(share * demand / demand.sum())
            continue
        weights = sum(k.weight for k in channel.campaigns)
        for campaign in channel.campaigns:
            shape = demand * _active_days(campaign.active, config.timeline_days)
            if shape.sum() == 0:  # a window shorter than a day still runs on its nearest day
                shape[min(int(campaign.active[0][0] * config.timeline_days), config.timeline_days - 1)] = 1.0
            sources.append(LeadSource(channel.name, campaign.name))
            columns.append(share * campaign.weight / weights * shape / shape.sum())
    return tuple(sources), np.column_stack(columns)


def plan_leads(config: SimulationConfig, rng: np.random.Generator) -> LeadPlan:
    """Realised lead counts per (day, source): one multinomial draw of ``n_leads`` over all cells."""
    sources, shares = lead_sources(config)
    expected = config.n_leads * shares
    counts = rng.multinomial(config.n_leads, (shares / shares.sum()).ravel()).reshape(shares.shape)
    return LeadPlan(sources, expected, counts)


def marketing_spend(config: SimulationConfig, plan: LeadPlan, rng: np.random.Generator) -> pd.DataFrame:
    """Daily spend, impressions and clicks per channel and campaign ('' for channel-level spend).

    Spend = expected leads x cost per lead x lognormal noise; clicks ~ expected leads / lead-per-click;
    impressions ~ clicks / click-through rate. Channels with no cost per lead (direct) have no rows.
    """
    channels = {c.name: c for c in config.channels}
    days = np.array([config.start + timedelta(days=d) for d in range(config.timeline_days)], dtype=object)
    frames = []
    for column, source in enumerate(plan.sources):
        channel = channels[source.channel]
        expected = plan.expected[:, column]
        on = expected > 0
        if channel.cost_per_lead <= 0 or not on.any():
            continue
        leads = expected[on]
        noise = rng.lognormal(-SPEND_NOISE_SD**2 / 2, SPEND_NOISE_SD, len(leads))
        clicks_expected = leads / channel.lead_per_click
        impressions = rng.poisson(clicks_expected / channel.click_through_rate)
        clicks = rng.binomial(impressions, channel.click_through_rate)
        frames.append(pd.DataFrame({
            "date": days[on],
            "channel": source.channel,
            "campaign": source.campaign or "",
            "spend": np.round(leads * channel.cost_per_lead * noise, 2),
            "impressions": impressions.astype("int64"),
            "clicks": clicks.astype("int64"),
        }))
    columns = ["date", "channel", "campaign", "spend", "impressions", "clicks"]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]
