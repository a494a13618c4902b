"""The report's sections on engagement time, the brand awareness proxies and the A/B tests, ready for the template.

Each function turns part of a ``KPIReport`` into tables and words; ``serving.report.page`` passes them on to
``templates/report.html.j2``. Like the rest of the page, everything here is plain text the template escapes.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from features.kpi.awareness import BRAND_AWARENESS_DEFINITION
from features.kpi.engagement import ENGAGEMENT_TIME_DEFINITION
from features.kpi.experiments import ALPHA, MIN_TRIALS, PEEKING_CAUTION, RUNNING_DAYS, ExperimentResult
from serving.report.cells import Cell, Column, Row, Table, fmt, safe_svg, table_of
from serving.report.charts import chart_brand_shares, chart_realized_auc, period_labels
from serving.report.data import EXPERIMENT_METRIC, TOP_ENGAGED_CONTENT, KPIReport

EXPERIMENT_DEFINITION = (
    f"An experiment (A/B test) assigns leads to variants (experiment_assignments); the report compares them on "
    f"{EXPERIMENT_METRIC}: the share of assigned leads converting after assignment, up to the window's end. The best "
    f"challenger is compared with the control (the variant called control, else A): the difference with its "
    f"{1 - ALPHA:.0%} interval and p-value (Agresti-Caffo; Bonferroni-corrected for several challengers). Winner: "
    f"the difference is significant; no detectable difference: it is not (which is not proof of no effect); too "
    f"little data: a variant has fewer than {MIN_TRIALS} leads. Running: a lead was assigned within {RUNNING_DAYS} "
    f"days of the window's end. {PEEKING_CAUTION}"
)
"""The glossary text of the experiments section."""


def _engagement_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (an engagement-time table) with hours and minutes next to its seconds."""
    return frame.assign(engagement_hours=frame["engagement_seconds"] / 3600,
                        minutes_per_engaged_lead=frame["seconds_per_engaged_lead"] / 60,
                        minutes_per_session=frame["seconds_per_session"] / 60)


_ENGAGEMENT_COLUMNS: list[Column] = [
    ("engagement_hours", "Engagement time (h)", "decimal"), ("sessions", "Web sessions", "count"),
    ("webinars", "Webinars", "count"), ("page_views_outside_sessions", "Page views outside sessions", "count"),
    ("engaged_leads", "Engaged leads", "count"), ("minutes_per_engaged_lead", "Minutes per engaged lead", "decimal"),
    ("minutes_per_session", "Minutes per session", "decimal"),
]


def engagement_time_section(report: KPIReport) -> dict[str, Any]:
    """Engagement time in the window: totals in words, per source channel and the most engaging content items."""
    result = report.engagement_time
    t = report.totals
    return {
        "hours": fmt(t["engagement_time_seconds"] / 3600, "decimal"),
        "sessions": fmt(t["engagement_time_sessions"], "count"),
        "webinars": fmt(t["engagement_time_webinars"], "count"),
        "leads": fmt(t["engagement_time_engaged_leads"], "count"),
        "per_lead": fmt(t["engagement_time_per_engaged_lead_seconds"] / 60, "decimal"),
        "per_session": fmt(t["engagement_time_per_session_seconds"] / 60, "decimal"),
        "in_sessions": fmt(t["engagement_time_page_views_in_sessions"], "count"),
        "top": TOP_ENGAGED_CONTENT,
        "channels": table_of(_engagement_frame(result.by_channel), [("channel", "Channel", "text"),
                                                                    *_ENGAGEMENT_COLUMNS]),
        "content": table_of(_engagement_frame(result.by_content.head(TOP_ENGAGED_CONTENT)),
                            [("content_id", "Content", "text"), *_ENGAGEMENT_COLUMNS]),
        "warnings": list(result.warnings),
    }


_PROXIES = (
    ("search_click_share", "Branded-search share of search clicks", "percent"),
    ("search_lead_share", "Branded-search share of search leads", "percent"),
    ("direct_lead_share", "Direct-traffic share of leads", "percent"),
    ("social_reach_impressions", "Social reach (ad impressions)", "count"),
)


def _change(value: float, unit: str) -> str:
    """A trend per period with its sign: shares in percentage points, counts as they are; a dash when unknown."""
    if value is None or value != value:
        return fmt(None, "text")
    return f"{100 * value:+.2f} points" if unit == "percent" else f"{value:+,.0f}"


def brand_awareness_section(report: KPIReport) -> dict[str, Any]:
    """The brand awareness proxies: each over the window with its trend, the chart and the table per period."""
    result = report.brand_awareness
    t = report.totals
    proxies = Table(
        [Cell("Proxy", "txt"), Cell("Window", "num"), Cell(f"Trend per {report.grain}", "num")],
        [Row([Cell(label, "txt"), Cell(fmt(t[f"brand_{name}"], unit), "num"),
              Cell(_change(t[f"brand_{name}_trend_per_period"], unit), "num")]) for name, label, unit in _PROXIES],
    )
    trend = result.trend.assign(period_label=period_labels(result.trend["period"], report.grain))
    columns: list[Column] = [("period_label", report.grain.capitalize(), "label"),
                             *((name, label, unit) for name, label, unit in _PROXIES),
                             ("search_clicks_total", "Search clicks", "count"),
                             ("search_leads_total", "Search leads", "count"), ("leads_total", "Leads", "count")]
    return {
        "pattern": result.brand_pattern,
        "proxies": proxies,
        "chart": safe_svg(chart_brand_shares(result.trend, report.grain)),
        "table": table_of(trend, columns, row_class=lambda r: "" if r.get("complete") else "partial"),
        "warnings": list(result.warnings),
    }


