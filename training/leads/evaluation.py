"""How good the lead scores are on a held-out window: ranking, calibration, lift, and the plots behind them.

Metrics (:func:`lead_metrics`): ROC AUC, PR AUC (average precision), log loss, Brier score, expected
calibration error (ECE over 10 equal-count bins of predicted probability, weighted by bin size), and
lift and capture at the top 10% and 20% (lift: conversion rate among the top-scored leads over the
overall rate; capture: share of all conversions found there). The gains table splits leads into
deciles by probability (the score's order), best first. :func:`new_leads_metrics` gives the ROC AUC of the
holdout's leads younger than the horizon: what monitoring judges new leads' realized AUC against.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

CALIBRATION_BINS = 10
TOP_SHARES = (0.10, 0.20)


def lead_metrics(converted: np.ndarray, probability: np.ndarray) -> dict[str, float]:
    """Every headline figure of a holdout, keyed as logged to MLflow."""
    y = np.asarray(converted, dtype="float64")
    p = np.clip(np.asarray(probability, dtype="float64"), 1e-15, 1 - 1e-15)
    metrics = {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "base_rate": float(y.mean()),
        "mean_probability": float(p.mean()),
        "rows": float(len(y)),
    }
    for share in TOP_SHARES:
        lift, capture = lift_and_capture(y, p, share)
        metrics[f"lift_top{round(share * 100)}"] = lift
        metrics[f"capture_top{round(share * 100)}"] = capture
    return metrics


def new_leads_metrics(converted: np.ndarray, probability: np.ndarray, age_days: np.ndarray | None,
                      horizon_days: int | None) -> dict[str, float]:
    """ROC AUC, rows and conversions of the holdout leads younger than ``horizon_days`` (``roc_auc_new_leads``,
    ``rows_new_leads``, ``converted_new_leads``); empty without ages (a flat file) or without both outcomes."""
    if age_days is None or not horizon_days:
        return {}
    new = np.asarray(age_days, dtype="float64") < horizon_days
    y = np.asarray(converted, dtype="float64")[new]
    if np.unique(y).size < 2:
        return {}
    return {"roc_auc_new_leads": float(roc_auc_score(y, np.asarray(probability)[new])),
            "rows_new_leads": float(new.sum()), "converted_new_leads": float(y.sum())}


def _ranked(converted: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """Outcomes ordered from the highest probability down (ties in input order)."""
    return np.asarray(converted, dtype="float64")[np.argsort(-np.asarray(probability), kind="stable")]


def lift_and_capture(converted: np.ndarray, probability: np.ndarray, share: float) -> tuple[float, float]:
    """Lift and capture of the top ``share`` of leads by probability."""
    ranked = _ranked(converted, probability)
    top = max(1, int(round(share * len(ranked))))
    total = ranked.sum()
    rate = ranked.mean()
    lift = float(ranked[:top].mean() / rate) if rate > 0 else float("nan")
    capture = float(ranked[:top].sum() / total) if total > 0 else float("nan")
    return lift, capture


def expected_calibration_error(converted: np.ndarray, probability: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Size-weighted mean |observed rate - mean probability| over equal-count probability bins."""
    table = calibration_table(converted, probability, bins)
    weights = table["leads"] / table["leads"].sum()
    return float((weights * (table["observed_rate"] - table["mean_probability"]).abs()).sum())


def calibration_table(converted: np.ndarray, probability: np.ndarray, bins: int = CALIBRATION_BINS) -> pd.DataFrame:
    """Leads, mean predicted probability and observed rate per equal-count bin (lowest first)."""
    p = np.asarray(probability, dtype="float64")
    order = np.argsort(p, kind="stable")
    bin_of = np.empty(len(p), dtype="int64")
    bin_of[order] = np.arange(len(p)) * bins // max(len(p), 1)
    frame = pd.DataFrame({"bin": bin_of, "p": p, "y": np.asarray(converted, dtype="float64")})
    table = frame.groupby("bin").agg(leads=("y", "size"), mean_probability=("p", "mean"), observed_rate=("y", "mean"))
    return table.reset_index()


