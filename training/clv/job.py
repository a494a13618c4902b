"""The CLV training job: transactions -> calibration/holdout RFM -> fit -> validate -> MLflow -> registry.

1. Orders from the CRM (or a transactions file) are summarised as of the calibration end, with each
   customer's actual repeat purchases in the holdout (calibration end, observation end].
2. BG/NBD and Gamma-Gamma are fitted on the calibration period for each penalizer in the grid; the
   one with the lowest holdout error wins (BG/NBD: MAE of repeat purchases; Gamma-Gamma: MAE of the
   mean order value of customers who bought in both periods). The registered model is this
   calibration fit, the one that was validated out of time.
3. Segment cut-offs and the value of a new customer per acquisition channel are fixed on the RFM
   summary as of the observation end (the customers as they are now).
4. Everything is logged to the MLflow experiment ``clv`` (config, data fingerprint, parameters,
   holdout metrics, tables and plots, the Gamma-Gamma assumption check) and the model is registered
   as ``clv``; it becomes ``@champion`` when its holdout MAE is no worse than the current champion's
   on the same holdout (the champion is loaded from the registry and scored on it).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from features.crm.store import connect, safe_url
from features.crm.transactions import read_acquisition_channels, read_crm_orders, read_transactions
from features.errors import InvalidInput
from features.rfm import calibration_and_holdout, daily_purchases, days_per_unit, rfm_summary
from training.clv.evaluation import (
    HoldoutSummary,
    by_frequency_figure,
    cumulative_tracking,
    evaluate_on_holdout,
    holdout_summary,
    p_alive_calibration,
    p_alive_figure,
    predicted_holdout_purchases,
    purchases_by_frequency,
    tracking_figure,
)
from training.clv.fit import (
    BgNbdParameters,
    GammaGammaParameters,
    ModelDidNotConverge,
    check_gamma_gamma_assumption,
    fit_bgnbd,
    fit_gamma_gamma,
    gamma_gamma_assumption_holds,
)
from training.clv.predict import (
    SEGMENTS,
    CLVParameters,
    expected_order_value,
    predict_clv,
    rfm_in_days,
    segment_values,
)
from training.clv.pyfunc import PARAMETERS_FILE, log_clv_model, parameters_to_dict
from training.registry import CLV_MODEL_NAME, Promote, Promotion, load_registered, register_and_gate
from training.tracking import log_run_facts, use_experiment, use_tracking

EXPERIMENT = CLV_MODEL_NAME
GATING_METRIC = "holdout_mae"
SEGMENT_QUANTILES = (0.2, 0.5, 0.8)


@dataclass(frozen=True)
class CLVConfig:
    """What a CLV training run does; logged whole to MLflow."""

    calibration_end: str
    observation_end: str
    time_unit: str = "D"
    horizon_days: int = 365
    discount_rate: float = 0.10
    penalizers: tuple[float, ...] = (0.0, 0.001, 0.01, 0.1)
    min_channel_customers: int = 20
    source: str = "crm"

    def __post_init__(self) -> None:
        days_per_unit(self.time_unit)
        for name in ("calibration_end", "observation_end"):
            try:
                pd.Timestamp(getattr(self, name))
            except (ValueError, TypeError):
                raise InvalidInput(f"{name.replace('_', ' ')}: cannot read {getattr(self, name)!r} as a date; "
                                   "expected YYYY-MM-DD") from None
        if pd.Timestamp(self.observation_end) <= pd.Timestamp(self.calibration_end):
            raise InvalidInput(f"observation end {self.observation_end} must be after the calibration end "
                               f"{self.calibration_end}")
        if self.horizon_days <= 0:
            raise InvalidInput(f"horizon days must be > 0, not {self.horizon_days}")
        if not self.discount_rate > -1:
            raise InvalidInput(f"discount rate must be an annual rate > -1 (e.g. 0.1), not {self.discount_rate}")
        if not self.penalizers or any(p < 0 for p in self.penalizers):
            raise InvalidInput(f"penalizers must be a non-empty list of values >= 0, not {self.penalizers}")


@dataclass(frozen=True)
class CLVTrainingResult:
    """What a training run produced: its model, validation and registry outcome."""

    params: CLVParameters
    holdout: HoldoutSummary
    run_id: str
    model_uri: str
    promotion: Promotion
    gamma_gamma_correlation: float
    segments: dict[str, int]
    calibration_end: str
    observation_end: str

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` result: run_id, model_version, champion, params, holdout and more."""
        gg = self.params.gamma_gamma
        bg = self.params.bgnbd
        return {
            "run_id": self.run_id,
            "model_uri": self.model_uri,
            "model_name": self.promotion.model_name,
            "model_version": self.promotion.version,
            "champion": self.promotion.champion,
            "promotion_reason": self.promotion.reason,
            "params": {"r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b,
                       "p": gg.p if gg else None, "q": gg.q if gg else None, "v": gg.v if gg else None},
            "time_unit": self.params.time_unit,
            "penalizers": {"bgnbd": bg.penalizer, "gamma_gamma": gg.penalizer if gg else None},
            "holdout": {k: v if isinstance(v, int) else _or_none(v) for k, v in self.holdout.as_dict().items()},
            "gamma_gamma_correlation": None if np.isnan(self.gamma_gamma_correlation) else self.gamma_gamma_correlation,
            "segments": self.segments,
            "new_customer_value": {"overall": _or_none(self.params.new_customer_value_overall),
                                   "by_channel": self.params.new_customer_value_by_channel},
            "calibration_end": self.calibration_end,
            "observation_end": self.observation_end,
        }