def _verdict(result: ExperimentResult) -> Cell:
    """The experiment's verdict: the winner, "no detectable difference" or too little data, as a badge."""
    badge = {"winner": "on_track", "no_difference": "no_data", "too_little_data": "at_risk"}[result.verdict]
    text = f"winner: {result.winner}" if result.verdict == "winner" else result.verdict_text
    return Cell(text, "txt", badge=badge)


def _points(difference: float | None) -> str:
    """A difference of two rates in percentage points with its sign, e.g. +1.4; a dash when unknown."""
    return fmt(None, "text") if difference is None else f"{100 * difference:+.1f}"


def _experiment_row(result: ExperimentResult) -> Row:
    """One experiment: when, variants and their sizes, control and best challenger, difference and verdict."""
    rates = {v["variant"]: v for v in result.variants}
    control = rates[result.control]
    compared = rates.get(result.compared) if result.compared else None
    interval = ("" if result.ci_low is None or result.ci_high is None
                else f" ({_points(result.ci_low)} to {_points(result.ci_high)})")
    return Row([
        Cell(result.experiment, "txt"),
        Cell(f"{fmt(result.first_assigned, 'date')} to {fmt(result.last_assigned, 'date')}", "txt nowrap"),
        Cell(", ".join(f"{v['variant']} {v['n']:,}" for v in result.variants), "txt"),
        Cell(f"{result.control} {fmt(control['rate'], 'percent')}", "num"),
        Cell(f"{result.compared} {fmt(compared['rate'], 'percent')}" if compared else fmt(None, "text"), "num"),
        Cell(f"{_points(result.difference)}{interval}", "num nowrap"),
        Cell(fmt(result.p_value, "rate") if result.p_value is None or result.p_value >= 0.01 else "< 0.01", "num"),
        Cell(fmt(result.more_needed_per_variant, "count"), "num"),
        _verdict(result),
    ])


def _experiment_table(results: list[ExperimentResult]) -> Table:
    """The experiments as a table, one row each."""
    header = [Cell(title, css) for title, css in (
        ("Experiment", "txt"), ("Assigned", "txt"), ("Leads per variant", "txt"), ("Control conversion", "num"),
        ("Best challenger", "num"), (f"Difference, points ({1 - ALPHA:.0%} interval)", "num"), ("p-value", "num"),
        ("More leads needed per variant", "num"), ("Result", "txt"))]
    return Table(header, [_experiment_row(result) for result in results])


def experiments_section(report: KPIReport) -> dict[str, Any]:
    """Running and finished experiments, compared on conversion, with the verdict and the peeking caution."""
    results = report.experiments
    return {
        "any": bool(results),
        "as_of": f"{report.experiments_as_of:%Y-%m-%d %H:%M}",
        "running_days": RUNNING_DAYS,
        "running": _experiment_table([r for r in results if r.status == "running"]),
        "finished": _experiment_table([r for r in results if r.status == "finished"]),
        "caution": PEEKING_CAUTION,
        "warnings": [w for result in results for w in result.warnings],
    }


MONITORING_COLUMNS: list[Column] = [
    ("model", "Model", "text"), ("check", "Check", "text"), ("value", "Value", "decimal"),
    ("warn", "Warn at", "decimal"), ("alert", "Alert at", "decimal"), ("status", "Status", "text"),
    ("detail", "What was measured", "text"),
]


def monitoring_section(report: KPIReport) -> dict[str, Any]:
    """The latest monitoring run (its overall statuses and every check that is not ok) and the track record: each
    run's overall status per model and the lead champion's realized ROC AUC over time."""
    runs = report.monitoring
    if runs.empty:
        return {"any": False}
    latest_id = runs.loc[runs["as_of"].astype("datetime64[ns]").idxmax(), "run_id"]
    latest = runs[runs["run_id"] == latest_id]
    shown = latest[(latest["check"] == "overall") | latest["status"].isin(["warn", "alert"])]
    overall = runs[(runs["check"] == "overall") & (runs["model"] != "all")]
    record = (overall.pivot_table(index="as_of", columns="model", values="status", aggfunc="last")
              .reset_index().rename(columns={"as_of": "as of"}))
    auc = runs[(runs["check"] == "realized_auc") & runs["value"].notna()].drop_duplicates("as_of", keep="last")
    everything = latest[(latest["check"] == "overall") & (latest["model"] == "all")]["status"]
    models = [column for column in record.columns if column != "as of"]
    return {
        "any": True,
        "as_of": fmt(latest["as_of"].iloc[0], "date"),
        "status": str(everything.iloc[-1]) if not everything.empty else "ok",
        "latest": table_of(shown, MONITORING_COLUMNS),
        "record": table_of(record, [("as of", "As of", "date"), *((model, model, "text") for model in models)]),
        "chart": safe_svg(chart_realized_auc(auc)),
    }


def glossary_entries() -> list[tuple[str, str]]:
    """The glossary entries of these sections, from the modules' definitions."""
    return [("User engagement time", ENGAGEMENT_TIME_DEFINITION),
            ("Brand awareness (proxies)", BRAND_AWARENESS_DEFINITION),
            ("Experiments (A/B tests)", EXPERIMENT_DEFINITION)]


def sections(report: KPIReport) -> dict[str, Any]:
    """What the template's engagement-time, brand-awareness and experiments sections and glossary show."""
    return {
        "engagement_time": engagement_time_section(report),
        "brand": brand_awareness_section(report),
        "experiments": experiments_section(report),
        "monitoring": monitoring_section(report),
        "more_glossary": glossary_entries(),
    }