def gains_table(converted: np.ndarray, probability: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Per score decile (1 = best): leads, conversions, rate, mean probability, lift, cumulative capture."""
    ranked = _ranked(converted, probability)
    p = np.sort(np.asarray(probability, dtype="float64"))[::-1]
    decile = np.arange(len(ranked)) * bins // max(len(ranked), 1) + 1
    frame = pd.DataFrame({"decile": decile, "y": ranked, "p": p})
    table = frame.groupby("decile").agg(leads=("y", "size"), conversions=("y", "sum"),
                                        conversion_rate=("y", "mean"), mean_probability=("p", "mean")).reset_index()
    base = ranked.mean() if len(ranked) else float("nan")
    table["lift"] = table["conversion_rate"] / base if base > 0 else np.nan
    total = table["conversions"].sum()
    table["cumulative_capture"] = table["conversions"].cumsum() / total if total > 0 else np.nan
    return table


def evaluation_plots(
    converted: np.ndarray,
    probabilities: dict[str, np.ndarray],
    importance: pd.Series,
    folder: Path,
) -> list[Path]:
    """ROC, PR, gains/lift, calibration and feature-importance PNGs in ``folder``; one curve per model."""
    folder.mkdir(parents=True, exist_ok=True)
    y = np.asarray(converted, dtype="float64")
    written = []

    fig, ax = _figure((5, 5))
    for name, p in probabilities.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], "k:", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    written.append(_save(fig, ax, folder / "roc.png"))

    fig, ax = _figure((5, 5))
    for name, p in probabilities.items():
        precision, recall, _ = precision_recall_curve(y, p)
        ax.plot(recall, precision, label=f"{name} (AP {average_precision_score(y, p):.3f})")
    ax.axhline(y.mean(), color="k", linestyle=":", label="base rate")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    written.append(_save(fig, ax, folder / "pr.png"))

    fig = Figure(figsize=(10, 4.5))
    gain_ax, lift_ax = fig.subplots(1, 2)
    for name, p in probabilities.items():
        table = gains_table(y, p)
        shares = table["decile"] / len(table)
        gain_ax.plot([0, *shares], [0, *table["cumulative_capture"]], marker="o", label=name)
        lift_ax.bar(table["decile"] + (0.4 if name != next(iter(probabilities)) else 0), table["lift"],
                    width=0.4, label=name)
    gain_ax.plot([0, 1], [0, 1], "k:", label="random")
    gain_ax.set(xlabel="share of leads contacted (best first)", ylabel="share of conversions", title="Cumulative gains")
    lift_ax.axhline(1, color="k", linestyle=":")
    lift_ax.set(xlabel="score decile (1 = best)", ylabel="lift", title="Lift by decile")
    lift_ax.legend()
    written.append(_save(fig, gain_ax, folder / "gains_lift.png"))

    fig, ax = _figure((5, 5))
    for name, p in probabilities.items():
        table = calibration_table(y, p)
        ax.plot(table["mean_probability"], table["observed_rate"], marker="o", label=name)
    top = max(max(float(np.max(p)) for p in probabilities.values()), float(y.mean())) if len(y) else 1.0
    ax.plot([0, top], [0, top], "k:", label="perfect")
    ax.set(xlabel="mean predicted probability", ylabel="observed conversion rate", title="Calibration (deciles)")
    written.append(_save(fig, ax, folder / "calibration.png"))

    shown = importance.sort_values().tail(25)
    fig, ax = _figure((6, max(3, 0.25 * len(shown) + 1)))
    ax.barh(shown.index, shown.to_numpy())
    ax.set(xlabel="total gain", title="Feature importance (LightGBM gain)")
    fig.tight_layout()
    fig.savefig(folder / "feature_importance.png", dpi=100)
    written.append(folder / "feature_importance.png")
    return written


def _figure(size: tuple[float, float]) -> tuple[Figure, Axes]:
    """A figure outside pyplot (no global backend switch, nothing kept open), with one axes."""
    fig = Figure(figsize=size)
    return fig, fig.subplots()


def _save(fig: Figure, ax: Axes, path: Path) -> Path:
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
