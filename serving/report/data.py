"""The KPI report's figures: every KPI of a window gathered once from the CRM and score tables, and as JSON.

The page (``serving.report.page``) and ``leadval report --json`` both show this one ``KPIReport``, so they always
agree; every figure comes from the pure functions of ``features.kpi``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from features.json_ready import json_ready
from features.kpi.attribution import attribution_table, touchpoints
from features.kpi.metrics import content_influence, kpi_table, kpi_totals
from features.kpi.predictive import (
    conversion_by_band,
    lead_pipeline,
    score_distribution,
    score_summary,
    segment_summary,
    top_customers,
)
from features.kpi.tables import KpiTables, Window, default_grain
from features.kpi.targets import Target, evaluate_targets, status_frame

TOP_CONTENT = 15
TOP_CUSTOMERS = 15
SCATTER_POINTS = 1_500


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
    calibration: pd.DataFrame
    segments: pd.DataFrame
    segment_points: pd.DataFrame
    top_customers: pd.DataFrame
    pipeline: pd.DataFrame
    targets: pd.DataFrame


def build_report(
    crm: KpiTables,
    window: Window,
    targets: Sequence[Target] = (),
    grain: str | None = None,
    generated_at: datetime | None = None,
) -> KPIReport:
    """Compute every KPI, attribution, predictive KPI and target status of the report for ``window``."""
    grain = grain or default_grain(window)
    paths = touchpoints(crm.leads, crm.activities, window.start, window.end)
    scores = crm.customer_scores
    points = scores[["segment", "clv", "p_alive"]].dropna()
    if len(points) > SCATTER_POINTS:
        points = points.sample(SCATTER_POINTS, random_state=0)
    trend = kpi_table(crm, window, "all", grain)
    channel_trend = kpi_table(crm, window, "channel", grain)
    goals = (evaluate_targets(tuple(targets), crm, window, grain, {"all": trend, "channel": channel_trend})
             if targets else status_frame([], grain))
    return KPIReport(
        window=window,
        grain=grain,
        generated_at=generated_at or datetime.now(UTC).replace(tzinfo=None, microsecond=0),
        rows={name: len(getattr(crm, name)) for name in ("leads", "activities", "customers", "orders",
                                                         "marketing_spend", "lead_scores", "customer_scores")},
        totals=kpi_totals(crm, window),
        channels=kpi_table(crm, window, "channel"),
        trend=trend,
        channel_trend=channel_trend,
        attribution=attribution_table(paths),
        content=content_influence(crm, window).head(TOP_CONTENT),
        score_summary=score_summary(crm.leads, crm.lead_scores),
        score_distribution=score_distribution(crm.leads, crm.lead_scores),
        calibration=conversion_by_band(crm.leads, crm.lead_scores),
        segments=segment_summary(scores),
        segment_points=points,
        top_customers=top_customers(scores, crm.customers, crm.orders, TOP_CUSTOMERS),
        pipeline=lead_pipeline(crm.leads, crm.lead_scores),
        targets=goals,
    )


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of ``frame`` as JSON-ready dicts."""
    return [{str(column): json_ready(value) for column, value in row.items()} for row in frame.to_dict("records")]


def report_json(report: KPIReport) -> dict[str, Any]:
    """The report's KPIs as one JSON-ready object (``channels``, ``trend``, ``targets``, ...)."""
    return {
        "window": {"from": report.window.start.date().isoformat(), "to": report.window.last_day.isoformat(),
                   "period": report.grain},
        "generated_at": report.generated_at.isoformat(),
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
            "top_customers": records(report.top_customers),
            "pipeline": records(report.pipeline),
        },
        "targets": records(report.targets),
    }
