"""The KPI report as one self-contained HTML page: a ``KPIReport`` laid out by ``templates/report.html.j2``.

This module prepares what the template shows (formatted numbers, tables, tiles, charts); the template holds the
layout and the words, the CSS sits next to it in ``templates/report.css``. Jinja2 escapes every text; only the
charts' SVG passes through as markup. The page needs nothing but a browser: no scripts, no links to other sites.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined

from features.kpi.attribution import METHODS, NOT_TOUCHES
from features.kpi.definitions import (
    COHORT_MATURITY_DAYS,
    CONTENT_WEIGHTS,
    LEAD_SOURCE,
    METRICS,
    MICRO_CONVERSIONS,
    TOUCH_CHANNELS,
)
from features.kpi.targets import PREDICTION_LEVEL, PROJECTION_PERIODS, STATUSES
from serving.report.cells import MISSING, Cell, Column, Row, Table, fmt, safe_svg, table_of
from serving.report.charts import (
    BAND_COLORS,
    METHOD_LABELS,
    chart_attribution,
    chart_calibration,
    chart_channel_leads,
    chart_channel_rates,
    chart_channel_value,
    chart_leads_and_conversion,
    chart_pipeline,
    chart_score_bands,
    chart_score_heatmap,
    chart_segments,
    chart_spend_and_cac,
    chart_traffic,
    period_labels,
)
from serving.report.data import SCATTER_POINTS, TOP_CONTENT, TOP_CUSTOMERS, KPIReport
from serving.report.sections import sections

SECTIONS = (("headline", "Headline"), ("channels", "Channels"), ("trends", "Trends"),
            ("attribution", "Channel contribution"), ("engagement", "Engagement and content"),
            ("engagement-time", "Engagement time"), ("brand", "Brand awareness"), ("experiments", "Experiments"),
            ("predictive", "Predictive KPIs"), ("targets", "Targets"), ("monitoring", "Monitoring"),
            ("glossary", "Glossary"))
"""The page's sections in order: anchor and title in the navigation bar."""

SHORT_LABELS: Mapping[str, str] = {
    "conversion_rate": "Conversion rate",
    "spend": "Spend",
    "cac": "Paid CAC",
    "roi": "ROI (paid)",
    "clv_to_cac": "CLV:CAC (paid)",
    "email_ctr": "Email CTR",
    "email_open_rate": "Email open rate",
    "ad_ctr": "Ad CTR",
    "social_engagement_rate": "Social engagement",
    "engagement_index": "Engagement index",
}
"""Table headers where the full KPI name (in the glossary) is too long for a column."""


def _trend(value: Any, unit: str) -> str:
    """A target's trend per period with its sign: +2.0%, -150, or 0.0% for no change."""
    text = fmt(value, unit)
    if text == MISSING:
        return text
    if set(text.lstrip("-")) <= set("0.,%\u00d7"):
        return text.lstrip("-")
    return text if text.startswith("-") else f"+{text}"


@dataclass(frozen=True)
class Tile:
    """A headline figure: what it is, its value and a short hint of what it means."""

    label: str
    value: str
    hint: str


def _unit(metric: str) -> str:
    """How ``fmt`` shows a KPI: its own unit for counts, money, percentages and ratios, else a rate."""
    return {"count": "count", "money": "money", "percent": "percent", "ratio": "ratio"}.get(METRICS[metric].unit,
                                                                                           "rate")


def _metric_column(name: str) -> Column:
    """The table column of a KPI, headed by its short label."""
    return name, SHORT_LABELS.get(name, METRICS[name].label), _unit(name)


