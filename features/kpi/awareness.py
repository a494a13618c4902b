"""Brand awareness proxies from what the CRM holds: branded search, direct traffic and social reach, and their trend.

A CRM does not measure awareness (that takes surveys or search-volume data); these are *proxies* that tend to move
with it. For the window ``[start, end)`` (spend by ``date``, leads by ``created_at``):

- *Search channels* are the channels whose name matches :data:`SEARCH_PATTERN` (``paid_search``,
  ``organic_search``); a *brand campaign* is one whose name matches the brand pattern (default
  :data:`BRAND_PATTERN`, a regular expression matched anywhere in the name, case-insensitive).
- Branded-search share of search clicks: ``marketing_spend.clicks`` of search channels' brand campaigns / clicks of
  all search channels. Branded-search share of search leads: leads from a search channel whose ``campaign`` is a
  brand campaign / leads from search channels. Organic search carries no query or campaign, so its clicks and
  leads count as non-brand: both shares are lower bounds of the branded part of search.
- Direct-traffic share: leads whose source channel is :data:`DIRECT_CHANNEL` (they came without a referrer,
  typing the address or from a bookmark) / all leads. Leads, not sessions: the CRM records no referrer per session.
- Social reach: ``marketing_spend.impressions`` of channels matching :data:`SOCIAL_PATTERN` (ad impressions, not
  distinct people).

Each proxy is NaN (no data) when its denominator is empty, e.g. a CRM without search or social spend.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.errors import InvalidInput
from features.kpi.tables import KpiTables, Window, grain_code, period_starts

BRAND_PATTERN = "brand"
"""Default brand-campaign pattern: a regular expression found anywhere in the campaign name, case-insensitive."""

SEARCH_PATTERN = "search"
"""Channels whose name holds this (case-insensitive) are search channels."""

SOCIAL_PATTERN = "social"
"""Channels whose name holds this (case-insensitive) are social channels; their impressions are social reach."""

DIRECT_CHANNEL = "direct"
"""The source channel of leads that came without a referrer."""

BRAND_AWARENESS_DEFINITION = (
    "Brand awareness (proxies): the CRM does not measure awareness, so these figures only tend to move with it. "
    "Branded-search share: clicks (marketing_spend) and leads of search-channel campaigns whose name matches the "
    "brand pattern (default 'brand', case-insensitive) / all search clicks and leads; organic search has no "
    "campaign and counts as non-brand, so the shares are lower bounds. Direct-traffic share: leads whose source "
    "channel is 'direct' / all leads created. Social reach: ad impressions of social channels (not distinct people). "
    "The trend shows each per week, month or quarter; the trend per period is the least-squares slope over the "
    "complete periods."
)
"""The glossary text of the brand awareness proxies."""

_COUNTS = ("search_clicks_branded", "search_clicks_total", "search_leads_branded", "search_leads_total",
           "direct_leads", "leads_total", "social_reach_impressions")
_SHARES = {
    "search_click_share": ("search_clicks_branded", "search_clicks_total"),
    "search_lead_share": ("search_leads_branded", "search_leads_total"),
    "direct_lead_share": ("direct_leads", "leads_total"),
}
_TRENDED = ("search_click_share", "search_lead_share", "direct_lead_share", "social_reach_impressions")
TREND_COLUMNS: tuple[str, ...] = ("period", "complete", *_COUNTS, *_SHARES)
"""Columns of :attr:`BrandAwareness.trend`: the totals' names without ``brand_``, per period."""


@dataclass(frozen=True)
class BrandAwareness:
    """Brand awareness proxies over a window: ``totals`` (keys ``brand_*``), ``trend`` per period, and warnings."""

    totals: dict[str, float]
    trend: pd.DataFrame
    brand_pattern: str
    warnings: tuple[str, ...] = ()


def brand_campaigns(names: pd.Series, brand_pattern: str = BRAND_PATTERN) -> pd.Series:
    """Whether each campaign name matches ``brand_pattern`` (regex, case-insensitive); missing names do not."""
    try:
        compiled = re.compile(brand_pattern, re.IGNORECASE)
    except re.error as error:
        raise InvalidInput(f"brand pattern {brand_pattern!r} is not a regular expression: {error}") from None
    text = names.astype("object")
    return text.map(lambda name: isinstance(name, str) and compiled.search(name) is not None).astype(bool)


def _matches(names: pd.Series, pattern: str) -> pd.Series:
    return names.astype("object").fillna("").astype(str).str.contains(pattern, case=False, regex=False)


def _periods(times: pd.Series, grain: str) -> np.ndarray:
    return times.dt.to_period(grain_code(grain)).dt.start_time.to_numpy(dtype="datetime64[ns]")


