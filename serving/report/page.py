"""The KPI report: every KPI of a window gathered once, then rendered as one self-contained HTML page.

The page needs nothing but a browser: CSS is inline, charts are inline SVG drawn with matplotlib's
object-oriented API (no pyplot state, no display), and there are no scripts and no links to other sites.
Order, for a marketer: headline tiles, channels, trends, channel contribution (attribution side by side),
engagement and content, the predictive view from the score tables, targets, and a glossary of every KPI.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure

from features.kpi.attribution import METHODS, NOT_TOUCHES, attribution_table, touchpoints
from features.kpi.targets import STATUSES, Target, evaluate_targets, status_frame
from features.kpi.metrics import (
    CONTENT_WEIGHTS,
    METRICS,
    MICRO_CONVERSIONS,
    CRMFrames,
    Window,
    content_influence,
    default_grain,
    kpi_table,
    kpi_totals,
)
from features.kpi.predictive import (
    conversion_by_band,
    lead_pipeline,
    score_distribution,
    score_summary,
    segment_summary,
    top_customers,
)

TOP_CONTENT = 15
TOP_CUSTOMERS = 15
SCATTER_POINTS = 1_500

METHOD_LABELS: Mapping[str, str] = {
    "first_touch": "First touch",
    "last_touch": "Last touch",
    "linear": "Linear",
    "markov": "Markov (data-driven)",
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
    calibration: pd.DataFrame
    segments: pd.DataFrame
    segment_points: pd.DataFrame
    top_customers: pd.DataFrame
    pipeline: pd.DataFrame
    targets: pd.DataFrame


def build_report(
    crm: CRMFrames,
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


def _plain(value: Any) -> Any:
    """A JSON-ready value: NaN and NaT become None, numpy scalars Python numbers, timestamps ISO text."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of ``frame`` as JSON-ready dicts."""
    return [{str(k): _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


def report_json(report: KPIReport) -> dict[str, Any]:
    """The report's KPIs as one JSON-ready object (``channels``, ``trend``, ``targets``, ...)."""
    return {
        "window": {"from": report.window.start.date().isoformat(), "to": report.window.last_day.isoformat(),
                   "period": report.grain},
        "generated_at": report.generated_at.isoformat(),
        "rows": dict(report.rows),
        "totals": {k: _plain(v) for k, v in report.totals.items()},
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


# ---- formatting -------------------------------------------------------------------------------------------

_MISSING = "\u2013"


def fmt(value: Any, unit: str) -> str:
    """A number as the page shows it: thousands separators, percentages, ratios with x; missing as a dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or value is pd.NaT:
        return _MISSING
    if unit in ("text", "label"):
        return str(value)
    if unit == "date":
        return pd.Timestamp(value).date().isoformat()
    number = float(value)
    if unit == "count":
        return f"{number:,.0f}"
    if unit == "money":
        return f"{number:,.0f}" if abs(number) >= 1000 else f"{number:,.2f}"
    if unit == "percent":
        return f"{100 * number:,.1f}%"
    if unit == "ratio":
        return f"{number:,.2f}\u00d7"
    if unit in ("rate", "probability"):
        return f"{number:,.2f}"
    if unit == "decimal":
        return f"{number:,.1f}"
    raise ValueError(f"unknown unit {unit!r}")


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


Column = tuple[str, str, str]
"""A table column: frame column, header, unit."""


_CELL_CLASSES: Mapping[str, str] = {"text": "txt", "label": "txt nowrap", "date": "txt nowrap"}


def _table(frame: pd.DataFrame, columns: Sequence[Column], row_class: Callable[[Mapping], str] | None = None) -> str:
    if frame.empty:
        return '<p class="empty">No data for this window.</p>'
    head = "".join(f'<th class="{_CELL_CLASSES.get(u, "num")}">{_e(h)}</th>' for _, h, u in columns)
    body = []
    for row in frame.to_dict("records"):
        cells = "".join(
            f'<td class="{_CELL_CLASSES.get(u, "num")}">{_e(fmt(row.get(c), u))}</td>' for c, _, u in columns
        )
        css = f' class="{row_class(row)}"' if row_class else ""
        body.append(f"<tr{css}>{cells}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


SHORT_LABELS: Mapping[str, str] = {
    "conversion_rate": "Conversion rate",
    "new_customers": "New customers",
    "spend": "Spend",
    "cac": "CAC",
    "roi": "ROI",
    "clv_to_cac": "CLV:CAC",
    "email_ctr": "Email CTR",
    "email_open_rate": "Email open rate",
    "ad_ctr": "Ad CTR",
    "social_engagement_rate": "Social engagement",
    "engagement_index": "Engagement index",
}
"""Table headers where the full KPI name (in the glossary) is too long for a column."""


def _unit(metric: str) -> str:
    return {"count": "count", "money": "money", "percent": "percent", "ratio": "ratio"}.get(METRICS[metric].unit,
                                                                                           "rate")


def _metric_column(name: str) -> Column:
    return name, SHORT_LABELS.get(name, METRICS[name].label), _unit(name)


# ---- charts -------------------------------------------------------------------------------------------------

PALETTE = ("#2f6db5", "#e0823d", "#3a9d5d", "#c8443f", "#8064a9", "#8c6d4f", "#d46fb0", "#6f7782", "#b3b535",
           "#3bb3c3")
BAND_COLORS = {"A": "#2d8a4e", "B": "#7cbf6b", "C": "#e8b44d", "D": "#d0573f"}


def _colors(names: Sequence[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(map(str, names)))}


def _svg(fig: Figure, title: str) -> str:
    """The figure as an inline ``<svg>`` element with a title for screen readers."""
    buffer = io.StringIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": title}):
        fig.savefig(buffer, format="svg", metadata={"Title": title, "Date": None, "Creator": None,
                                                     "Format": None, "Type": None})
    text = buffer.getvalue()
    svg = text[text.index("<svg"):]
    return svg.replace("<svg ", f'<svg role="img" aria-label="{_e(title)}" class="chart" ', 1)


def _figure(width: float = 7.2, height: float = 3.2) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _style(ax: Any, title: str, ylabel: str = "", xlabel: str = "") -> None:
    ax.set_title(title, fontsize=11, loc="left")
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)


def _period_labels(periods: pd.Series, grain: str) -> list[str]:
    stamps = [pd.Timestamp(p) for p in periods]
    if grain == "quarter":
        return [f"{p.year}-Q{(p.month - 1) // 3 + 1}" for p in stamps]
    return [p.strftime("%Y-%m" if grain == "month" else "%Y-%m-%d") for p in stamps]


def _thin_ticks(ax: Any, labels: list[str], most: int = 12) -> None:
    step = max(1, math.ceil(len(labels) / most))
    positions = list(range(0, len(labels), step))
    ax.set_xticks(positions, [labels[i] for i in positions], rotation=45, ha="right", fontsize=8)


def chart_leads_and_conversion(trend: pd.DataFrame, grain: str) -> str:
    """Leads per period (bars) and the cohort conversion rate (line, %)."""
    if trend.empty:
        return ""
    fig = _figure()
    ax = fig.subplots()
    x = np.arange(len(trend))
    labels = _period_labels(trend["period"], grain)
    ax.bar(x, trend["leads"], color="#9dbbe0", label="Leads")
    _style(ax, f"Leads per {grain} and lead-to-customer conversion rate", "Leads")
    rate_ax = ax.twinx()
    rate_ax.plot(x, 100 * trend["conversion_rate"], color="#c8443f", marker="o", markersize=3,
                 label="Conversion rate (%)")
    rate_ax.set_ylabel("Conversion rate (%)")
    rate_ax.set_ylim(bottom=0)
    rate_ax.spines[["top"]].set_visible(False)
    _thin_ticks(ax, labels)
    handles = ax.get_legend_handles_labels()[0] + rate_ax.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper left", fontsize=8, frameon=False)
    return _svg(fig, f"Leads per {grain} and lead-to-customer conversion rate")


def chart_spend_and_cac(trend: pd.DataFrame, grain: str) -> str:
    """Spend per period (bars) and customer acquisition cost (line), in money."""
    if trend.empty or not trend["spend"].fillna(0).any():
        return ""
    fig = _figure()
    ax = fig.subplots()
    x = np.arange(len(trend))
    ax.bar(x, trend["spend"], color="#f0b98a", label="Spend")
    _style(ax, f"Marketing spend and customer acquisition cost per {grain}", "Spend (account currency)")
    cac_ax = ax.twinx()
    cac_ax.plot(x, trend["cac"], color="#2f6db5", marker="o", markersize=3, label="CAC")
    cac_ax.set_ylabel("CAC (account currency)")
    cac_ax.set_ylim(bottom=0)
    cac_ax.spines[["top"]].set_visible(False)
    _thin_ticks(ax, _period_labels(trend["period"], grain))
    handles = ax.get_legend_handles_labels()[0] + cac_ax.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper left", fontsize=8, frameon=False)
    return _svg(fig, f"Marketing spend and customer acquisition cost per {grain}")


def chart_traffic(trend: pd.DataFrame, grain: str) -> str:
    """Web sessions and page views per period."""
    if trend.empty or not (trend["web_sessions"].fillna(0).any() or trend["page_views"].fillna(0).any()):
        return ""
    fig = _figure()
    ax = fig.subplots()
    x = np.arange(len(trend))
    ax.plot(x, trend["page_views"], color="#8064a9", marker="o", markersize=3, label="Page views")
    ax.plot(x, trend["web_sessions"], color="#3a9d5d", marker="o", markersize=3, label="Web sessions")
    _style(ax, f"Website traffic per {grain}", "Count")
    ax.set_ylim(bottom=0)
    _thin_ticks(ax, _period_labels(trend["period"], grain))
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    return _svg(fig, f"Website traffic per {grain}")


def chart_channel_leads(channel_trend: pd.DataFrame, grain: str) -> str:
    """Leads per period by source channel (stacked areas)."""
    if channel_trend.empty or not channel_trend["leads"].fillna(0).any():
        return ""
    wide = channel_trend.pivot_table(index="period", columns="channel", values="leads", aggfunc="sum").fillna(0)
    wide = wide.loc[:, wide.sum() > 0]
    wide = wide[wide.sum().sort_values(ascending=False).index]
    colors = _colors(wide.columns)
    fig = _figure()
    ax = fig.subplots()
    x = np.arange(len(wide))
    ax.stackplot(x, wide.T.to_numpy(), labels=list(wide.columns), colors=[colors[c] for c in wide.columns],
                 alpha=0.9)
    _style(ax, f"Leads per {grain} by source channel", "Leads")
    _thin_ticks(ax, _period_labels(pd.Series(wide.index), grain))
    ax.legend(loc="upper left", fontsize=7, frameon=False, ncols=2)
    return _svg(fig, f"Leads per {grain} by source channel")


def chart_channel_value(channels: pd.DataFrame) -> str:
    """CAC next to historic and predicted CLTV per channel (money), for channels with spend."""
    data = channels[(channels["spend"].fillna(0) > 0) & channels["cac"].notna()]
    if data.empty:
        return ""
    fig = _figure(7.2, 0.5 + 0.45 * len(data) + 0.8)
    ax = fig.subplots()
    y = np.arange(len(data))
    h = 0.27
    ax.barh(y - h, data["cac"], h, color="#c8443f", label="CAC")
    ax.barh(y, data["historic_cltv"], h, color="#2f6db5", label="Historic CLTV")
    ax.barh(y + h, data["predicted_cltv"].fillna(0), h, color="#9dbbe0", label="Predicted CLTV")
    ax.set_yticks(y, data["channel"])
    ax.invert_yaxis()
    _style(ax, "Acquisition cost against customer value, per channel", xlabel="Account currency per customer")
    ax.grid(axis="x", color="#e5e5e5", linewidth=0.8)
    ax.grid(axis="y", visible=False)
    fig.legend(loc="outside lower center", fontsize=8, frameon=False, ncols=3)
    return _svg(fig, "Acquisition cost against customer value, per channel")


def chart_channel_rates(channels: pd.DataFrame) -> str:
    """Conversion rate (%) and ROI (%) per channel, side by side."""
    data = channels[channels["leads"].fillna(0) > 0]
    if data.empty:
        return ""
    fig = _figure(7.2, 0.6 + 0.35 * len(data) + 0.8)
    left, right = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(data))
    left.barh(y, 100 * data["conversion_rate"].fillna(0), color="#3a9d5d")
    left.set_yticks(y, data["channel"])
    left.invert_yaxis()
    _style(left, "Lead-to-customer conversion", xlabel="Conversion rate (%)")
    roi = 100 * data["roi"]
    right.barh(y, roi.fillna(0), color=np.where(roi.fillna(0) >= 0, "#2f6db5", "#c8443f"))
    right.axvline(0, color="#555", linewidth=0.8)
    _style(right, "Marketing ROI (no bar: no spend)", xlabel="ROI (%)")
    for ax in (left, right):
        ax.grid(axis="x", color="#e5e5e5", linewidth=0.8)
        ax.grid(axis="y", visible=False)
    return _svg(fig, "Conversion rate and marketing ROI per channel")


def chart_attribution(attribution: pd.DataFrame) -> str:
    """Conversions credited per channel by each attribution method (grouped bars)."""
    if attribution.empty or not attribution[list(METHODS)].to_numpy().any():
        return ""
    fig = _figure(9.0, 1.0 + 0.42 * len(attribution) + 0.6)
    ax = fig.subplots()
    y = np.arange(len(attribution))
    h = 0.8 / len(METHODS)
    for i, method in enumerate(METHODS):
        ax.barh(y + (i - (len(METHODS) - 1) / 2) * h, attribution[method], h, label=METHOD_LABELS[method],
                color=PALETTE[i])
    ax.set_yticks(y, attribution["channel"])
    ax.invert_yaxis()
    _style(ax, "Conversions credited to each channel, by attribution method", xlabel="Conversions credited")
    ax.grid(axis="x", color="#e5e5e5", linewidth=0.8)
    ax.grid(axis="y", visible=False)
    fig.legend(loc="outside lower center", fontsize=8, frameon=False, ncols=len(METHODS))
    return _svg(fig, "Conversions credited to each channel, by attribution method")


def chart_score_bands(summary: pd.DataFrame) -> str:
    """Share of each channel's scored leads in bands A to D (stacked bars, %)."""
    if summary.empty:
        return ""
    fig = _figure(7.2, 0.8 + 0.35 * len(summary) + 0.6)
    ax = fig.subplots()
    y = np.arange(len(summary))
    left = np.zeros(len(summary))
    for band, color in BAND_COLORS.items():
        share = 100 * summary[f"share_{band}"].to_numpy(dtype="float64")
        ax.barh(y, share, left=left, color=color, label=f"Band {band}")
        left += share
    ax.set_yticks(y, summary["channel"])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    _style(ax, "Lead score bands per source channel", xlabel="Share of scored leads (%)")
    ax.grid(axis="y", visible=False)
    fig.legend(loc="outside lower center", fontsize=8, frameon=False, ncols=len(BAND_COLORS))
    return _svg(fig, "Lead score bands per source channel")


def chart_score_heatmap(distribution: pd.DataFrame) -> str:
    """Score distribution per channel: share of the channel's scored leads in each score bin (heat map, %)."""
    if distribution.empty or not distribution["leads"].any():
        return ""
    wide = distribution.pivot(index="channel", columns="score_bin", values="leads")
    wide = wide[list(dict.fromkeys(distribution["score_bin"]))]
    wide = wide.loc[wide.sum(axis=1).sort_values(ascending=False, kind="stable").index]
    shares = 100 * wide.div(wide.sum(axis=1).where(lambda t: t > 0), axis=0).fillna(0.0)
    fig = _figure(7.2, 0.9 + 0.32 * len(shares) + 0.6)
    ax = fig.subplots()
    image = ax.imshow(shares.to_numpy(), aspect="auto", cmap="Blues", vmin=0)
    ax.set_xticks(range(shares.shape[1]), shares.columns, fontsize=8)
    ax.set_yticks(range(shares.shape[0]), shares.index, fontsize=8)
    ax.set_xlabel("Lead score (0-100)")
    ax.set_title("Lead score distribution per source channel", fontsize=11, loc="left")
    fig.colorbar(image, ax=ax, label="Share of the channel's scored leads (%)", shrink=0.9)
    return _svg(fig, "Lead score distribution per source channel")


def chart_calibration(calibration: pd.DataFrame) -> str:
    """Actual conversion rate by score band next to the mean predicted probability (%)."""
    data = calibration[calibration["scored_leads"] > 0]
    if data.empty:
        return ""
    fig = _figure(5.6, 3.0)
    ax = fig.subplots()
    x = np.arange(len(data))
    ax.bar(x - 0.2, 100 * data["mean_probability"], 0.4, color="#9dbbe0", label="Predicted (mean probability)")
    ax.bar(x + 0.2, 100 * data["actual_rate"].fillna(0), 0.4, color="#2f6db5", label="Actual conversion rate")
    ax.set_xticks(x, [f"Band {b}" for b in data["band"]])
    _style(ax, "Predicted and actual conversion by score band", "Leads converting (%)")
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    return _svg(fig, "Predicted and actual conversion by score band")


def chart_segments(points: pd.DataFrame) -> str:
    """Customers by P(alive) and predicted CLV, coloured by segment (a sample if there are many)."""
    if points.empty:
        return ""
    colors = _colors(points["segment"].unique())
    fig = _figure(7.2, 3.4)
    ax = fig.subplots()
    for segment, group in points.groupby("segment"):
        ax.scatter(group["p_alive"], group["clv"], s=8, alpha=0.6, color=colors[str(segment)], label=str(segment),
                   linewidths=0)
    _style(ax, "Customers by probability of being active and predicted CLV", "Predicted CLV (account currency)",
           "P(alive)")
    ax.set_xlim(-0.02, 1.02)
    ax.legend(loc="upper left", fontsize=8, frameon=False, markerscale=2)
    return _svg(fig, "Customers by probability of being active and predicted CLV")


def chart_pipeline(pipeline: pd.DataFrame) -> str:
    """Value-weighted open pipeline per channel (money)."""
    if pipeline.empty or not pipeline["pipeline_value"].fillna(0).any():
        return ""
    fig = _figure(7.2, 0.6 + 0.35 * len(pipeline) + 0.6)
    ax = fig.subplots()
    y = np.arange(len(pipeline))
    ax.barh(y, pipeline["pipeline_value"].fillna(0), color="#3a9d5d")
    ax.set_yticks(y, pipeline["channel"])
    ax.invert_yaxis()
    _style(ax, "Value-weighted pipeline of open leads, per channel", xlabel="Expected value (account currency)")
    ax.grid(axis="x", color="#e5e5e5", linewidth=0.8)
    ax.grid(axis="y", visible=False)
    return _svg(fig, "Value-weighted pipeline of open leads, per channel")


# ---- page ---------------------------------------------------------------------------------------------------

CSS = """
:root { --ink:#1d2430; --muted:#5b6472; --line:#dde2e8; --bg:#f6f8fa; --accent:#2f6db5; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;
       color:var(--ink); background:#fff; }
header { background:var(--ink); color:#fff; padding:22px 32px 16px; }
header h1 { margin:0 0 4px; font-size:24px; }
header p { margin:0; color:#c8d0da; }
nav { position:sticky; top:0; background:#fff; border-bottom:1px solid var(--line); padding:8px 32px; z-index:1; }
nav a { color:var(--accent); text-decoration:none; margin-right:16px; font-size:14px; }
main { max-width:1180px; margin:0 auto; padding:8px 32px 48px; }
section { margin-top:34px; }
h2 { font-size:20px; border-bottom:2px solid var(--ink); padding-bottom:4px; }
h3 { font-size:16px; margin:22px 0 6px; }
p.note, p.empty { color:var(--muted); font-size:13.5px; max-width:900px; }
.tiles { display:grid; grid-template-columns:repeat(auto-fill,minmax(170px,1fr)); gap:12px; margin-top:18px; }
.tile { background:var(--bg); border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
.tile .label { color:var(--muted); font-size:12.5px; text-transform:uppercase; letter-spacing:.03em; }
.tile .value { font-size:26px; font-weight:650; margin-top:2px; }
.tile .hint { color:var(--muted); font-size:12px; }
.grid2 { display:grid; grid-template-columns:repeat(auto-fit,minmax(460px,1fr)); gap:18px; align-items:start; }
figure { margin:12px 0; }
figcaption { color:var(--muted); font-size:12.5px; }
svg.chart { max-width:100%; height:auto; display:block; }
.scroll { overflow-x:auto; }
table { border-collapse:collapse; width:100%; font-size:13.5px; margin:6px 0 4px; }
th, td { padding:5px 8px; border-bottom:1px solid var(--line); }
td.num, td.nowrap { white-space:nowrap; }
th { background:var(--bg); font-weight:600; vertical-align:bottom; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
td.txt, th.txt { text-align:left; }
tbody tr:nth-child(even) { background:#fbfcfd; }
tr.partial td { color:var(--muted); font-style:italic; }
.badge { display:inline-block; white-space:nowrap; padding:1px 8px; border-radius:10px; font-size:12px;
         font-weight:600; color:#fff; }
.on_track, .met { background:#2d8a4e; } .at_risk { background:#d08a1c; } .missed { background:#c8443f; }
.no_data { background:#8a929c; }
dl.glossary dt { font-weight:650; margin-top:10px; }
dl.glossary dd { margin:2px 0 0 0; color:#333; max-width:900px; }
footer { color:var(--muted); font-size:12.5px; border-top:1px solid var(--line); margin-top:40px; padding-top:10px; }
@media print { nav { position:static; } }
"""

SECTIONS = (("headline", "Headline"), ("channels", "Channels"), ("trends", "Trends"),
            ("attribution", "Channel contribution"), ("engagement", "Engagement and content"),
            ("predictive", "Predictive KPIs"), ("targets", "Targets"), ("glossary", "Glossary"))


def _section(anchor: str, title: str, *parts: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{"".join(parts)}</section>'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _chart(svg: str, caption: str) -> str:
    if not svg:
        return ""
    return f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>"


def _tile(label: str, value: str, hint: str) -> str:
    return (f'<div class="tile"><div class="label">{_e(label)}</div><div class="value">{_e(value)}</div>'
            f'<div class="hint">{_e(hint)}</div></div>')


def _headline(report: KPIReport) -> str:
    t = report.totals
    pipeline = report.pipeline["pipeline_value"].sum() if not report.pipeline.empty else math.nan
    tiles = [
        _tile("Leads", fmt(t["leads"], "count"), f"{fmt(t['conversions'], 'count')} became customers"),
        _tile("Conversion rate", fmt(t["conversion_rate"], "percent"), "leads to customers"),
        _tile("New customers", fmt(t["new_customers"], "count"), "acquired in the window"),
        _tile("Marketing spend", fmt(t["spend"], "money"), "account currency"),
        _tile("CAC", fmt(t["cac"], "money"), "spend per new customer"),
        _tile("Attributed revenue", fmt(t["attributed_revenue"], "money"), "from the new customers, to date"),
        _tile("Marketing ROI", fmt(t["roi"], "percent"), "(revenue - spend) / spend"),
        _tile("CLV:CAC", fmt(t["clv_to_cac"], "ratio"), "lifetime value per unit of CAC"),
        _tile("Web sessions", fmt(t["web_sessions"], "count"), f"{fmt(t['page_views'], 'count')} page views"),
        _tile("Open pipeline value", fmt(pipeline, "money"), "probability x predicted CLV"),
    ]
    return f'<div class="tiles">{"".join(tiles)}</div>'


def _channels(report: KPIReport) -> str:
    acquisition = [("channel", "Channel", "text"), *map(_metric_column, (
        "leads", "conversions", "conversion_rate", "new_customers", "spend", "cac", "attributed_revenue", "roi",
        "historic_cltv", "predicted_cltv", "clv_to_cac"))]
    return "".join([
        _note("One row per channel. Leads by their source channel; customers by their acquisition channel (else "
              "their lead's source channel); spend as recorded in marketing_spend. A dash means the KPI is not "
              "defined there (no spend, no customers, no scores)."),
        _table(report.channels, acquisition),
        '<div class="grid2">',
        _chart(chart_channel_rates(report.channels), "Conversion rate of the leads created in the window and "
               "ROI of the spend, per channel."),
        _chart(chart_channel_value(report.channels), "Channels with spend only: what a customer cost (CAC) and "
               "what one is worth, to date and predicted."),
        "</div>",
    ])


def _trends(report: KPIReport) -> str:
    columns = [("period_label", report.grain.capitalize(), "label"), *map(_metric_column, (
        "leads", "conversion_rate", "new_customers", "spend", "cac", "revenue", "roi", "web_sessions",
        "page_views", "email_ctr", "engagement_index"))]
    return "".join([
        '<div class="grid2">',
        _chart(chart_leads_and_conversion(report.trend, report.grain),
               "Bars: leads created. Line: share of them that became customers (recent periods are still "
               "converting)."),
        _chart(chart_spend_and_cac(report.trend, report.grain),
               "Bars: spend. Line: spend divided by the customers acquired in the same period."),
        _chart(chart_channel_leads(report.channel_trend, report.grain), "Leads created, by source channel."),
        _chart(chart_traffic(report.trend, report.grain), "Web sessions and page views of known leads."),
        "</div>",
        _note("Rows in grey italics are periods only partly inside the window."),
        _table(report.trend.assign(period_label=_period_labels(report.trend["period"], report.grain)), columns,
               row_class=lambda r: "" if r.get("complete") else "partial"),
    ])


def _attribution(report: KPIReport) -> str:
    columns = [("channel", "Touchpoint channel", "text"), *((m, METHOD_LABELS[m], "decimal") for m in METHODS),
               ("removal_effect", "Markov removal effect", "percent")]
    conversions = report.attribution["first_touch"].sum() if not report.attribution.empty else 0
    return "".join([
        _note(f"{conversions:,.0f} conversions in the window, shared among the channels their journeys touched by "
              "four methods side by side. First and last touch give the whole conversion to one channel; "
              "linear shares it equally along the path; the Markov model credits each channel by how many "
              "conversions would be lost without it, learning also from journeys that did not convert. "
              "Touchpoints: the lead's source channel, then the channel of every activity of its own "
              f"(not {', '.join(NOT_TOUCHES)}) up to the conversion."),
        _chart(chart_attribution(report.attribution), "Conversions credited per channel by each method."),
        _note("Conversions credited to each channel, by method; the removal effect is the share of conversions "
              "the Markov model says would be lost without the channel."),
        _table(report.attribution, columns),
    ])


def _engagement(report: KPIReport) -> str:
    columns = [("channel", "Channel", "text"), *map(_metric_column, (
        "web_sessions", "page_views", "email_ctr", "email_open_rate", "ad_ctr", "social_engagement_rate",
        "engagement_index"))]
    content = [("content_id", "Content", "text"), ("interactions", "Interactions", "count"),
               ("leads", "Leads", "count"), ("weighted_interactions", "Weighted interactions", "decimal"),
               ("influence_index", "Influence index (100 = average)", "decimal"),
               ("converted_leads", "Leads converted after it", "count"),
               ("lead_conversion_rate", "Their conversion rate", "percent")]
    return "".join([
        _note("Activities in the window, credited to the source channel of the lead who did them."),
        _table(report.channels, columns),
        f"<h3>Content influence: the top {TOP_CONTENT} items</h3>",
        _note("Weighted interactions per content item (weights in the glossary), relative to the average item."),
        _table(report.content, content),
    ])


def _predictive(report: KPIReport) -> str:
    parts = [_note("Today's view from the score tables (lead_scores, customer_scores), whatever the window.")]
    parts.append("<h3>Lead scores per channel</h3>")
    if report.score_summary.empty:
        parts.append(_note("No lead scores yet: run `leadval score leads` to fill lead_scores."))
    else:
        summary = [("channel", "Channel", "text"), ("scored_leads", "Scored leads", "count"),
                   ("mean_score", "Mean score", "decimal"), ("median_score", "Median score", "decimal"),
                   *((f"share_{b}", f"Band {b}", "percent") for b in BAND_COLORS)]
        calibration = [("band", "Band", "text"), ("scored_leads", "Scored leads", "count"),
                       ("converted", "Converted since scored", "count"),
                       ("actual_rate", "Actual conversion rate", "percent"),
                       ("mean_probability", "Mean predicted probability", "percent")]
        pipeline = [("channel", "Channel", "text"), ("open_leads", "Open scored leads", "count"),
                    ("expected_conversions", "Expected conversions", "decimal"),
                    ("pipeline_value", "Pipeline value", "money"), ("mean_score", "Mean score", "decimal"),
                    ("band_A_leads", "Band A leads", "count")]
        parts += [
            '<div class="grid2">',
            _chart(chart_score_heatmap(report.score_distribution), "Darker cells: more of the channel's leads "
                   "score in that range."),
            _chart(chart_score_bands(report.score_summary), "Share of each channel's scored leads per band."),
            "</div>",
            _table(report.score_summary, summary),
            "<h3>Conversion by score band</h3>",
            '<div class="grid2">',
            _chart(chart_calibration(report.calibration), "A well calibrated model has the two bars of a band "
                   "close together (recent scores have had less time to convert)."),
            _table(report.calibration, calibration),
            "</div><h3>Value-weighted pipeline</h3>",
            '<div class="grid2">',
            _chart(chart_pipeline(report.pipeline), "Sum over open leads of probability x predicted CLV."),
            _table(report.pipeline, pipeline),
            "</div>",
        ]
    parts.append("<h3>Customer segments by CLV and P(alive)</h3>")
    if report.segments.empty:
        parts.append(_note("No customer scores yet: run `leadval score customers` to fill customer_scores."))
    else:
        segments = [("segment", "Segment", "text"), ("customers", "Customers", "count"), ("share", "Share", "percent"),
                    ("mean_clv", "Mean predicted CLV", "money"), ("total_clv", "Total predicted CLV", "money"),
                    ("mean_p_alive", "Mean P(alive)", "probability")]
        top = [("customer_id", "Customer", "text"), ("segment", "Segment", "text"), ("clv", "Predicted CLV", "money"),
               ("p_alive", "P(alive)", "probability"), ("revenue_to_date", "Revenue to date", "money"),
               ("last_order_at", "Last order", "date"), ("acquisition_channel", "Channel", "text")]
        parts += [
            '<div class="grid2">',
            _chart(chart_segments(report.segment_points), "Each dot a customer (a sample of "
                   f"{SCATTER_POINTS:,} at most)."),
            _table(report.segments, segments),
            "</div>",
            f"<h3>Top {TOP_CUSTOMERS} customers by predicted value</h3>",
            _table(report.top_customers, top),
        ]
    return "".join(parts)


def _targets(report: KPIReport) -> str:
    if report.targets.empty:
        return _note("No targets given: pass --targets FILE (see targets.example.toml) to track SMART goals here.")
    rows = []
    for row in report.targets.to_dict("records"):
        metric = METRICS[row["metric"]]
        unit = _unit(row["metric"])
        direction = "\u2265" if row["direction"] == "at_least" else "\u2264"
        status = row["status"] if row["status"] in STATUSES else "no_data"
        cells = [
            f'<td class="txt">{_e(row["name"])}</td>',
            f'<td class="txt">{_e(metric.label)}</td>',
            f'<td class="txt nowrap">{_e(row["scope"])}</td>',
            f'<td class="num">{direction} {_e(fmt(row["target"], unit))}</td>',
            f'<td class="txt nowrap">{_e(fmt(row["deadline"], "date"))}</td>',
            f'<td class="num">{_e(fmt(row["current"], unit))}</td>',
            f'<td class="num">{_e(_trend(row["trend_per_period"], unit))}</td>',
            f'<td class="num">{_e(fmt(row["projected"], unit))}</td>',
            f'<td class="txt"><span class="badge {status}">{_e(status.replace("_", " "))}</span></td>',
        ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    head = "".join(f'<th class="{c}">{_e(h)}</th>' for h, c in (
        ("Target", "txt"), ("Metric", "txt"), ("Scope", "txt"), ("Goal", "num"), ("Deadline", "txt"),
        ("Current", "num"), (f"Trend per {report.grain}", "num"), ("Projected at deadline", "num"),
        ("Status", "txt")))
    return "".join([
        _note(f"Current: the latest complete {report.grain}'s value. Trend: least-squares slope per {report.grain}. "
              "Projected: that line at the deadline. On track: the projection meets the goal; at risk: it does "
              "not; met / missed: the deadline has passed; no data: nothing to judge yet."),
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>',
    ])


def _trend(value: Any, unit: str) -> str:
    text = fmt(value, unit)
    if text == _MISSING:
        return text
    if set(text.lstrip("-")) <= set("0.,%\u00d7"):
        return text.lstrip("-")
    return text if text.startswith("-") else f"+{text}"


GLOSSARY_EXTRA: tuple[tuple[str, str], ...] = (
    ("Window and periods", "KPIs cover the days from the report's start to its end, both included, in UTC. "
     "Trends split the window into months (weeks for windows of up to three months)."),
    ("Touchpoint", "A moment a lead met a channel: its source channel when it entered the CRM, then every "
     "activity of its own with a channel (web, email, social, event, ...); outbound email sends do not count. "
     "Consecutive touches on the same channel count once."),
    ("First-touch attribution", "The whole conversion goes to the first channel of the journey."),
    ("Last-touch attribution", "The whole conversion goes to the last channel before it."),
    ("Linear attribution", "The conversion is shared equally among the touchpoints of the journey."),
    ("Markov removal effect", "A first-order Markov chain of journeys (converting and not) estimates the "
     "probability of converting; a channel's removal effect is the share of that probability lost if its "
     "touches led nowhere. Conversions are shared in proportion to the removal effects (Anderl et al., 2016)."),
    ("Content influence index", "Weighted interactions with a content item, 100 = the average item. Weights: "
     + ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in sorted(CONTENT_WEIGHTS.items(), key=lambda kv: kv[1]))
     + "."),
    ("Micro-conversions", "Small commitments before buying: " + ", ".join(t.replace("_", " ")
                                                                          for t in MICRO_CONVERSIONS) + "."),
    ("Lead score and band", "The lead-scoring model's calibrated probability of converting as 0-100; bands A "
     "(best) to D use thresholds fixed on validation data."),
    ("Actual conversion rate by band", "Of the leads in a band, the share that became customers after they "
     "were scored: the model's calibration as a salesperson sees it."),
    ("P(alive)", "The CLV model's probability that a customer is still active (BG/NBD)."),
    ("Customer segment", "From P(alive) and predicted value: champions, loyal, promising, at risk, lost."),
    ("Value-weighted pipeline", "Sum over open leads of the probability of converting x the predicted CLV of a "
     "new customer like them (lead_scores.expected_value)."),
    ("Target status", "on track: the trend projects the goal to be met by the deadline; at risk: it does not; "
     "met / missed: the deadline has passed; no data: nothing to judge yet."),
)


def _glossary() -> str:
    items = [(m.label, m.definition) for m in METRICS.values()] + list(GLOSSARY_EXTRA)
    body = "".join(f"<dt>{_e(term)}</dt><dd>{_e(text)}</dd>" for term, text in items)
    return f'<dl class="glossary">{body}</dl>'


def render_html(report: KPIReport) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG; no scripts, no external resources)."""
    rows = report.rows
    nav = "".join(f'<a href="#{anchor}">{_e(title)}</a>' for anchor, title in SECTIONS)
    body = "".join([
        _section("headline", "Headline", _headline(report)),
        _section("channels", "Channels", _channels(report)),
        _section("trends", f"Trends per {report.grain}", _trends(report)),
        _section("attribution", "Channel contribution (attribution)", _attribution(report)),
        _section("engagement", "Engagement and content", _engagement(report)),
        _section("predictive", "Predictive KPIs", _predictive(report)),
        _section("targets", "Targets", _targets(report)),
        _section("glossary", "Glossary", _glossary()),
    ])
    sources = (f"{rows['leads']:,} leads, {rows['activities']:,} activities, {rows['customers']:,} customers, "
               f"{rows['orders']:,} orders, {rows['marketing_spend']:,} spend rows, {rows['lead_scores']:,} lead "
               f"scores, {rows['customer_scores']:,} customer scores")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Marketing KPI report {_e(report.window.label)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>Marketing KPI report</h1><p>{_e(report.window.label)} (UTC) \u00b7 generated "
        f"{_e(report.generated_at.isoformat(sep=' '))} UTC \u00b7 money in the account currency</p></header>"
        f"<nav>{nav}</nav><main>{body}<footer>Computed by leadval from {_e(sources)}.</footer></main>"
        "</body></html>\n"
    )