def _tiles(report: KPIReport) -> list[Tile]:
    """The headline figures of the window, each saying what it counts, and the value of the open pipeline."""
    t = report.totals
    pipeline = report.pipeline["pipeline_value"].sum() if not report.pipeline.empty else math.nan
    paid = fmt(t["paid_new_customers"], "count")
    return [
        Tile("Leads", fmt(t["leads"], "count"), "created in the window"),
        Tile("Converted leads", fmt(t["conversions"], "count"),
             f"of those leads became customers: {fmt(t['conversion_rate'], 'percent')} conversion rate"),
        Tile("New customers (all)", fmt(t["new_customers"], "count"),
             f"acquired in the window, with or without a lead; {paid} through channels with spend"),
        Tile("Marketing spend", fmt(t["spend"], "money"), "account currency"),
        Tile("Paid CAC", fmt(t["paid_cac"], "money"), f"spend / the {paid} new customers of channels with spend"),
        Tile("Blended CAC", fmt(t["blended_cac"], "money"),
             f"spend / all {fmt(t['new_customers'], 'count')} new customers"),
        Tile("Attributed revenue", fmt(t["attributed_revenue"], "money"), "of all new customers, to date"),
        Tile("Marketing ROI (paid)", fmt(t["roi"], "percent"),
             "(revenue of the paid channels' new customers - spend) / spend"),
        Tile("CLV:CAC (paid)", fmt(t["clv_to_cac"], "ratio"), "lifetime value per paid new customer / paid CAC"),
        Tile("Web sessions", fmt(t["web_sessions"], "count"), f"{fmt(t['page_views'], 'count')} page views"),
        Tile("Open pipeline value", fmt(pipeline, "money"), "probability x predicted CLV"),
    ]


def _channels(report: KPIReport) -> dict[str, Any]:
    """Acquisition KPIs per channel: the table, conversion and ROI, cost against value."""
    acquisition = [("channel", "Channel", "text"), *map(_metric_column, (
        "leads", "conversions", "conversion_rate", "new_customers", "spend", "cac", "attributed_revenue", "roi",
        "historic_cltv", "predicted_cltv", "clv_to_cac"))]
    return {
        "table": table_of(report.channels, acquisition),
        "rates_chart": safe_svg(chart_channel_rates(report.channels)),
        "value_chart": safe_svg(chart_channel_value(report.channels)),
    }


def _trends(report: KPIReport) -> dict[str, Any]:
    """KPIs per period: four charts and the table (periods only partly in the window in grey)."""
    columns = [("period_label", report.grain.capitalize(), "label"), *map(_metric_column, (
        "leads", "conversion_rate", "new_customers", "spend", "cac", "revenue", "roi", "web_sessions",
        "page_views", "email_ctr", "engagement_index"))]
    return {
        "leads_chart": safe_svg(chart_leads_and_conversion(report.trend, report.grain)),
        "spend_chart": safe_svg(chart_spend_and_cac(report.trend, report.grain)),
        "channel_chart": safe_svg(chart_channel_leads(report.channel_trend, report.grain)),
        "traffic_chart": safe_svg(chart_traffic(report.trend, report.grain)),
        "table": table_of(report.trend.assign(period_label=period_labels(report.trend["period"], report.grain)),
                       columns, row_class=lambda r: "" if r.get("complete") else "partial"),
    }


def _attribution(report: KPIReport) -> dict[str, Any]:
    """Conversions credited to each touchpoint channel by the four attribution methods."""
    columns = [("channel", "Channel", "text"),
               *((m, f"{METHOD_LABELS[m]} (conversions)", "decimal") for m in METHODS),
               *((f"{m}_share", f"{METHOD_LABELS[m]} (share)", "percent") for m in METHODS),
               ("removal_effect", "Markov removal effect", "percent")]
    return {
        "conversions": fmt(report.totals["conversions"], "count"),
        "not_touches": NOT_TOUCHES,
        "chart": safe_svg(chart_attribution(report.attribution)),
        "table": table_of(report.attribution, columns),
    }


