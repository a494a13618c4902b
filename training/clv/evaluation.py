"""Out-of-time validation of a CLV model on the holdout: totals, per-customer errors, tables and plots.

The model, fitted on the calibration period, predicts each customer's repeat purchases over the
holdout from their calibration RFM; these are compared with what they actually did:

- totals, per-customer MAE and correlation (MAE is the metric champions are gated on);
- mean actual vs predicted holdout purchases by calibration frequency 0, 1, ..., 7+;
- the cumulative repeat-transactions tracking plot (Fader, Hardie & Lee 2005, fig. 3): actual daily
  repeat purchases against the model's expectation for every acquisition-day cohort;
- P(alive) calibration: customers binned by the predicted probability of buying at all in the
  holdout (P(alive) x P(buys | alive); BG/NBD: ``P(alive) * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x))``),
  against the share who did.

Figures are plain ``matplotlib.figure.Figure`` objects rendered by the Agg canvas: no pyplot, no
global figure state, no display needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from features.rfm import days_per_unit
from training.clv.predict import CLVParameters, expected_purchases, rfm_in_days
from training.clv.purchases import expected_purchases_new_customer, probability_alive, probability_of_buying

FREQUENCY_CAP = 7


@dataclass(frozen=True)
class HoldoutSummary:
    """Headline holdout figures: total actual and predicted repeat purchases, per-customer MAE and correlation."""

    customers: int
    actual_purchases: float
    predicted_purchases: float
    mae: float
    correlation: float

    def as_dict(self) -> dict[str, float]:
        return {
            "customers": self.customers,
            "actual_purchases": self.actual_purchases,
            "predicted_purchases": self.predicted_purchases,
            "mae": self.mae,
            "correlation": self.correlation,
        }


def holdout_days(holdout: pd.DataFrame, time_unit: str) -> float:
    """Length of the holdout in days, from ``duration_holdout`` in the model's unit."""
    return float(holdout["duration_holdout"].iloc[0]) * days_per_unit(time_unit)


def predicted_holdout_purchases(predict, holdout: pd.DataFrame, time_unit: str) -> np.ndarray:
    """Each customer's expected repeat purchases over the holdout, from ``predict(customers_in_days, horizon_days)``.

    ``predict`` is a model's own prediction path (in memory or loaded from the registry), so a
    champion and a candidate are scored the same way on the same holdout.
    """
    frame = predict(rfm_in_days(holdout, time_unit), holdout_days(holdout, time_unit))
    return np.asarray(frame["expected_purchases"], dtype="float64")


def holdout_summary(actual: np.ndarray, predicted: np.ndarray) -> HoldoutSummary:
    """Totals, MAE and Pearson correlation of actual vs predicted holdout purchases."""
    actual = np.asarray(actual, dtype="float64")
    predicted = np.asarray(predicted, dtype="float64")
    spread = actual.std() > 0 and predicted.std() > 0
    return HoldoutSummary(
        customers=int(len(actual)),
        actual_purchases=float(actual.sum()),
        predicted_purchases=float(predicted.sum()),
        mae=float(np.abs(actual - predicted).mean()),
        correlation=float(np.corrcoef(actual, predicted)[0, 1]) if spread else float("nan"),
    )


def purchases_by_frequency(holdout: pd.DataFrame, predicted: np.ndarray, cap: int = FREQUENCY_CAP) -> pd.DataFrame:
    """Mean actual vs predicted holdout purchases by calibration frequency 0, 1, ..., ``cap``+."""
    bucket = np.minimum(holdout["frequency"].to_numpy(), cap)
    frame = pd.DataFrame({"bucket": bucket, "actual": holdout["frequency_holdout"].to_numpy(dtype="float64"),
                          "predicted": predicted})
    table = frame.groupby("bucket").agg(customers=("actual", "size"), actual=("actual", "mean"),
                                        predicted=("predicted", "mean")).reset_index()
    table.insert(0, "calibration_frequency", [f"{b}+" if b == cap else str(b) for b in table.pop("bucket")])
    return table


def probability_of_buying_in_holdout(params: CLVParameters, holdout: pd.DataFrame) -> np.ndarray:
    """P(at least one purchase in the holdout) given calibration RFM: P(alive) x P(buys | alive)."""
    return probability_of_buying(params.purchases, holdout["frequency"].to_numpy(dtype="float64"),
                                 holdout["recency"].to_numpy(dtype="float64"), holdout["T"].to_numpy(dtype="float64"),
                                 holdout["duration_holdout"].to_numpy(dtype="float64"))


