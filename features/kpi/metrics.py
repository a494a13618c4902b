"""The KPI tables: every metric of :mod:`features.kpi.definitions` per channel, campaign or segment, and over time.

Computed from :class:`features.kpi.tables.KpiTables` for one window; the definitions module says what each
figure counts (cohort, acquisition and activity KPIs) and how a customer's channel is found.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import pandas as pd

from features.crm.schema import ACTIVITY_TYPES
from features.errors import InvalidInput
from features.kpi.definitions import (
    CONTENT_WEIGHTS,
    DIMENSIONS,
    MICRO_CONVERSIONS,
    NO_CAMPAIGN,
    PASSIVE_ACTIVITIES,
    SNAPSHOT_METRICS,
    UNKNOWN_CHANNEL,
    UNSCORED,
)
from features.kpi.tables import KpiTables, Window, grain_code, period_starts


def _period(times: pd.Series, grain: str | None, window: Window) -> np.ndarray:
    """Start of the period of each timestamp (all the window's start without a grain), vectorised."""
    stamps = times.to_numpy(dtype="datetime64[ns]")
    if grain is None:
        return np.full(len(stamps), window.start.to_datetime64(), dtype="datetime64[ns]")
    grain_code(grain)
    if grain == "week":
        days = stamps.astype("datetime64[D]")
        monday_based = (days.astype("int64") + 3) % 7  # 1970-01-01 was a Thursday
        return (days - monday_based.astype("timedelta64[D]")).astype("datetime64[ns]")
    months = stamps.astype("datetime64[M]")
    if grain == "quarter":
        index = months.astype("int64")
        months = (index - index % 3).astype("datetime64[M]")
    return months.astype("datetime64[ns]")


def _campaign(values: pd.Series) -> np.ndarray:
    filled = values.astype("object").where(values.notna(), "").to_numpy()
    return np.where(filled == "", NO_CAMPAIGN, filled).astype(object)


def _take(values: np.ndarray, rows: np.ndarray, missing: str) -> np.ndarray:
    """``values[rows]`` with ``missing`` where the row is -1."""
    if not len(values):
        return np.full(len(rows), missing, dtype=object)
    return np.where(rows >= 0, values[np.maximum(rows, 0)], missing).astype(object)


def lead_keys(crm: KpiTables, dimension: str) -> np.ndarray | None:
    """Each lead's scope value (its channel or campaign), row for row; None where leads do not apply."""
    leads = crm.leads
    if dimension == "all":
        return np.full(len(leads), "all", dtype=object)
    if dimension == "channel":
        return leads["source_channel"].astype("object").fillna(UNKNOWN_CHANNEL).to_numpy()
    if dimension == "campaign":
        return _campaign(leads["campaign"])
    return None


def customer_keys(crm: KpiTables, dimension: str) -> np.ndarray:
    """Each customer's scope value, row for row: acquisition channel (else its lead's), lead campaign or segment."""
    customers = crm.customers
    if dimension == "all":
        return np.full(len(customers), "all", dtype=object)
    if dimension == "channel":
        acquired = customers["acquisition_channel"].astype("object").to_numpy()
        from_lead = _take(lead_keys(crm, "channel"), crm.customer_lead_rows, UNKNOWN_CHANNEL)
        return np.where(pd.isna(acquired), from_lead, acquired).astype(object)
    if dimension == "campaign":
        return _take(_campaign(crm.leads["campaign"]), crm.customer_lead_rows, NO_CAMPAIGN)
    segments = crm.customer_scores.set_index("customer_id")["segment"]
    return customers["customer_id"].map(segments).astype("object").fillna(UNSCORED).to_numpy()


def _spend_keys(spend: pd.DataFrame, dimension: str) -> np.ndarray | None:
    if dimension == "all":
        return np.full(len(spend), "all", dtype=object)
    if dimension == "channel":
        return spend["channel"].astype("object").fillna(UNKNOWN_CHANNEL).to_numpy()
    if dimension == "campaign":
        return _campaign(spend["campaign"])
    return None


_BY = ["key", "period"]


def _grouped(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    if frame.empty:
        empty = pd.DataFrame(columns=[*_BY, *columns])
        return empty.astype({c: "float64" for c in columns}).set_index(_BY)
    return frame.groupby(_BY, sort=False)[columns].sum()


def _lead_part(crm: KpiTables, window: Window, keys: np.ndarray, grain: str | None) -> pd.DataFrame:
    inside = window.contains(crm.leads["created_at"]).to_numpy()
    leads = crm.leads[inside]
    converted = leads["converted_at"].notna() & (leads["converted_at"] < window.end)
    frame = pd.DataFrame({
        "key": keys[inside],
        "period": _period(leads["created_at"], grain, window),
        "leads": 1.0,
        "conversions": converted.to_numpy(dtype="float64"),
    })
    return _grouped(frame, ["leads", "conversions"])


def paid_channels(crm: KpiTables, window: Window) -> set[str]:
    """The channels with recorded spend in the window: their new customers are the ones the paid CAC counts."""
    spend = crm.marketing_spend[window.contains(crm.marketing_spend["date"]).to_numpy()]
    return set(spend.loc[spend["spend"] > 0, "channel"].dropna().astype(str))


def _customer_part(crm: KpiTables, window: Window, keys: np.ndarray, grain: str | None) -> pd.DataFrame:
    inside = window.contains(crm.customers["created_at"]).to_numpy()
    customers = crm.customers[inside]
    paid = np.isin(customer_keys(crm, "channel")[inside], sorted(paid_channels(crm, window))).astype("float64")
    rows = crm.order_customer_rows
    counted = (crm.orders["ordered_at"] < window.end).to_numpy() & (rows >= 0)
    amounts = crm.orders["amount"].to_numpy(dtype="float64")
    revenue_to_date = np.bincount(rows[counted], weights=amounts[counted], minlength=len(crm.customers))[inside]
    scores = crm.customer_scores.set_index("customer_id")
    ids = customers["customer_id"]
    clv = ids.map(scores["clv"]).to_numpy(dtype="float64")
    alive = ids.map(scores["p_alive"]).to_numpy(dtype="float64")
    frame = pd.DataFrame({
        "key": keys[inside],
        "period": _period(customers["created_at"], grain, window),
        "new_customers": 1.0,
        "attributed_revenue": revenue_to_date,
        "paid_new_customers": paid,
        "paid_revenue": paid * revenue_to_date,
        "paid_customer_value": paid * (revenue_to_date + np.nan_to_num(clv)),
        "predicted_clv_sum": np.nan_to_num(clv),
        "scored_customers": (~np.isnan(clv)).astype("float64"),
        "p_alive_sum": np.nan_to_num(alive),
        "p_alive_n": (~np.isnan(alive)).astype("float64"),
    })
    columns = ["new_customers", "attributed_revenue", "paid_new_customers", "paid_revenue", "paid_customer_value",
               "predicted_clv_sum", "scored_customers", "p_alive_sum", "p_alive_n"]
    return _grouped(frame, columns)


def _order_part(crm: KpiTables, window: Window, keys: np.ndarray, grain: str | None) -> pd.DataFrame:
    inside = window.contains(crm.orders["ordered_at"]).to_numpy()
    orders = crm.orders[inside]
    frame = pd.DataFrame({
        "key": _take(keys, crm.order_customer_rows[inside], UNKNOWN_CHANNEL),
        "period": _period(orders["ordered_at"], grain, window),
        "revenue": orders["amount"].to_numpy(dtype="float64"),
    })
    return _grouped(frame, ["revenue"])


def _spend_part(crm: KpiTables, window: Window, dimension: str, grain: str | None) -> pd.DataFrame | None:
    inside = window.contains(crm.marketing_spend["date"]).to_numpy()
    spend = crm.marketing_spend[inside]
    keys = _spend_keys(spend, dimension)
    if keys is None:
        return None
    frame = pd.DataFrame({
        "key": keys,
        "period": _period(spend["date"], grain, window),
        "spend": spend["spend"].to_numpy(dtype="float64"),
        "impressions": pd.to_numeric(spend["impressions"]).to_numpy(dtype="float64"),
        "clicks": pd.to_numeric(spend["clicks"]).to_numpy(dtype="float64"),
    })
    return _grouped(frame, ["spend", "impressions", "clicks"])


_ACTIVITY_COUNTS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "web_sessions": ("web_session",),
        "page_views": ("page_view", "pricing_page_view"),
        "email_sent": ("email_sent",),
        "email_opens": ("email_open",),
        "email_clicks": ("email_click",),
        "social_engagements": ("social_engagement",),
        "micro_conversions": MICRO_CONVERSIONS,
    }
)


