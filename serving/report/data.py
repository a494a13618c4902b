"""The KPI report's figures: every KPI of a window gathered once from the CRM and score tables, and as JSON.

The page (``serving.report.page``) and ``leadval report --json`` both show this one ``KPIReport``, so they always
agree; every figure comes from the pure functions of ``features.kpi``. Conversion by band comes from the latest
stored backtest (``leadval backtest leads``), never from today's open leads, which have not had time to convert.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from features.json_ready import json_ready
from features.kpi.attribution import attribution_table, touchpoints
from features.kpi.awareness import BRAND_PATTERN, BrandAwareness, brand_awareness
from features.kpi.engagement import EngagementTime, engagement_time
from features.kpi.experiments import PEEKING_CAUTION, ExperimentResult, experiment_results, experiment_trials
from features.kpi.metrics import content_influence, kpi_table, kpi_totals
from features.kpi.predictive import (
    backtest_calibration,
    lead_pipeline,
    p_alive_informative,
    p_alive_range,
    score_distribution,
    score_summary,
    scores_as_of,
    segment_summary,
    top_customers,
)
from features.kpi.tables import KpiTables, Window, default_grain
from features.kpi.targets import Target, evaluate_targets, status_frame

TOP_CONTENT = 15
TOP_ENGAGED_CONTENT = 10
EXPERIMENT_METRIC = "conversion"
"""The metric the report compares experiments on (``leadval abtest --metric`` offers the others)."""
TOP_CUSTOMERS = 15
SCATTER_POINTS = 1_500
BAND_KEYS = ("band", "leads", "predicted_rate", "actual_rate", "as_of")
"""The keys of each item of ``--json`` ``bands``: one per as-of date and band of the latest backtest."""


@dataclass(frozen=True)
class StoredBacktest:
    """A backtest as stored: its ``lead_backtests`` rows (one per as-of date) and ``lead_backtest_bands`` rows."""

    runs: pd.DataFrame
    bands: pd.DataFrame

    @property
    def first(self) -> Mapping[str, Any]:
        """What every as-of row shares: id, model, recipe, horizon, creation time."""
        return self.runs.iloc[0].to_dict()

    def summary(self) -> dict[str, Any]:
        """The JSON-ready description: id, when, model, recipe, horizon, the as-of dates and their metrics."""
        first = self.first
        metrics = ["as_of", "leads", "conversions", "base_rate", "mean_probability", "roc_auc", "pr_auc", "lift_top10",
                   "trained_to"]
        return {
            "backtest_id": first["backtest_id"], "created_at": json_ready(first["created_at"]),
            "model": first["model"], "model_version": first["model_version"], "recipe": json_ready(first["recipe"]),
            "horizon_days": int(first["horizon_days"]),
            "as_of_from": json_ready(self.runs["as_of"].min()), "as_of_to": json_ready(self.runs["as_of"].max()),
            "as_ofs": records(self.runs[metrics]),
        }


@dataclass(frozen=True)
class KPIReport:
    """Everything the page and the ``--json`` output show, computed once from the CRM and score tables."""

    window: Window
    grain: str
    generated_at: datetime
    rows: Mapping[str, int]
    totals: Mapping[str, float]
    channels: pd.DataFrame
    trend: pd.DataFrame
    channel_trend: pd.DataFrame
    attribution: pd.DataFrame
    content: pd.DataFrame
    score_summary: pd.DataFrame
    score_distribution: pd.DataFrame
    scores_as_of: tuple[pd.Timestamp | None, pd.Timestamp | None]
    backtest: StoredBacktest | None
    calibration: pd.DataFrame
    segments: pd.DataFrame
    segment_points: pd.DataFrame
    top_customers: pd.DataFrame
    pipeline: pd.DataFrame
    targets: pd.DataFrame
    engagement_time: EngagementTime
    brand_awareness: BrandAwareness
    experiments: list[ExperimentResult]
    experiments_as_of: pd.Timestamp
    clv_model: Mapping[str, Any] | None = None
    monitoring: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The rows of ``monitoring_runs`` (``leadval monitor``) up to the window's end, oldest first; empty without."""

    @property
    def warnings(self) -> list[str]:
        """What could mislead in engagement time, the brand proxies and the experiments, in words."""
        found = [*self.engagement_time.warnings, *self.brand_awareness.warnings]
        return found + [w for result in self.experiments for w in result.warnings]


