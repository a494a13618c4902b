"""Predictive KPIs from the score tables: how the lead scores and the CLV model see the pipeline and the base.

Inputs are the ``lead_scores`` and ``customer_scores`` rows the scoring jobs wrote, joined to ``leads``,
``customers`` and ``orders``. The scores are today's view (as of :func:`scores_as_of`): these KPIs are not cut to
the report window. Conversion by band is not judged on them (today's open leads have not had time to convert) but
on a backtest's rows (:func:`backtest_calibration`): the leads open at past dates against what they then did.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from features.crm.schema import SCORE_BANDS
from features.errors import InvalidInput

SEGMENT_ORDER: tuple[str, ...] = ("champions", "loyal", "promising", "at_risk", "lost")
"""Display order of the CLV model's segments (others follow alphabetically)."""

SCORE_BINS: tuple[int, ...] = (*range(1, 92, 10), 100)
"""Edges of the score histogram for scores 1-99: 1-10, 11-20, ..., 81-90, 91-99 (each bin from its edge up to the
next one, excluded). Scores outside 1-99 (0 and 100 from models scored 0-100) count in the end bins."""


def _with_channel(leads: pd.DataFrame, lead_scores: pd.DataFrame) -> pd.DataFrame:
    columns = ["lead_id", "source_channel", "campaign", "created_at", "converted_at"]
    joined = lead_scores.merge(leads[[c for c in columns if c in leads.columns]], on="lead_id", how="inner")
    joined["source_channel"] = joined["source_channel"].astype("object").fillna("(unknown)")
    return joined


def score_bin_labels() -> list[str]:
    """The score histogram's bins as people read them: ``1-10``, ``11-20``, ..., ``91-99``."""
    return [f"{lo}-{hi - 1}" for lo, hi in zip(SCORE_BINS[:-1], SCORE_BINS[1:])]


def scores_as_of(lead_scores: pd.DataFrame) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """The first and last point in time the lead scores are as of (``as_of``, else ``scored_at``); None, None
    without scores. The two are equal when every lead was scored as of the same instant."""
    column = "as_of" if "as_of" in lead_scores.columns else "scored_at"
    stamps = pd.to_datetime(lead_scores[column]) if column in lead_scores.columns else pd.Series(dtype="datetime64[ns]")
    if column == "as_of" and "scored_at" in lead_scores.columns:
        stamps = stamps.fillna(pd.to_datetime(lead_scores["scored_at"]))
    stamps = stamps.dropna()
    if stamps.empty:
        return None, None
    return stamps.min(), stamps.max()


def score_distribution(leads: pd.DataFrame, lead_scores: pd.DataFrame) -> pd.DataFrame:
    """Scored leads per channel and score bin (``1-10`` ... ``91-99``): columns channel, score_bin, leads."""
    joined = _with_channel(leads, lead_scores)
    labels = score_bin_labels()
    score = joined["score"].astype("float64").clip(SCORE_BINS[0], SCORE_BINS[-1] - 1)
    bins = pd.cut(score, bins=list(SCORE_BINS), labels=labels, right=False)
    counts = (
        pd.DataFrame({"channel": joined["source_channel"], "score_bin": bins.astype("object")})
        .groupby(["channel", "score_bin"]).size()
    )
    grid = pd.MultiIndex.from_product([sorted(joined["source_channel"].unique()), labels],
                                      names=["channel", "score_bin"])
    return counts.reindex(grid, fill_value=0).rename("leads").reset_index()


def score_summary(leads: pd.DataFrame, lead_scores: pd.DataFrame) -> pd.DataFrame:
    """Per channel: scored leads, mean and median score, and the share of leads in each band (``share_A`` ...)."""
    joined = _with_channel(leads, lead_scores)
    grouped = joined.groupby("source_channel")
    table = pd.DataFrame({
        "scored_leads": grouped.size().astype("float64"),
        "mean_score": grouped["score"].mean().astype("float64"),
        "median_score": grouped["score"].median().astype("float64"),
    })
    shares = pd.crosstab(joined["source_channel"], joined["band"], normalize="index")
    for band in SCORE_BANDS:
        table[f"share_{band}"] = shares[band] if band in shares.columns else 0.0
    table.index.name = "channel"
    return table.reset_index().sort_values("scored_leads", ascending=False, kind="stable").reset_index(drop=True)


BACKTEST_BAND_COLUMNS: tuple[str, ...] = ("band", "leads", "conversions", "predicted_rate", "actual_rate", "as_ofs")