def _activity_part(crm: KpiTables, window: Window, keys: np.ndarray, grain: str | None) -> pd.DataFrame:
    inside = window.contains(crm.activities["occurred_at"]).to_numpy()
    rows = crm.activity_lead_rows[inside]
    kind = crm.activity_type_codes[inside]
    frame = pd.DataFrame({
        "key": _take(keys, rows, UNKNOWN_CHANNEL),
        "period": _period(crm.activities["occurred_at"][inside], grain, window),
        "kind": kind,
        "lead": rows,
    })
    by_kind = frame.groupby([*_BY, "kind"], sort=False).size().unstack("kind", fill_value=0)
    counts = pd.DataFrame(index=by_kind.index)
    for column, types in _ACTIVITY_COUNTS.items():
        codes = [c for c in (ACTIVITY_TYPES.index(t) for t in types) if c in by_kind.columns]
        counts[column] = by_kind[codes].sum(axis=1).astype("float64") if codes else 0.0
    passive = [ACTIVITY_TYPES.index(t) for t in PASSIVE_ACTIVITIES]
    own = frame[~np.isin(kind, passive)]
    social = frame[kind == ACTIVITY_TYPES.index("social_engagement")]
    counts["active_leads"] = own.groupby(_BY, sort=False)["lead"].nunique().reindex(counts.index)
    counts["social_leads"] = social.groupby(_BY, sort=False)["lead"].nunique().reindex(counts.index)
    return counts