def touch_mapping() -> str:
    """How activity channels count in attribution (:data:`TOUCH_CHANNELS`), as people read it."""
    own = "the lead's own source channel"
    return ", ".join(f"{name} \u2192 {own if to == LEAD_SOURCE else to}" for name, to in TOUCH_CHANNELS.items())


def _engagement(report: KPIReport) -> dict[str, Any]:
    """Engagement KPIs per channel and the most influential content items."""
    columns = [("channel", "Channel", "text"), *map(_metric_column, (
        "web_sessions", "page_views", "email_ctr", "email_open_rate", "ad_ctr", "social_engagement_rate",
        "engagement_index"))]
    content = [("content_id", "Content", "text"), ("interactions", "Interactions", "count"),
               ("leads", "Leads", "count"), ("weighted_interactions", "Weighted interactions", "decimal"),
               ("influence_index", "Influence index (100 = average)", "decimal"),
               ("converted_leads", "Leads converted after it", "count"),
               ("lead_conversion_rate", "Their conversion rate", "percent")]
    return {"channels": table_of(report.channels, columns), "top": TOP_CONTENT,
            "content": table_of(report.content, content)}


def _lead_scores(report: KPIReport) -> dict[str, Any] | None:
    """The lead-score part of the predictive section; None before leads are scored."""
    if report.score_summary.empty:
        return None
    summary = [("channel", "Channel", "text"), ("scored_leads", "Scored leads", "count"),
               ("mean_score", "Mean score", "decimal"), ("median_score", "Median score", "decimal"),
               *((f"share_{b}", f"Band {b}", "percent") for b in BAND_COLORS)]
    pipeline = [("channel", "Channel", "text"), ("open_leads", "Open scored leads", "count"),
                ("expected_conversions", "Expected conversions", "decimal"),
                ("pipeline_value", "Pipeline value", "money"), ("mean_score", "Mean score", "decimal"),
                ("band_A_leads", "Band A leads", "count")]
    return {
        "heatmap_chart": safe_svg(chart_score_heatmap(report.score_distribution)),
        "bands_chart": safe_svg(chart_score_bands(report.score_summary)),
        "table": table_of(report.score_summary, summary),
        "pipeline_chart": safe_svg(chart_pipeline(report.pipeline)),
        "pipeline": table_of(report.pipeline, pipeline),
    }


def scores_as_of_text(scores_as_of: tuple[Any, Any]) -> str:
    """When the lead scores are as of, as people read it: one instant, or the range when runs differ."""
    first, last = scores_as_of
    if first is None:
        return "none yet"
    first, last = (f"{pd.Timestamp(t):%Y-%m-%d %H:%M}" for t in (first, last))
    return f"as of {first} UTC" if first == last else f"as of {first} to {last} UTC"


MODEL_WORDS: Mapping[str, str] = {
    "retrain": "a model trained at each date by the champion's recipe on the data before that date",
    "current": "the current champion (optimistic: it was trained on data overlapping these dates)",
}


def _calibration(report: KPIReport) -> dict[str, Any] | None:
    """Conversion by score band from the latest backtest, pooled over its as-of dates; None without a backtest."""
    if report.backtest is None:
        return None
    about = report.backtest.summary()
    recipe = about["recipe"] or {}
    version = f"v{about['model_version']}" if about["model_version"] else "none registered"
    pooled = [("band", "Band", "text"), ("leads", "Leads open at the dates", "count"),
              ("conversions", "Converted within the horizon", "count"),
              ("predicted_rate", "Predicted (mean probability)", "small_percent"),
              ("actual_rate", "Actual conversion rate", "small_percent")]
    per_date = [("as_of", "As of", "date"), ("leads", "Open leads", "count"), ("conversions", "Converted", "count"),
                ("base_rate", "Base rate", "percent"), ("mean_probability", "Mean probability", "percent"),
                ("roc_auc", "ROC AUC", "rate"), ("pr_auc", "PR AUC", "rate"),
                ("lift_top10", "Lift at top 10%", "ratio"), ("trained_to", "Model trained to", "date")]
    return {
        "backtest_id": about["backtest_id"],
        "created_at": fmt(about["created_at"], "text").replace("T", " "),
        "dates": report.backtest.runs["as_of"].size,
        "first": fmt(about["as_of_from"], "date"),
        "last": fmt(about["as_of_to"], "date"),
        "horizon": about["horizon_days"],
        "model": MODEL_WORDS.get(about["model"], about["model"]),
        "optimistic": about["model"] == "current",
        "champion": version,
        "recipe": recipe.get("source", "unknown"),
        "chart": safe_svg(chart_calibration(report.calibration)),
        "table": table_of(report.calibration, pooled),
        "per_date": table_of(report.backtest.runs, per_date),
    }