def backtest_calibration(bands: pd.DataFrame) -> pd.DataFrame:
    """Predicted against actual conversion per band, pooled over a backtest's as-of dates: the model's calibration.

    ``bands`` holds one row per as-of date and band (``as_of, band, leads, conversions, predicted_rate``, as in
    ``lead_backtest_bands``). Pooled per band: ``leads`` and ``conversions`` summed, ``predicted_rate`` the mean
    probability over all those leads, ``actual_rate`` the share of them that converted within the horizon, and
    ``as_ofs`` the dates the band had leads at. Every band A-D gets a row; an empty one has rates missing.
    """
    if bands.empty:
        return pd.DataFrame(columns=list(BACKTEST_BAND_COLUMNS))
    leads = bands["leads"].astype("float64")
    weighted = pd.DataFrame({
        "band": bands["band"], "leads": leads, "conversions": bands["conversions"].astype("float64"),
        "expected": (bands["predicted_rate"].astype("float64") * leads).where(leads > 0, 0.0),
        "dated": (leads > 0).astype("int64"),
    }).groupby("band").sum().reindex(list(SCORE_BANDS)).fillna(0.0)
    den = weighted["leads"].where(weighted["leads"] > 0)
    table = pd.DataFrame({
        "leads": weighted["leads"].astype("int64"),
        "conversions": weighted["conversions"].astype("int64"),
        "predicted_rate": weighted["expected"] / den,
        "actual_rate": weighted["conversions"] / den,
        "as_ofs": weighted["dated"].astype("int64"),
    })
    table.index.name = "band"
    return table.reset_index()[list(BACKTEST_BAND_COLUMNS)]


P_ALIVE_MIN_SPREAD = 0.05
"""P(alive) carries no information about who has left when the central 98% of customers' values (1st to 99th
percentile) lie closer together than this: the CLV model's segments then go by value and recency."""


def p_alive_range(p_alive: Any) -> tuple[float, float]:
    """The 1st and 99th percentiles of P(alive) over customers (NaN, NaN without any)."""
    values = np.asarray(p_alive, dtype="float64")
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(values, [0.01, 0.99])
    return float(low), float(high)


def p_alive_informative(span: tuple[float, float]) -> bool:
    """Whether P(alive) tells customers apart: its 1st-99th percentile range (:func:`p_alive_range`) spans at
    least :data:`P_ALIVE_MIN_SPREAD` (True without customers: nothing to say). The one test of it: training's
    segment basis and warnings (``training.clv``) and the report's inference from the scores use it."""
    low, high = span
    return not high - low < P_ALIVE_MIN_SPREAD


def _segment_rank(segment: pd.Series) -> pd.Series:
    rank = {name: i for i, name in enumerate(SEGMENT_ORDER)}
    return segment.map(rank).fillna(len(SEGMENT_ORDER))


def segment_summary(customer_scores: pd.DataFrame) -> pd.DataFrame:
    """Per segment: customers, share of customers, mean and total CLV, mean P(alive) and expected purchases."""
    scores = customer_scores.assign(expected_purchases=customer_scores.get("expected_purchases", np.nan))
    grouped = scores.groupby("segment")
    table = pd.DataFrame({
        "customers": grouped.size().astype("float64"),
        "mean_clv": grouped["clv"].mean().astype("float64"),
        "total_clv": grouped["clv"].sum(min_count=1).astype("float64"),
        "mean_p_alive": grouped["p_alive"].mean().astype("float64"),
        "mean_expected_purchases": grouped["expected_purchases"].mean().astype("float64"),
    })
    total = table["customers"].sum()
    table["share"] = table["customers"] / total if total else np.nan
    table.index.name = "segment"
    table = table.reset_index()
    table = table.assign(_rank=_segment_rank(table["segment"])).sort_values(["_rank", "segment"])
    columns = ["segment", "customers", "share", "mean_clv", "total_clv", "mean_p_alive", "mean_expected_purchases"]
    return table[columns].reset_index(drop=True)


def customer_list(
    customer_scores: pd.DataFrame,
    orders: pd.DataFrame,
    segment: str | None = None,
    min_clv: float | None = None,
) -> pd.DataFrame:
    """Scored customers for a campaign list: ``customer_id, segment, clv, p_alive, last_order_at``, highest CLV first.

    A segment of the CLV model (:data:`SEGMENT_ORDER`) with no customers gives an empty table; raises
    ``InvalidInput`` for any other segment no scored customer is in.
    """
    scores = customer_scores
    if segment is not None:
        present = sorted(scores["segment"].dropna().astype(str).unique())
        if segment not in present and segment not in SEGMENT_ORDER:
            raise InvalidInput(f"--segment {segment!r} is unknown; segments with customers: "
                               f"{', '.join(present) or 'none'}; the CLV model's segments: {', '.join(SEGMENT_ORDER)}")
        scores = scores[scores["segment"] == segment]
    if min_clv is not None:
        scores = scores[scores["clv"].astype("float64") >= min_clv]
    last_order = orders.groupby("customer_id")["ordered_at"].max()
    table = pd.DataFrame({
        "customer_id": scores["customer_id"].to_numpy(),
        "segment": scores["segment"].to_numpy(),
        "clv": scores["clv"].to_numpy(dtype="float64"),
        "p_alive": scores["p_alive"].to_numpy(dtype="float64"),
        "last_order_at": scores["customer_id"].map(last_order).to_numpy(),
    })
    table["last_order_at"] = pd.to_datetime(table["last_order_at"])
    return table.sort_values(["clv", "customer_id"], ascending=[False, True], na_position="last").reset_index(drop=True)