def p_alive_calibration(params: CLVParameters, holdout: pd.DataFrame, bins: int = 10) -> pd.DataFrame:
    """Customers in bins of predicted P(buys in holdout): mean prediction vs share who bought, and mean P(alive)."""
    predicted = probability_of_buying_in_holdout(params, holdout)
    alive = probability_alive(params.purchases, holdout["frequency"].to_numpy(dtype="float64"),
                              holdout["recency"].to_numpy(dtype="float64"), holdout["T"].to_numpy(dtype="float64"))
    bought = (holdout["frequency_holdout"].to_numpy() > 0).astype("float64")
    edges = np.linspace(0.0, 1.0, bins + 1)
    bin_index = np.clip(np.digitize(predicted, edges[1:-1]), 0, bins - 1)
    frame = pd.DataFrame({"bin": bin_index, "predicted": predicted, "bought": bought, "p_alive": alive})
    table = frame.groupby("bin").agg(customers=("bought", "size"), predicted_p_buy=("predicted", "mean"),
                                     actual_share_bought=("bought", "mean"), mean_p_alive=("p_alive", "mean"))
    table.insert(0, "p_buy_bin", [f"{edges[b]:.1f}-{edges[b + 1]:.1f}" for b in table.index])
    return table.reset_index(drop=True)


def cumulative_tracking(params: CLVParameters, daily: pd.DataFrame) -> pd.DataFrame:
    """Actual vs expected cumulative repeat purchases per day (input: :func:`features.rfm.daily_purchases`).

    Expected: every day's new customers, each following the purchase model's population curve from their
    first day (BG/NBD eq. 9 and its siblings).
    """
    start = daily["day"].min()
    offsets = ((daily["day"] - start).dt.days).to_numpy()
    n_days = int(offsets.max()) + 1
    new_customers = np.zeros(n_days)
    repeats = np.zeros(n_days)
    np.add.at(new_customers, offsets, daily["first_purchases"].to_numpy(dtype="float64"))
    np.add.at(repeats, offsets, daily["repeat_purchases"].to_numpy(dtype="float64"))
    curve = expected_purchases_new_customer(params.purchases,
                                            np.arange(n_days, dtype="float64") / days_per_unit(params.time_unit))
    expected = np.convolve(new_customers, curve)[:n_days]
    return pd.DataFrame({"day": start + pd.to_timedelta(np.arange(n_days), unit="D"),
                         "actual": np.cumsum(repeats), "expected": expected})


def tracking_figure(tracking: pd.DataFrame, calibration_end: pd.Timestamp, model: str = "BG/NBD") -> Figure:
    """The cumulative repeat-transactions tracking plot with the calibration end marked (``model``: its label)."""
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    ax.plot(tracking["day"], tracking["actual"], label="actual", color="black")
    ax.plot(tracking["day"], tracking["expected"], label=f"{model} expected", color="tab:blue", linestyle="--")
    ax.axvline(pd.Timestamp(calibration_end), color="grey", linestyle=":", label="calibration end")
    ax.set_xlabel("day")
    ax.set_ylabel("cumulative repeat purchases")
    ax.set_title("Tracking cumulative repeat purchases")
    ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def by_frequency_figure(table: pd.DataFrame) -> Figure:
    """Mean actual vs predicted holdout purchases by calibration frequency."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ax.plot(table["calibration_frequency"], table["actual"], marker="o", label="actual", color="black")
    ax.plot(table["calibration_frequency"], table["predicted"], marker="s", linestyle="--", label="predicted")
    ax.set_xlabel("repeat purchases in calibration")
    ax.set_ylabel("mean repeat purchases in holdout")
    ax.set_title("Conditional expectations on the holdout")
    ax.legend()
    fig.tight_layout()
    return fig


def p_alive_figure(table: pd.DataFrame) -> Figure:
    """Predicted probability of buying in the holdout vs the share who did, per bin."""
    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    ax.scatter(table["predicted_p_buy"], table["actual_share_bought"],
               s=12 + 200 * table["customers"] / table["customers"].max(),
               label="customers per bin")
    ax.set_xlabel("predicted P(buys in holdout) = P(alive) x P(buys | alive)")
    ax.set_ylabel("share who bought in holdout")
    ax.set_title("P(alive) calibration")
    ax.legend()
    fig.tight_layout()
    return fig


def evaluate_on_holdout(params: CLVParameters, holdout: pd.DataFrame) -> tuple[HoldoutSummary, np.ndarray]:
    """Holdout summary of the in-memory model, and each customer's predicted holdout purchases."""
    predicted = predicted_holdout_purchases(
        lambda customers, days: {"expected_purchases": expected_purchases(params, customers, days)}, holdout,
        params.time_unit)
    return holdout_summary(holdout["frequency_holdout"].to_numpy(), predicted), predicted
