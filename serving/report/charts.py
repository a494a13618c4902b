"""The KPI report's charts, each drawn with matplotlib and returned as inline SVG text for the page.

Object-oriented matplotlib only (no pyplot state, no display), so charts can be drawn from any thread or process;
an empty string means there is nothing to draw for the window.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from features.kpi.attribution import METHODS

METHOD_LABELS: Mapping[str, str] = {
    "first_touch": "First touch",
    "last_touch": "Last touch",
    "linear": "Linear",
    "markov": "Markov (data-driven)",
}

PALETTE = ("#2f6db5", "#e0823d", "#3a9d5d", "#c8443f", "#8064a9", "#8c6d4f", "#d46fb0", "#6f7782", "#b3b535",
           "#3bb3c3")
BAND_COLORS = {"A": "#2d8a4e", "B": "#7cbf6b", "C": "#e8b44d", "D": "#d0573f"}


def _colors(names: Sequence[str]) -> dict[str, str]:
    """A stable colour per name (channel, segment): the palette in alphabetical order of the names."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(map(str, names)))}


def _svg(fig: Figure, title: str) -> str:
    """The figure as an inline ``<svg>`` element with a title for screen readers."""
    buffer = io.StringIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": title}):
        fig.savefig(buffer, format="svg", metadata={"Title": title, "Date": None, "Creator": None,
                                                     "Format": None, "Type": None})
    text = buffer.getvalue()
    svg = text[text.index("<svg"):]
    label = html.escape(title, quote=True)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{label}" class="chart" ', 1)


def _figure(width: float = 7.2, height: float = 3.2) -> Figure:
    """A new figure of ``width`` x ``height`` inches whose axes, labels and legends never overlap."""
    return Figure(figsize=(width, height), layout="constrained")


def _style(ax: Any, title: str, ylabel: str = "", xlabel: str = "") -> None:
    """The house style of an axes: title on the left, no top and right frame, light horizontal grid lines."""
    ax.set_title(title, fontsize=11, loc="left")
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)


def period_labels(periods: pd.Series, grain: str) -> list[str]:
    """Period start dates as readers name them: 2025-03 for a month, 2025-Q1 for a quarter, a week by its first day."""
    stamps = [pd.Timestamp(p) for p in periods]
    if grain == "quarter":
        return [f"{p.year}-Q{(p.month - 1) // 3 + 1}" for p in stamps]
    return [p.strftime("%Y-%m" if grain == "month" else "%Y-%m-%d") for p in stamps]


def _thin_ticks(ax: Any, labels: list[str], most: int = 12) -> None:
    """Label at most ``most`` evenly spaced periods on the x axis, slanted so that they do not collide."""
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
    labels = period_labels(trend["period"], grain)
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
    cac_ax.plot(x, trend["cac"], color="#2f6db5", marker="o", markersize=3, label="Paid CAC")
    cac_ax.set_ylabel("Paid CAC (account currency)")
    cac_ax.set_ylim(bottom=0)
    cac_ax.spines[["top"]].set_visible(False)
    _thin_ticks(ax, period_labels(trend["period"], grain))
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
    _thin_ticks(ax, period_labels(trend["period"], grain))
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
    _thin_ticks(ax, period_labels(pd.Series(wide.index), grain))
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
    ax.set_xlabel("Lead score (1-99)")
    ax.set_title("Lead score distribution per source channel", fontsize=11, loc="left")
    fig.colorbar(image, ax=ax, label="Share of the channel's scored leads (%)", shrink=0.9)
    return _svg(fig, "Lead score distribution per source channel")


def chart_calibration(calibration: pd.DataFrame) -> str:
    """Actual conversion rate by score band next to the predicted rate (mean probability), from a backtest (%).

    Log scale: band A's rate is often a hundred times band D's; each bar is labelled with its value.
    """
    if calibration.empty or not (calibration["leads"] > 0).any():
        return ""
    data = calibration[calibration["leads"] > 0]
    fig = _figure(5.6, 3.0)
    ax = fig.subplots()
    x = np.arange(len(data))
    predicted = 100 * data["predicted_rate"].to_numpy(dtype="float64")
    actual = 100 * data["actual_rate"].fillna(0).to_numpy(dtype="float64")
    shown = np.concatenate([predicted, actual])
    floor = max(float(shown[shown > 0].min()) / 3 if (shown > 0).any() else 0.01, 1e-3)
    for offset, values, color, label in ((-0.2, predicted, "#9dbbe0", "Predicted (mean probability)"),
                                         (0.2, actual, "#2f6db5", "Actual conversion rate")):
        bars = ax.bar(x + offset, np.maximum(values, floor), 0.4, bottom=0, color=color, label=label)
        ax.bar_label(bars, labels=[f"{v:.1f}" if v >= 1 else f"{v:.2f}" for v in values], fontsize=7, padding=1)
    ax.set_yscale("log")
    ax.set_ylim(floor, max(float(shown.max()), floor) * 3)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.set_xticks(x, [f"Band {b}" for b in data["band"]])
    _style(ax, "Predicted and actual conversion by score band", "Leads converting (%, log scale)")
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


def chart_brand_shares(trend: pd.DataFrame, grain: str) -> str:
    """The brand awareness share proxies per period (lines, %): branded search of clicks and leads, direct leads."""
    shares = {"search_click_share": ("Branded share of search clicks", "#2f6db5"),
              "search_lead_share": ("Branded share of search leads", "#e0823d"),
              "direct_lead_share": ("Direct share of leads", "#3a9d5d")}
    if trend.empty or not trend[list(shares)].notna().any().any():
        return ""
    fig = _figure()
    ax = fig.subplots()
    x = np.arange(len(trend))
    for column, (label, color) in shares.items():
        ax.plot(x, 100 * trend[column], color=color, marker="o", markersize=3, label=label)
    _style(ax, f"Brand awareness proxies per {grain}", "Share (%)")
    ax.set_ylim(bottom=0)
    _thin_ticks(ax, period_labels(trend["period"], grain))
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    return _svg(fig, f"Brand awareness proxies per {grain}")


def chart_realized_auc(track: pd.DataFrame) -> str:
    """The lead champion's realized ROC AUC per monitoring run, with the warn and alert lines it was judged by."""
    if track.empty:
        return ""
    fig = _figure()
    ax = fig.subplots()
    labels = [f"{pd.Timestamp(day):%Y-%m-%d}" for day in track["as_of"]]
    x = np.arange(len(track))
    ax.plot(x, track["value"], color="#2f6db5", marker="o", markersize=4, label="Realized ROC AUC")
    ax.plot(x, track["warn"], color="#e0a23d", linestyle="--", linewidth=1, label="Warn below")
    ax.plot(x, track["alert"], color="#c0392b", linestyle="--", linewidth=1, label="Alert below")
    _style(ax, "Realized ROC AUC of the lead champion's past scores, per monitoring run", "ROC AUC")
    _thin_ticks(ax, labels)
    ax.legend(loc="lower left", fontsize=8, frameon=False)
    return _svg(fig, "Realized ROC AUC of the lead champion's past scores, per monitoring run")