def top_customers(
    customer_scores: pd.DataFrame, customers: pd.DataFrame, orders: pd.DataFrame, n: int = 20
) -> pd.DataFrame:
    """The ``n`` customers with the highest predicted value, with their channel, revenue to date and last order."""
    listed = customer_list(customer_scores, orders).head(n)
    revenue = orders.groupby("customer_id")["amount"].sum()
    channel = customers.set_index("customer_id")["acquisition_channel"] if "acquisition_channel" in customers else None
    listed["revenue_to_date"] = listed["customer_id"].map(revenue).astype("float64").fillna(0.0)
    listed["acquisition_channel"] = listed["customer_id"].map(channel) if channel is not None else None
    return listed


def lead_pipeline(leads: pd.DataFrame, lead_scores: pd.DataFrame) -> pd.DataFrame:
    """The value-weighted pipeline of open (not yet converted) scored leads, per channel.

    Returns ``channel``, ``open_leads``, ``expected_conversions`` (sum of probabilities),
    ``pipeline_value`` (sum of ``expected_value`` = probability x predicted CLV), ``mean_score`` and
    ``band_A_leads``, largest pipeline first.
    """
    joined = _with_channel(leads, lead_scores)
    open_ = joined[joined["converted_at"].isna()]
    grouped = open_.groupby("source_channel")
    table = pd.DataFrame({
        "open_leads": grouped.size().astype("float64"),
        "expected_conversions": grouped["probability"].sum().astype("float64"),
        "pipeline_value": grouped["expected_value"].sum().astype("float64"),
        "mean_score": grouped["score"].mean().astype("float64"),
        "band_A_leads": grouped["band"].apply(lambda b: float((b == "A").sum())),
    })
    table.index.name = "channel"
    columns = ["channel", "open_leads", "expected_conversions", "pipeline_value", "mean_score", "band_A_leads"]
    if table.empty:
        return pd.DataFrame(columns=columns)
    table = table.reset_index().sort_values(["pipeline_value", "channel"], ascending=[False, True])
    return table[columns].reset_index(drop=True)


LEAD_ORDER: tuple[str, ...] = ("score", "value")


def top_open_leads(leads: pd.DataFrame, lead_scores: pd.DataFrame, n: int = 50, by: str = "score") -> pd.DataFrame:
    """The best ``n`` open leads for a salesperson, by ``score`` (then value) or by expected ``value`` (then score).

    Returns lead_id, score, band, probability, expected_value, channel, campaign, created_at and reasons (text).
    """
    if by not in LEAD_ORDER:
        raise InvalidInput(f"--by {by!r} is unknown; expected score or value")
    joined = _with_channel(leads, lead_scores)
    open_ = joined[joined["converted_at"].isna()].copy()
    keys = ["score", "expected_value"] if by == "score" else ["expected_value", "score"]
    open_ = open_.sort_values([*keys, "lead_id"], ascending=[False, False, True], na_position="last").head(n)
    return pd.DataFrame({
        "lead_id": open_["lead_id"].to_numpy(),
        "score": open_["score"].to_numpy(),
        "band": open_["band"].to_numpy(),
        "probability": open_["probability"].to_numpy(dtype="float64"),
        "expected_value": open_["expected_value"].to_numpy(dtype="float64"),
        "channel": open_["source_channel"].to_numpy(),
        "campaign": open_["campaign"].to_numpy() if "campaign" in open_ else None,
        "created_at": open_["created_at"].to_numpy(),
        "reasons": [reasons_text(r) for r in open_["reasons"]] if "reasons" in open_ else "",
    })


_TEXT_KEYS = ("text", "reason", "description", "label", "message")


def reasons_text(reasons: Any) -> str:
    """Reason codes as one line for people, whatever JSON shape the scorer wrote (list, dict of lists, text)."""
    if reasons is None or (isinstance(reasons, float) and math.isnan(reasons)):
        return ""
    if isinstance(reasons, str):
        try:
            return reasons_text(json.loads(reasons))
        except ValueError:
            return reasons
    if isinstance(reasons, dict):
        if any(k in reasons for k in _TEXT_KEYS):
            return _reason_item(reasons)
        return " | ".join(f"{key}: {reasons_text(value)}" for key, value in reasons.items() if value)
    if isinstance(reasons, (list, tuple)):
        return "; ".join(_reason_item(item) for item in reasons)
    return str(reasons)


def _reason_item(item: Any) -> str:
    if isinstance(item, dict):
        for key in _TEXT_KEYS:
            if item.get(key):
                return str(item[key])
        return ", ".join(f"{k}={v}" for k, v in item.items())
    return str(item)