def _or_none(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def default_dates(transactions: pd.DataFrame, horizon_days: int,
                  calibration_end: date | str | None = None,
                  observation_end: date | str | None = None) -> tuple[str, str]:
    """Calibration and observation ends from the data when not given.

    Observation end: the last order's day. Calibration end: the observation end minus a holdout of a
    third of the order history, at most ``horizon_days`` and at least one day.
    """
    if len(transactions) == 0:
        raise InvalidInput("orders: no orders to train on; expected at least some customers with repeat purchases")
    first = transactions["ordered_at"].min().normalize()
    end = pd.Timestamp(observation_end).normalize() if observation_end else transactions["ordered_at"].max().normalize()
    if calibration_end:
        cal = pd.Timestamp(calibration_end).normalize()
    else:
        holdout = max(1, min(horizon_days, (end - first).days // 3))
        cal = end - pd.Timedelta(days=holdout)
    if cal < first:
        raise InvalidInput(f"calibration end {cal.date()} is before the first order ({first.date()})")
    return str(cal.date()), str(end.date())


def _select_bgnbd(holdout: pd.DataFrame, config: CLVConfig) -> tuple[BgNbdParameters, dict[float, float]]:
    """The BG/NBD fit whose holdout MAE is lowest over the penalizer grid (ties: the smaller penalizer)."""
    errors: dict[float, float] = {}
    best: tuple[float, BgNbdParameters] | None = None
    for penalizer in sorted(config.penalizers):
        try:
            bg = fit_bgnbd(holdout, penalizer, config.time_unit)
        except ModelDidNotConverge:
            errors[penalizer] = float("nan")
            continue
        summary, _ = evaluate_on_holdout(CLVParameters(config.time_unit, bg, None), holdout)
        errors[penalizer] = summary.mae
        if np.isfinite(summary.mae) and (best is None or summary.mae < best[0]):
            best = (summary.mae, bg)
    if best is None:
        raise ModelDidNotConverge(
            f"BG/NBD did not converge to finite holdout predictions with any penalizer in {sorted(config.penalizers)}; "
            "try the other time unit (--time-unit W or D), a longer calibration period or more customers with "
            "repeat purchases"
        )
    return best[1], errors


def _select_gamma_gamma(holdout: pd.DataFrame, config: CLVConfig) -> tuple[GammaGammaParameters, dict[float, float]]:
    """The Gamma-Gamma fit with the lowest holdout MAE of mean order value (customers buying in both periods)."""
    both = holdout[(holdout["frequency"] > 0) & (holdout["frequency_holdout"] > 0)]
    errors: dict[float, float] = {}
    best: tuple[float, GammaGammaParameters] | None = None
    for penalizer in sorted(config.penalizers):
        try:
            gg = fit_gamma_gamma(holdout, penalizer)
        except ModelDidNotConverge:
            errors[penalizer] = float("nan")
            continue
        predicted = expected_order_value(gg, both["frequency"].to_numpy(dtype="float64"),
                                         both["monetary_value"].to_numpy(dtype="float64"))
        mae = float(np.abs(predicted - both["monetary_value_holdout"].to_numpy()).mean()) if len(both) else 0.0
        errors[penalizer] = mae
        if np.isfinite(mae) and (best is None or mae < best[0]):
            best = (mae, gg)
    if best is None:
        raise ModelDidNotConverge(
            f"Gamma-Gamma did not converge to finite order values with any penalizer in {sorted(config.penalizers)}; "
            "check order values for outliers and currency mix-ups, or train with more repeat buyers"
        )
    return best[1], errors


def _fix_segments_and_channel_values(params: CLVParameters, current: pd.DataFrame, channels: pd.DataFrame | None,
                                     min_channel_customers: int) -> CLVParameters:
    """Segment cut-offs and new-customer values per channel from the customers as they are now."""
    customers = rfm_in_days(current, params.time_unit)
    low, mid, high = np.quantile(segment_values(params, customers), SEGMENT_QUANTILES)
    rule = replace(params.segment_rule, value_lost=float(low), value_loyal=float(mid), value_champions=float(high))
    if params.gamma_gamma is None:
        return replace(params, segment_rule=rule)
    clv = predict_clv(params, customers)["clv"].to_numpy()
    by_channel: dict[str, float] = {}
    if channels is not None:
        joined = pd.DataFrame({"customer_id": current["customer_id"].to_numpy(), "clv": clv})
        joined = joined.merge(channels, on="customer_id", how="inner").dropna(subset=["acquisition_channel"])
        grouped = joined.groupby("acquisition_channel")["clv"].agg(["mean", "size"])
        by_channel = {str(k): float(row["mean"]) for k, row in grouped.iterrows() if row["size"] >= min_channel_customers}
    return replace(params, segment_rule=rule, new_customer_value_overall=float(clv.mean()),
                   new_customer_value_by_channel=dict(sorted(by_channel.items())))


@dataclass(frozen=True)
class FittedCLV:
    """A fitted model with the data it was fitted and validated on."""

    params: CLVParameters
    holdout: pd.DataFrame
    current: pd.DataFrame
    correlation: float
    bgnbd_mae_by_penalizer: dict[float, float]
    gamma_gamma_mae_by_penalizer: dict[float, float]


def fit_clv(transactions: pd.DataFrame, config: CLVConfig, channels: pd.DataFrame | None = None,
            with_monetary: bool = True) -> FittedCLV:
    """Fit the CLV model on ``transactions`` (``customer_id, ordered_at[, amount]``) as ``config`` says.

    ``channels`` (``customer_id, acquisition_channel``) gives the new-customer value per channel.
    """
    amount_col = "amount" if with_monetary else None
    holdout = calibration_and_holdout(transactions, config.calibration_end, config.observation_end,
                                      amount_col=amount_col, time_unit=config.time_unit)
    if len(holdout) == 0:
        raise InvalidInput(f"orders: no customer bought on or before the calibration end {config.calibration_end}")
    if int((holdout["frequency"] > 0).sum()) == 0:
        raise InvalidInput("frequency: no customer has a repeat purchase in the calibration period; BG/NBD needs "
                           "some repeat buyers (choose a later --calibration-end)")
    bg, bg_errors = _select_bgnbd(holdout, config)
    gg, gg_errors = _select_gamma_gamma(holdout, config) if with_monetary else (None, {})
    correlation = check_gamma_gamma_assumption(holdout) if with_monetary else float("nan")
    params = CLVParameters(config.time_unit, bg, gg, config.horizon_days, config.discount_rate)
    current = rfm_summary(transactions, config.observation_end, amount_col=amount_col, time_unit=config.time_unit)
    params = _fix_segments_and_channel_values(params, current, channels, config.min_channel_customers)
    return FittedCLV(params, holdout, current, correlation, bg_errors, gg_errors)


def _log_validation(fitted: FittedCLV, transactions: pd.DataFrame, config: CLVConfig,
                    summary: HoldoutSummary, predicted: np.ndarray) -> dict[str, int]:
    """Log parameters, holdout metrics, tables and plots to the active run; returns the segment counts."""
    params = fitted.params
    bg, gg = params.bgnbd, params.gamma_gamma
    metrics = {"bgnbd_r": bg.r, "bgnbd_alpha": bg.alpha, "bgnbd_a": bg.a, "bgnbd_b": bg.b,
               "bgnbd_log_likelihood": bg.log_likelihood, "bgnbd_penalizer": bg.penalizer,
               "holdout_actual_purchases": summary.actual_purchases,
               "holdout_predicted_purchases": summary.predicted_purchases,
               GATING_METRIC: summary.mae, "holdout_customers": summary.customers}
    if np.isfinite(summary.correlation):
        metrics["holdout_correlation"] = summary.correlation
    if gg is not None:
        metrics.update({"gamma_gamma_p": gg.p, "gamma_gamma_q": gg.q, "gamma_gamma_v": gg.v,
                        "gamma_gamma_penalizer": gg.penalizer})
        if np.isfinite(params.new_customer_value_overall):
            metrics["new_customer_value"] = params.new_customer_value_overall
    if np.isfinite(fitted.correlation):
        metrics["gamma_gamma_frequency_monetary_correlation"] = fitted.correlation
    for penalizer, mae in fitted.bgnbd_mae_by_penalizer.items():
        metrics[f"bgnbd_holdout_mae_penalizer_{penalizer:g}"] = mae
    for penalizer, mae in fitted.gamma_gamma_mae_by_penalizer.items():
        metrics[f"gamma_gamma_holdout_mae_penalizer_{penalizer:g}"] = mae
    mlflow.log_metrics(metrics)
    mlflow.set_tag("gamma_gamma_assumption",
                   "holds" if gamma_gamma_assumption_holds(fitted.correlation) else "violated")

    by_frequency = purchases_by_frequency(fitted.holdout, predicted)
    calibration = p_alive_calibration(params, fitted.holdout)
    tracking = cumulative_tracking(params, daily_purchases(transactions, config.observation_end))
    mlflow.log_text(by_frequency.to_csv(index=False), "validation/holdout_by_frequency.csv")
    mlflow.log_text(calibration.to_csv(index=False), "validation/p_alive_calibration.csv")
    mlflow.log_text(tracking.to_csv(index=False), "validation/cumulative_tracking.csv")
    for figure, name in ((tracking_figure(tracking, pd.Timestamp(config.calibration_end)), "tracking.png"),
                         (by_frequency_figure(by_frequency), "holdout_by_frequency.png"),
                         (p_alive_figure(calibration), "p_alive_calibration.png")):
        mlflow.log_figure(figure, f"validation/{name}")
    segments = predict_clv(params, rfm_in_days(fitted.current, params.time_unit))["segment"].value_counts()
    counts = {name: int(segments.get(name, 0)) for name in SEGMENTS}
    mlflow.log_metrics({f"segment_{name}": n for name, n in counts.items()})
    mlflow.log_dict(parameters_to_dict(params), f"model_parameters/{PARAMETERS_FILE}")
    return counts


def train_clv_model(
    transactions: pd.DataFrame,
    config: CLVConfig,
    tracking_uri: str,
    artifact_root: str,
    channels: pd.DataFrame | None = None,
    with_monetary: bool = True,
    promote: Promote | str = Promote.auto,
) -> CLVTrainingResult:
    """Fit, validate, log to the MLflow experiment ``clv`` and register as ``clv`` with champion gating."""
    promote = Promote.parse(promote)
    with threadpool_limits(limits=1, user_api="blas"):
        fitted = fit_clv(transactions, config, channels, with_monetary)
    summary, predicted = evaluate_on_holdout(fitted.params, fitted.holdout)
    use_tracking(tracking_uri)
    use_experiment(EXPERIMENT, artifact_root)
    with mlflow.start_run() as run, tempfile.TemporaryDirectory() as workdir:
        log_run_facts(config, fitted.holdout)
        segments = _log_validation(fitted, transactions, config, summary, predicted)
        model_uri = log_clv_model(fitted.params, Path(workdir))
        holdout = fitted.holdout

        def champion_mae(uri: str) -> float:
            champion = load_registered(uri)
            actual = holdout["frequency_holdout"].to_numpy()
            expected = predicted_holdout_purchases(
                lambda customers, days: champion.predict(customers, params={"horizon_days": days}),
                holdout, config.time_unit)
            return holdout_summary(actual, expected).mae

        promotion = register_and_gate(model_uri, CLV_MODEL_NAME, GATING_METRIC, summary.mae, champion_mae,
                                      higher_is_better=False, promote=promote)
        mlflow.set_tags({"champion": str(promotion.champion).lower(), "promotion_reason": promotion.reason,
                         "model_version": promotion.version})
    return CLVTrainingResult(fitted.params, summary, run.info.run_id, model_uri, promotion, fitted.correlation,
                             segments, config.calibration_end, config.observation_end)


def train_from_crm(
    db_url: str,
    tracking_uri: str,
    artifact_root: str,
    calibration_end: date | str | None = None,
    observation_end: date | str | None = None,
    horizon_days: int = 365,
    discount_rate: float = 0.10,
    time_unit: str = "D",
    promote: Promote | str = Promote.auto,
) -> CLVTrainingResult:
    """Train on the CRM's orders (dates default from their range) with new-customer values per acquisition channel."""
    engine = connect(db_url)
    try:
        transactions = read_crm_orders(engine, observation_end)
        channels = read_acquisition_channels(engine)
    finally:
        engine.dispose()
    cal, end = default_dates(transactions, horizon_days, calibration_end, observation_end)
    config = CLVConfig(cal, end, time_unit=time_unit, horizon_days=horizon_days, discount_rate=discount_rate,
                       source=f"crm:{safe_url(db_url)}")
    return train_clv_model(transactions, config, tracking_uri, artifact_root, channels, True, promote)


def train_from_file(
    path: Path,
    customer_col: str,
    date_col: str,
    calibration_end: date | str,
    observation_end: date | str,
    tracking_uri: str,
    artifact_root: str,
    amount_col: str | None = None,
    horizon_days: int = 365,
    discount_rate: float = 0.10,
    time_unit: str = "D",
    promote: Promote | str = Promote.auto,
) -> CLVTrainingResult:
    """Train on a transactions file; without ``amount_col`` the model predicts purchases only (no CLV)."""
    transactions = read_transactions(Path(path), customer_col, date_col, amount_col, observation_end)
    config = CLVConfig(str(pd.Timestamp(calibration_end).date()), str(pd.Timestamp(observation_end).date()),
                       time_unit=time_unit, horizon_days=horizon_days, discount_rate=discount_rate,
                       source=f"file:{Path(path).name}")
    return train_clv_model(transactions, config, tracking_uri, artifact_root, None, amount_col is not None, promote)