def clv_model_note(customer_scores: pd.DataFrame, recorded: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What to say about the CLV model behind the customer scores: who it is, its kind and warnings, and whether
    its segments go by P(alive) or by value and recency; None before customers are scored.

    ``recorded`` is what the model's training run recorded (``training.clv.pyfunc.recorded_notes``: ``model``,
    ``segments_by``, ``segment_rule_version``, ``warnings``, or ``error`` when it could not be read, e.g. no MLflow
    store; None when the scores name no run). Without it the segment rule is unknown, the warnings are said to be
    unknown and the segment basis is inferred from the scores: P(alive) that tells no one apart
    (``features.kpi.predictive.p_alive_informative``) means value and recency. A run too old to have recorded
    warnings (``warnings_unknown``) has them unknown too.
    """
    if customer_scores.empty:
        return None
    low, high = p_alive_range(customer_scores["p_alive"])
    common = {}
    for column in ("model_name", "model_version", "run_id"):
        if column in customer_scores.columns and customer_scores[column].notna().any():
            common[column] = str(customer_scores[column].mode().iloc[0])
    if recorded is None:
        recorded = {"error": "the customer scores name no training run (run_id)"}
    recorded = dict(recorded)
    inferred = "p_alive" if p_alive_informative((low, high)) else "recency"
    return {
        "model_name": common.get("model_name"),
        "model_version": common.get("model_version"),
        "run_id": common.get("run_id"),
        "model": recorded.get("model"),
        "segments_by": recorded.get("segments_by") or inferred,
        "segments_by_source": "model" if recorded.get("segments_by") else "inferred from the scores",
        "segment_rule_version": recorded.get("segment_rule_version"),
        "warnings": list(recorded.get("warnings") or []),
        "warnings_source": recorded.get("error") or recorded.get("warnings_unknown") or "model",
        "p_alive_range": [json_ready(low), json_ready(high)],
    }


def build_report(
    crm: KpiTables,
    window: Window,
    targets: Sequence[Target] = (),
    grain: str | None = None,
    generated_at: datetime | None = None,
    backtest: StoredBacktest | None = None,
    clv_recorded: Mapping[str, Any] | None = None,
    brand_pattern: str = BRAND_PATTERN,
    monitoring: pd.DataFrame | None = None,
) -> KPIReport:
    """Compute every KPI, attribution, predictive KPI and target status of the report for ``window``.

    ``backtest``: the latest stored backtest, the source of conversion by band (None: there is none yet).
    ``clv_recorded``: what the CLV model's training recorded (see :func:`clv_model_note`).
    ``brand_pattern``: the regular expression naming brand campaigns (``features.kpi.awareness``). Experiments are
    compared on conversion as of the window's last instant. ``monitoring``: the rows of ``monitoring_runs``, whose
    runs as of the window's end or before make the track record.
    """
    grain = grain or default_grain(window)
    channels = kpi_table(crm, window, "channel")
    paths = touchpoints(crm.leads, crm.activities, window.start, window.end, channels=set(channels["channel"]))
    scores = crm.customer_scores
    points = scores[["segment", "clv", "p_alive"]].dropna()
    if len(points) > SCATTER_POINTS:
        points = points.sample(SCATTER_POINTS, random_state=0)
    trend = kpi_table(crm, window, "all", grain)
    channel_trend = kpi_table(crm, window, "channel", grain)
    goals = (evaluate_targets(tuple(targets), crm, window, grain, {"all": trend, "channel": channel_trend})
             if targets else status_frame([], grain))
    engagement = engagement_time(crm, window)
    brand = brand_awareness(crm, window, grain, brand_pattern)
    as_of = window.end - pd.Timedelta(nanoseconds=1)
    experiments = experiment_results(experiment_trials(crm, EXPERIMENT_METRIC, as_of), EXPERIMENT_METRIC, as_of)
    return KPIReport(
        window=window,
        grain=grain,
        generated_at=generated_at or datetime.now(UTC).replace(tzinfo=None, microsecond=0),
        rows={name: len(getattr(crm, name)) for name in ("leads", "activities", "customers", "orders",
                                                         "marketing_spend", "lead_scores", "customer_scores")},
        totals={**kpi_totals(crm, window), **engagement.totals, **brand.totals},
        channels=channels,
        trend=trend,
        channel_trend=channel_trend,
        attribution=attribution_table(paths),
        content=content_influence(crm, window).head(TOP_CONTENT),
        score_summary=score_summary(crm.leads, crm.lead_scores),
        score_distribution=score_distribution(crm.leads, crm.lead_scores),
        scores_as_of=scores_as_of(crm.lead_scores),
        backtest=backtest,
        calibration=backtest_calibration(backtest.bands if backtest is not None else pd.DataFrame()),
        segments=segment_summary(scores),
        segment_points=points,
        top_customers=top_customers(scores, crm.customers, crm.orders, TOP_CUSTOMERS),
        pipeline=lead_pipeline(crm.leads, crm.lead_scores),
        targets=goals,
        engagement_time=engagement,
        monitoring=monitoring_record(monitoring, window),
        brand_awareness=brand,
        experiments=experiments,
        experiments_as_of=as_of,
        clv_model=clv_model_note(scores, clv_recorded),
    )


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of ``frame`` as JSON-ready dicts."""
    return [{str(column): json_ready(value) for column, value in row.items()} for row in frame.to_dict("records")]