def _ratio(numerator: pd.Series | np.ndarray, denominator: pd.Series | np.ndarray) -> np.ndarray:
    num = np.asarray(numerator, dtype="float64")
    den = np.asarray(denominator, dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


KPI_COLUMNS: tuple[str, ...] = (
    "leads", "conversions", "conversion_rate", "new_customers", "paid_new_customers", "spend", "cac", "blended_cac",
    "attributed_revenue", "roi",
    "historic_cltv", "predicted_cltv", "clv_to_cac", "revenue", "p_alive", "web_sessions", "page_views",
    "email_sent", "email_clicks", "email_ctr", "email_open_rate", "impressions", "clicks", "ad_ctr",
    "active_leads", "social_engagement_rate", "micro_conversions", "engagement_index",
)
"""Columns of :func:`kpi_table` after the scope (and period) columns: the metrics and the counts behind them."""


def kpi_table(crm: KpiTables, window: Window, dimension: str = "channel", grain: str | None = None) -> pd.DataFrame:
    """Every KPI per scope value of ``dimension`` (and per period of ``grain``, if given) over ``window``.

    Returns one row per scope value (column named after the dimension; ``all`` has the single value
    ``"all"``) and, with a grain, per period (``period`` = period start, ``complete`` = the period lies
    wholly inside the window). KPIs that do not apply to a dimension (leads of a segment) are NaN, as are
    ratios with a zero denominator.
    """
    if dimension not in DIMENSIONS:
        raise InvalidInput(f"dimension {dimension!r} is unknown; expected one of {', '.join(DIMENSIONS)}")
    c_keys = customer_keys(crm, dimension)
    parts = [_customer_part(crm, window, c_keys, grain), _order_part(crm, window, c_keys, grain)]
    l_keys = lead_keys(crm, dimension)
    if l_keys is not None:
        parts += [_lead_part(crm, window, l_keys, grain), _activity_part(crm, window, l_keys, grain)]
    spend = _spend_part(crm, window, dimension, grain)
    if spend is not None:
        parts.append(spend)
    base = pd.concat(parts, axis=1).fillna(0.0)
    keys = ["all"] if dimension == "all" else list(base.index.get_level_values("key").unique())
    periods = period_starts(window, grain) if grain is not None else pd.DatetimeIndex([window.start])
    base = base.reindex(pd.MultiIndex.from_product([keys, periods], names=_BY), fill_value=0.0)
    table = _derive(base, lead_based=l_keys is not None)
    table = table.reset_index().rename(columns={"key": dimension})
    if grain is None:
        return _ordered(table.drop(columns="period"), dimension).reset_index(drop=True)
    ends = table["period"].dt.to_period(grain_code(grain)).dt.end_time
    table["complete"] = (table["period"] >= window.start) & (ends < window.end)
    return table.sort_values(["period", dimension]).reset_index(drop=True)


def _derive(base: pd.DataFrame, lead_based: bool) -> pd.DataFrame:
    b = {column: base[column].to_numpy(dtype="float64") for column in base.columns}
    nothing = np.full(len(base), np.nan)
    for column in ("leads", "conversions", "spend", "impressions", "clicks", "active_leads", "social_leads",
                   *_ACTIVITY_COUNTS):
        b.setdefault(column, nothing)
    out = {
        "leads": b["leads"],
        "conversions": b["conversions"],
        "conversion_rate": _ratio(b["conversions"], b["leads"]),
        "new_customers": b["new_customers"],
        "paid_new_customers": b["paid_new_customers"],
        "spend": b["spend"],
        "cac": np.where(b["spend"] > 0, _ratio(b["spend"], b["paid_new_customers"]), np.nan),
        "blended_cac": np.where(b["spend"] > 0, _ratio(b["spend"], b["new_customers"]), np.nan),
        "attributed_revenue": b["attributed_revenue"],
        "roi": _ratio(b["paid_revenue"] - b["spend"], b["spend"]),
        "historic_cltv": _ratio(b["attributed_revenue"], b["new_customers"]),
        "predicted_cltv": _ratio(b["predicted_clv_sum"], b["scored_customers"]),
        "clv_to_cac": _ratio(b["paid_customer_value"], b["spend"]) if lead_based else nothing,
        "revenue": b["revenue"],
        "p_alive": _ratio(b["p_alive_sum"], b["p_alive_n"]),
        "web_sessions": b["web_sessions"],
        "page_views": b["page_views"],
        "email_sent": b["email_sent"],
        "email_clicks": b["email_clicks"],
        "email_ctr": _ratio(b["email_clicks"], b["email_sent"]),
        "email_open_rate": _ratio(b["email_opens"], b["email_sent"]),
        "impressions": b["impressions"],
        "clicks": b["clicks"],
        "ad_ctr": _ratio(b["clicks"], b["impressions"]),
        "active_leads": b["active_leads"],
        "social_engagement_rate": _ratio(b["social_leads"], b["active_leads"]),
        "micro_conversions": b["micro_conversions"],
        "engagement_index": _ratio(b["micro_conversions"], b["web_sessions"]),
    }
    return pd.DataFrame({column: out[column] for column in KPI_COLUMNS}, index=base.index)


def _ordered(table: pd.DataFrame, dimension: str) -> pd.DataFrame:
    order = ["leads", "new_customers", "spend"] if dimension != "segment" else ["new_customers", "revenue"]
    return table.sort_values(order, ascending=False, kind="stable")


def kpi_totals(crm: KpiTables, window: Window) -> dict[str, float]:
    """The KPIs over everything in the window, as one dict; ``paid_cac`` names ``cac`` beside ``blended_cac``."""
    row = kpi_table(crm, window, "all").iloc[0]
    totals = {column: float(row[column]) for column in KPI_COLUMNS}
    return {**totals, "paid_cac": totals["cac"]}


def scope_values(crm: KpiTables) -> dict[str, set[str]]:
    """Every channel, campaign and segment the data knows, for checking the scopes of targets."""
    channels = set(lead_keys(crm, "channel")) | set(customer_keys(crm, "channel"))
    channels |= set(crm.marketing_spend["channel"].dropna().astype(str))
    campaigns = set(lead_keys(crm, "campaign")) | set(_campaign(crm.marketing_spend["campaign"]))
    segments = set(crm.customer_scores["segment"].dropna().astype(str))
    return {"all": {"all"}, "channel": channels, "campaign": campaigns, "segment": segments}


def content_influence(
    crm: KpiTables, window: Window, weights: Mapping[str, float] = CONTENT_WEIGHTS
) -> pd.DataFrame:
    """Weighted interactions per content item in the window, with the conversions it touched.

    Returns ``content_id``, ``interactions``, ``leads`` (distinct leads), ``weighted_interactions`` (sum of
    :data:`CONTENT_WEIGHTS` per interaction), ``influence_index`` (weighted interactions relative to the
    average item, 100 = average), ``converted_leads`` (leads who interacted with it before they converted,
    and converted before the window ends) and ``lead_conversion_rate`` (converted_leads / leads), best first.
    """
    unknown = sorted(set(weights) - set(ACTIVITY_TYPES))
    if unknown:
        raise InvalidInput(f"content weights: unknown activity type(s) {', '.join(unknown)}")
    kept = (window.contains(crm.activities["occurred_at"]) & crm.activities["content_id"].notna()).to_numpy()
    columns = ["content_id", "interactions", "leads", "weighted_interactions", "influence_index",
               "converted_leads", "lead_conversion_rate"]
    if not kept.any():
        return pd.DataFrame(columns=columns)
    acts = crm.activities[kept]
    rows = crm.activity_lead_rows[kept]
    lead_converted = crm.leads["converted_at"].to_numpy(dtype="datetime64[ns]")
    converted_at = np.where(rows >= 0, lead_converted[np.maximum(rows, 0)], np.datetime64("NaT"))
    occurred = acts["occurred_at"].to_numpy(dtype="datetime64[ns]")
    before = ~np.isnat(converted_at) & (converted_at < window.end.to_datetime64()) & (occurred <= converted_at)
    type_weights = np.array([float(weights.get(t, 0.0)) for t in ACTIVITY_TYPES])
    frame = pd.DataFrame({
        "content_id": acts["content_id"].astype(str).to_numpy(),
        "lead": rows,
        "weight": type_weights[crm.activity_type_codes[kept]],
        "converted_lead": np.where(before, rows, -1),
    })
    grouped = frame.groupby("content_id", sort=False)
    table = pd.DataFrame({
        "interactions": grouped.size().astype("float64"),
        "leads": grouped["lead"].nunique().astype("float64"),
        "weighted_interactions": grouped["weight"].sum(),
        "converted_leads": frame[frame["converted_lead"] >= 0].groupby("content_id")["converted_lead"].nunique()
        .reindex(grouped.size().index, fill_value=0).astype("float64"),
    })
    mean = table["weighted_interactions"].mean()
    table["influence_index"] = 100.0 * table["weighted_interactions"] / mean if mean > 0 else np.nan
    table["lead_conversion_rate"] = _ratio(table["converted_leads"], table["leads"])
    table = table.reset_index().sort_values(["weighted_interactions", "content_id"], ascending=[False, True])
    return table[columns].reset_index(drop=True)


def segment_snapshots(crm: KpiTables, grain: str) -> pd.DataFrame:
    """Per segment and period: ``customers``, ``predicted_cltv`` (mean CLV) and ``p_alive`` at the period's last run.

    Runs come from ``customer_score_history`` (the current ``customer_scores`` when there is no history); a
    run's time is its ``as_of``, else its ``scored_at``. Snapshots are today's view and are not cut to the
    report window. Returns ``segment``, ``period``, the three metrics and ``complete`` (always True).
    """
    scores = crm.customer_score_history if not crm.customer_score_history.empty else crm.customer_scores
    columns = ["segment", "period", *SNAPSHOT_METRICS, "complete"]
    at = scores["as_of"].fillna(scores["scored_at"])
    scores = scores[at.notna()]
    at = at[at.notna()]
    if scores.empty:
        return pd.DataFrame(columns=columns)
    run = scores["scoring_run_id"].astype("object").where(scores["scoring_run_id"].notna(), at.astype(str))
    frame = pd.DataFrame({
        "run": run.to_numpy(),
        "at": at.to_numpy(),
        "period": at.dt.to_period(grain_code(grain)).dt.start_time.to_numpy(),
        "segment": scores["segment"].astype(str).to_numpy(),
        "clv": scores["clv"].to_numpy(dtype="float64"),
        "p_alive": scores["p_alive"].to_numpy(dtype="float64"),
    })
    runs = frame.groupby("run").agg(at=("at", "max"), period=("period", "first"))
    latest = runs.sort_values("at").groupby("period").tail(1).index
    kept = frame[frame["run"].isin(latest)]
    table = kept.groupby(["segment", "period"]).agg(
        customers=("clv", "size"), predicted_cltv=("clv", "mean"), p_alive=("p_alive", "mean")
    )
    table["customers"] = table["customers"].astype("float64")
    table["complete"] = True
    return table.reset_index()[columns].sort_values(["period", "segment"]).reset_index(drop=True)