def _spend_counts(crm: KpiTables, window: Window, grain: str, brand_pattern: str) -> pd.DataFrame:
    spend = crm.marketing_spend.reindex(columns=["date", "channel", "campaign", "impressions", "clicks"])
    spend = spend[window.contains(spend["date"]).to_numpy()]
    search = _matches(spend["channel"], SEARCH_PATTERN).to_numpy()
    social = _matches(spend["channel"], SOCIAL_PATTERN).to_numpy()
    branded = search & brand_campaigns(spend["campaign"], brand_pattern).to_numpy()
    clicks = pd.to_numeric(spend["clicks"]).to_numpy(dtype="float64")
    impressions = pd.to_numeric(spend["impressions"]).to_numpy(dtype="float64")
    frame = pd.DataFrame({
        "period": _periods(spend["date"], grain),
        "search_clicks_branded": np.where(branded, clicks, 0.0),
        "search_clicks_total": np.where(search, clicks, 0.0),
        "social_reach_impressions": np.where(social, impressions, 0.0),
        "social_rows": social.astype("float64"),
    })
    return frame.groupby("period").sum()


def _lead_counts(crm: KpiTables, window: Window, grain: str, brand_pattern: str) -> pd.DataFrame:
    leads = crm.leads.reindex(columns=["created_at", "source_channel", "campaign"])
    leads = leads[window.contains(leads["created_at"]).to_numpy()]
    search = _matches(leads["source_channel"], SEARCH_PATTERN).to_numpy()
    branded = search & brand_campaigns(leads["campaign"], brand_pattern).to_numpy()
    direct = (leads["source_channel"].astype("object") == DIRECT_CHANNEL).to_numpy()
    frame = pd.DataFrame({
        "period": _periods(leads["created_at"], grain),
        "search_leads_branded": branded.astype("float64"),
        "search_leads_total": search.astype("float64"),
        "direct_leads": direct.astype("float64"),
        "leads_total": 1.0,
    })
    return frame.groupby("period").sum()


def _with_shares(counts: pd.DataFrame, social: bool) -> pd.DataFrame:
    """``counts`` with the shares; social reach is NaN throughout without ``social`` spend rows in the window."""
    out = counts.copy()
    for share, (part, whole) in _SHARES.items():
        total = out[whole].to_numpy(dtype="float64")
        out[share] = np.where(total > 0, out[part].to_numpy(dtype="float64") / np.where(total > 0, total, 1.0), np.nan)
    if not social:
        out["social_reach_impressions"] = np.nan
    return out


def _slope(values: pd.Series) -> float:
    """Least-squares change per period over the finite values (NaN with fewer than two)."""
    y = values.to_numpy(dtype="float64")
    x = np.arange(len(y), dtype="float64")
    finite = np.isfinite(y)
    if finite.sum() < 2:
        return float("nan")
    return float(np.polyfit(x[finite], y[finite], 1)[0])


def brand_awareness(crm: KpiTables, window: Window, grain: str, brand_pattern: str = BRAND_PATTERN) -> BrandAwareness:
    """The brand awareness proxies over ``window`` and per period of ``grain`` (week, month, quarter); see the module.

    ``totals`` holds ``brand_<name>`` for every column of :data:`TREND_COLUMNS` but the period ones, and
    ``brand_<proxy>_trend_per_period`` for the three shares and social reach (slope over the complete periods).
    """
    periods = period_starts(window, grain)
    counts = pd.concat([_spend_counts(crm, window, grain, brand_pattern),
                        _lead_counts(crm, window, grain, brand_pattern)], axis=1)
    counts = counts.reindex(periods, fill_value=0.0).fillna(0.0).rename_axis("period")
    social = bool(counts["social_rows"].sum() > 0)
    trend = _with_shares(counts, social).reset_index()
    ends = trend["period"].dt.to_period(grain_code(grain)).dt.end_time
    trend["complete"] = (trend["period"] >= window.start) & (ends < window.end)
    overall = _with_shares(counts.sum().to_frame().T, social).iloc[0]
    totals = {f"brand_{name}": float(overall[name]) for name in (*_COUNTS, *_SHARES)}
    complete = trend[trend["complete"]]
    for name in _TRENDED:
        totals[f"brand_{name}_trend_per_period"] = _slope(complete[name])
    warnings = []
    if overall["search_clicks_total"] > 0 and overall["search_clicks_branded"] == 0:
        warnings.append(f"no search campaign with clicks in the window matches the brand pattern {brand_pattern!r}; "
                        "the branded-search share is 0 (set the pattern to your brand campaigns' names)")
    return BrandAwareness(totals=totals, trend=trend[list(TREND_COLUMNS)].reset_index(drop=True),
                          brand_pattern=brand_pattern, warnings=tuple(warnings))