def band_records(backtest: StoredBacktest | None) -> list[dict[str, Any]]:
    """The backtest's per as-of date and band rows as ``{band, leads, predicted_rate, actual_rate, as_of}``."""
    if backtest is None:
        return []
    return records(backtest.bands[list(BAND_KEYS)])


def report_json(report: KPIReport) -> dict[str, Any]:
    """The report's KPIs as one JSON-ready object (``channels``, ``trend``, ``targets``, ``bands``, ...)."""
    first, last = report.scores_as_of
    return {
        "window": {"from": report.window.start.date().isoformat(), "to": report.window.last_day.isoformat(),
                   "period": report.grain},
        "generated_at": report.generated_at.isoformat(),
        "scores_as_of": {"from": json_ready(first), "to": json_ready(last)},
        "bands": band_records(report.backtest),
        "backtest": report.backtest.summary() if report.backtest is not None else None,
        "rows": dict(report.rows),
        "totals": json_ready(report.totals),
        "channels": records(report.channels),
        "trend": records(report.trend),
        "attribution": records(report.attribution),
        "content": records(report.content),
        "predictive": {
            "score_by_channel": records(report.score_summary),
            "score_distribution": records(report.score_distribution),
            "conversion_by_band": records(report.calibration),
            "segments": records(report.segments),
            "clv_model": json_ready(dict(report.clv_model)) if report.clv_model else None,
            "top_customers": records(report.top_customers),
            "pipeline": records(report.pipeline),
        },
        "targets": records(report.targets),
        "engagement_time": {
            "by_channel": records(report.engagement_time.by_channel),
            "by_content": records(report.engagement_time.by_content.head(TOP_ENGAGED_CONTENT)),
        },
        "brand_awareness": {"pattern": report.brand_awareness.brand_pattern,
                            "trend": records(report.brand_awareness.trend)},
        "experiments": experiment_records(report.experiments, report.experiments_as_of),
        "experiments_caution": PEEKING_CAUTION,
        "monitoring": records(report.monitoring),
    }


def monitoring_record(monitoring: pd.DataFrame | None, window: Window) -> pd.DataFrame:
    """The monitoring runs as of the window's end or before, oldest first (empty without any)."""
    if monitoring is None or monitoring.empty:
        return pd.DataFrame()
    kept = monitoring[pd.to_datetime(monitoring["as_of"]) < window.end]
    return kept.sort_values(["as_of", "checked_at", "model", "check"]).reset_index(drop=True)


def experiment_records(results: Sequence[ExperimentResult], as_of: pd.Timestamp) -> list[dict[str, Any]]:
    """Each experiment compared on the report's metric as a JSON-ready dict, with the as-of instant it counts to."""
    return [{**json_ready(asdict(result)), "as_of": json_ready(as_of)} for result in results]