def _customers(report: KPIReport) -> dict[str, Any] | None:
    """The customer-value part of the predictive section; None before customers are scored."""
    if report.segments.empty:
        return None
    segments = [("segment", "Segment", "text"), ("customers", "Customers", "count"), ("share", "Share", "percent"),
                ("mean_clv", "Mean predicted CLV", "money"), ("total_clv", "Total predicted CLV", "money"),
                ("mean_p_alive", "Mean P(alive)", "probability")]
    top = [("customer_id", "Customer", "text"), ("segment", "Segment", "text"), ("clv", "Predicted CLV", "money"),
           ("p_alive", "P(alive)", "probability"), ("revenue_to_date", "Revenue to date", "money"),
           ("last_order_at", "Last order", "date"), ("acquisition_channel", "Channel", "text")]
    return {
        "segments_chart": safe_svg(chart_segments(report.segment_points)),
        "sample": f"{SCATTER_POINTS:,}",
        "segments": table_of(report.segments, segments),
        "top": TOP_CUSTOMERS,
        "top_customers": table_of(report.top_customers, top),
        "model": _clv_model(report.clv_model),
    }


def _clv_model(note: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The CLV model behind the customer scores, its segment basis and its training warnings, worded."""
    if not note:
        return None
    from training.clv.purchases import MODEL_LABELS

    low, high = note["p_alive_range"]
    spread = ("" if low is None else f"P(alive) of the scored customers runs from {low:.3f} to {high:.3f} (1st to "
              "99th percentile). ")
    if note["segments_by"] == "p_alive":
        basis = "Segments go by P(alive) and predicted value."
    else:
        basis = ("P(alive) tells no one apart here, so segments go by value and recency instead: at risk and lost "
                 "are the customers longest without a purchase.")
    if note.get("segment_rule_version") == 1:
        basis += " Its segment rule predates keeping one-time buyers out of loyal and champions."
    elif _current_segment_rule(note):
        basis += " A one-time buyer is never loyal or a champion."
    if note["segments_by_source"] != "model":
        basis += " (Inferred from the scores: the model's own record is unavailable.)"
    version = f" v{note['model_version']}" if note.get("model_version") else ""
    return {
        "name": f"{note.get('model_name') or 'unknown'}{version}",
        "kind": MODEL_LABELS.get(note.get("model") or "", ""),
        "text": spread + basis,
        "warnings": list(note["warnings"]),
        "unknown": None if note["warnings_source"] == "model" else note["warnings_source"],
    }


def _current_segment_rule(note: Mapping[str, Any] | None) -> bool:
    """Whether the CLV model behind the scores is known to follow the current segment rule (version 2: one-time
    buyers kept out of loyal and champions, recency when P(alive) tells no one apart); format-1 models keep
    version 1, and without the model's training run the rule is unknown."""
    return bool(note) and (note.get("segment_rule_version") or 0) >= 2


def _targets(report: KPIReport) -> Table | None:
    """Each SMART target with its goal, current value, trend, projection and status; None without targets."""
    if report.targets.empty:
        return None
    header = [Cell(title, css) for title, css in (
        ("Target", "txt"), ("Metric", "txt"), ("Scope", "txt"), ("Goal", "num"), ("Deadline", "txt"),
        (f"Current (latest complete {report.grain}, from)", "num"), (f"Trend per {report.grain}", "num"),
        ("Projected at deadline", "num"), (f"{PREDICTION_LEVEL:.0%} band", "num"), ("Status", "txt"))]
    rows = []
    for row in report.targets.to_dict("records"):
        unit = _unit(row["metric"])
        direction = "\u2265" if row["direction"] == "at_least" else "\u2264"
        status = row["status"] if row["status"] in STATUSES else "no_data"
        rows.append(Row([
            Cell(row["name"], "txt"),
            Cell(METRICS[row["metric"]].label, "txt"),
            Cell(row["scope"], "txt nowrap"),
            Cell(f"{direction} {fmt(row['target'], unit)}", "num"),
            Cell(fmt(row["deadline"], "date"), "txt nowrap"),
            Cell(_current(row["current"], row["current_period"], unit), "num"),
            Cell(_trend(row["trend_per_period"], unit), "num"),
            Cell(fmt(row["projected"], unit), "num"),
            Cell(_band(row["projected_low"], row["projected_high"], unit), "num nowrap"),
            Cell(status.replace("_", " "), "txt", badge=status),
        ]))
    return Table(header, rows)


def _current(value: Any, period: Any, unit: str) -> str:
    """A target's current value and the period it is of (cohort metrics: the latest mature one)."""
    text = fmt(value, unit)
    return text if text == MISSING or period is None or pd.isna(period) else f"{text} ({fmt(period, 'date')})"


def _band(low: Any, high: Any, unit: str) -> str:
    """A projection's band as ``low to high``; a dash when there were too few periods to estimate it."""
    low_text, high_text = fmt(low, unit), fmt(high, unit)
    return MISSING if MISSING in (low_text, high_text) else f"{low_text} to {high_text}"


def _sources(rows: Mapping[str, int]) -> str:
    """The rows the report was computed from, for the footer."""
    return (f"{rows['leads']:,} leads, {rows['activities']:,} activities, {rows['customers']:,} customers, "
            f"{rows['orders']:,} orders, {rows['marketing_spend']:,} spend rows, {rows['lead_scores']:,} lead "
            f"scores, {rows['customer_scores']:,} customer scores")


@cache
def _environment() -> Environment:
    """The Jinja2 environment of the page's templates, made on first use; every value is HTML-escaped."""
    return Environment(loader=PackageLoader("serving.report", "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def render_html(report: KPIReport) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG; no scripts, no external resources)."""
    return _environment().get_template("report.html.j2").render(
        window=report.window.label,
        generated_at=report.generated_at.isoformat(sep=" "),
        grain=report.grain,
        sections=SECTIONS,
        tiles=_tiles(report),
        channels=_channels(report),
        trends=_trends(report),
        attribution=_attribution(report),
        engagement=_engagement(report),
        lead_scores=_lead_scores(report),
        scores_as_of=scores_as_of_text(report.scores_as_of),
        calibration=_calibration(report),
        customers=_customers(report),
        current_segment_rule=_current_segment_rule(report.clv_model),
        targets=_targets(report),
        projection={"periods": PROJECTION_PERIODS, "level": f"{PREDICTION_LEVEL:.0%}",
                    "maturity_days": COHORT_MATURITY_DAYS},
        touch_mapping=touch_mapping(),
        metrics=[(metric.label, metric.definition) for metric in METRICS.values()],
        content_weights=", ".join(f"{name.replace('_', ' ')} {weight:g}"
                                  for name, weight in sorted(CONTENT_WEIGHTS.items(), key=lambda kv: kv[1])),
        micro_conversions=", ".join(name.replace("_", " ") for name in MICRO_CONVERSIONS),
        sources=_sources(report.rows),
        **sections(report),
    )
