"""The CLV training job: transactions -> calibration/holdout RFM -> fit -> validate -> MLflow -> registry.

1. Orders from the CRM (or a transactions file) are summarised as of the calibration end, with each
   customer's actual repeat purchases in the holdout (calibration end, observation end].
2. BG/NBD, MBG/NBD and Pareto/NBD are fitted on the calibration period for each penalizer in the grid
   and one is chosen on the holdout (``training.clv.selection``: lowest MAE of repeat purchases, near-ties
   by the holdout total, degenerate fits only when all are; or the one ``--model`` names); Gamma-Gamma's
   penalizer is the one with the lowest MAE of the mean order value of customers who bought in both
   periods. The registered model is this calibration fit, the one that was validated out of time.
3. Segment cut-offs (and their basis: P(alive), or recency when P(alive) tells no one apart) and the
   value of a new customer per acquisition channel are fixed on the RFM summary as of the observation
   end (the customers as they are now).
4. Everything is logged to the MLflow experiment ``clv`` (config, data fingerprint, every candidate's
   parameters and holdout figures, holdout metrics, tables and plots, the Gamma-Gamma assumption check,
   the warnings as the tag ``warnings`` and ``warnings.json``) and the model is registered as
   ``model_name`` (``clv`` for the CRM, ``clv-<file stem>`` for a transactions file: models of different
   data never gate each other); it becomes ``@champion`` when its holdout MAE is no worse than the
   current champion's on the same holdout (the champion is loaded from the registry and scored on it).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from features.crm.store import connect
from features.crm.transactions import read_acquisition_channels, read_crm_orders, read_transactions
from features.crm.urls import safe_url
from features.errors import InvalidInput
from features.json_ready import json_ready
from features.kpi.predictive import p_alive_informative, p_alive_range
from features.rfm import calibration_and_holdout, daily_purchases, days_per_unit, default_dates, rfm_summary
from training.clv.diagnostics import empty_segments_warning, gamma_gamma_warnings, segments_fallback_warning
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
from training.clv.fit import frequency_monetary_correlation, gamma_gamma_assumption_holds
from training.clv.predict import (
    SEGMENTS,
    CLVParameters,
    days_since_last_purchase,
    predict_clv,
    rfm_in_days,
    segment_values,
)
from training.clv.purchases import MODEL_LABELS, probability_alive
from training.clv.pyfunc import PARAMETERS_FILE, log_clv_model, parameters_to_dict, run_tags
from training.clv.selection import (
    MODEL_CHOICES,
    Choice,
    choose,
    fit_candidate,
    fit_gamma_gamma_on_holdout,
    gamma_gamma_notes,
    gamma_gamma_rows,
)
from training.registry import (
    CLV_MODEL_NAME,
    TAG_LIMIT,
    Promote,
    Promotion,
    file_model_name,
    load_registered,
    register_and_gate,
)
from training.tracking import log_run_facts, use_experiment, use_tracking

EXPERIMENT = CLV_MODEL_NAME
GATING_METRIC = "holdout_mae"
SEGMENT_QUANTILES = (0.2, 0.5, 0.8)
RECENCY_QUANTILES = (0.6, 0.8)
"""Days since the last purchase from which customers are at_risk and lost when segments go by recency."""


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
    model: str = "auto"

    def __post_init__(self) -> None:
        days_per_unit(self.time_unit)
        if self.model not in MODEL_CHOICES:
            raise InvalidInput(f"--model: expected one of {', '.join(MODEL_CHOICES)}, got {self.model!r}")
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
    """What a training run produced: its model, validation and registry outcome, and the warnings."""

    params: CLVParameters
    holdout: HoldoutSummary
    run_id: str
    model_uri: str
    promotion: Promotion
    gamma_gamma_correlation: float
    segments: dict[str, int]
    calibration_end: str
    observation_end: str
    choice: Choice | None = None
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` result: run_id, model_version, champion, model, params, candidates, holdout, warnings..."""
        gg = self.params.gamma_gamma
        purchases = self.params.purchases
        return {
            "run_id": self.run_id,
            "model_uri": self.model_uri,
            "model_name": self.promotion.model_name,
            "model_version": self.promotion.version,
            "champion": self.promotion.champion,
            "promotion_reason": self.promotion.reason,
            "model": purchases.kind,
            "model_reason": self.choice.reason if self.choice else None,
            "params": {**purchases.values(), "p": gg.p if gg else None, "q": gg.q if gg else None,
                       "v": gg.v if gg else None},
            "candidates": [c.as_dict() for c in self.choice.candidates] if self.choice else [],
            "time_unit": self.params.time_unit,
            "penalizers": {"purchases": purchases.penalizer, "gamma_gamma": gg.penalizer if gg else None},
            "holdout": {k: v if isinstance(v, int) else _or_none(v) for k, v in self.holdout.as_dict().items()},
            "gamma_gamma_correlation": None if np.isnan(self.gamma_gamma_correlation) else self.gamma_gamma_correlation,
            "segments": self.segments,
            "segments_by": self.params.segment_rule.basis,
            "new_customer_value": {"overall": _or_none(self.params.new_customer_value_overall),
                                   "by_channel": self.params.new_customer_value_by_channel},
            "calibration_end": self.calibration_end,
            "observation_end": self.observation_end,
            "warnings": list(self.warnings),
        }


def _or_none(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _segment_rule(params: CLVParameters, customers: pd.DataFrame) -> tuple[CLVParameters, str | None]:
    """Segment cut-offs from the customers as they are now; by recency when their P(alive) tells no one apart
    (with the warning that says so)."""
    unit_days = days_per_unit(params.time_unit)
    low, mid, high = np.quantile(segment_values(params, customers), SEGMENT_QUANTILES)
    rule = replace(params.segment_rule, value_lost=float(low), value_loyal=float(mid), value_champions=float(high))
    alive = probability_alive(params.purchases, customers["frequency"].to_numpy(dtype="float64"),
                              customers["recency_days"].to_numpy(dtype="float64") / unit_days,
                              customers["age_days"].to_numpy(dtype="float64") / unit_days)
    span = p_alive_range(alive)
    if p_alive_informative(span):
        return replace(params, segment_rule=rule), None
    at_risk, lost = np.quantile(days_since_last_purchase(customers), RECENCY_QUANTILES)
    rule = replace(rule, basis="recency", recency_at_risk_days=float(at_risk), recency_lost_days=float(lost))
    return replace(params, segment_rule=rule), segments_fallback_warning(span, float(at_risk), float(lost))


def _fix_segments_and_channel_values(params: CLVParameters, current: pd.DataFrame, channels: pd.DataFrame | None,
                                     min_channel_customers: int) -> tuple[CLVParameters, str | None]:
    """Segment rule and new-customer values per channel from the customers as they are now."""
    customers = rfm_in_days(current, params.time_unit)
    params, fallback = _segment_rule(params, customers)
    if params.gamma_gamma is None:
        return params, fallback
    clv = predict_clv(params, customers)["clv"].to_numpy()
    by_channel: dict[str, float] = {}
    if channels is not None:
        joined = pd.DataFrame({"customer_id": current["customer_id"].to_numpy(), "clv": clv})
        joined = joined.merge(channels, on="customer_id", how="inner").dropna(subset=["acquisition_channel"])
        grouped = joined.groupby("acquisition_channel")["clv"].agg(["mean", "size"])
        by_channel = {str(k): float(row["mean"]) for k, row in grouped.iterrows()
                      if row["size"] >= min_channel_customers}
    return replace(params, new_customer_value_overall=float(clv.mean()),
                   new_customer_value_by_channel=dict(sorted(by_channel.items()))), fallback


@dataclass(frozen=True)
class FittedCLV:
    """A fitted model with the data it was fitted and validated on, the candidates and the warnings.

    ``params.warnings`` are the model's own (passed on wherever it scores); ``warnings`` adds what the
    choice among candidates found (a model left out as degenerate or not converged) and an empty segment,
    which stay with the training run (see ``training.clv.diagnostics``).
    """

    params: CLVParameters
    holdout: pd.DataFrame
    current: pd.DataFrame
    correlation: float
    choice: Choice
    gamma_gamma_mae_by_penalizer: dict[float, float]
    warnings: tuple[str, ...] = ()
    segments: dict[str, int] = field(default_factory=dict)
    """Customers per segment at the observation end."""


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
        raise InvalidInput("frequency: no customer has a repeat purchase in the calibration period; the CLV models "
                           "need some repeat buyers (choose a later --calibration-end)")
    candidates = [fit_candidate(kind, holdout, config.penalizers, config.time_unit) for kind in MODEL_LABELS]
    choice = choose(candidates, config.model)
    valued, left_out = gamma_gamma_rows(holdout) if with_monetary else (holdout, [])
    gg, gg_errors = fit_gamma_gamma_on_holdout(valued, config.penalizers) if with_monetary else (None, {})
    correlation = frequency_monetary_correlation(valued) if with_monetary else float("nan")
    params = CLVParameters(config.time_unit, choice.chosen.purchases, gg, config.horizon_days, config.discount_rate)
    current = rfm_summary(transactions, config.observation_end, amount_col=amount_col, time_unit=config.time_unit)
    params, fallback = _fix_segments_and_channel_values(params, current, channels, config.min_channel_customers)
    own = [*choice.chosen.problems, *choice.chosen.notes, *gamma_gamma_warnings(gg, correlation),
           *left_out, *gamma_gamma_notes(gg, gg_errors), *([fallback] if fallback else [])]
    params = replace(params, warnings=tuple(own))
    scored = predict_clv(params, rfm_in_days(current, params.time_unit))["segment"].value_counts()
    segments = {name: int(scored.get(name, 0)) for name in SEGMENTS}
    empty = empty_segments_warning(segments, config.observation_end)
    notes = [w for w in choice.warnings if w not in own] + ([empty] if empty else [])
    return FittedCLV(params, holdout, current, correlation, choice, gg_errors, (*own, *notes), segments)


def _candidate_metrics(fitted: FittedCLV) -> dict[str, float]:
    """Every candidate's parameters, log-likelihood, penalizer and holdout figures, prefixed by its model."""
    metrics: dict[str, float] = {}
    for candidate in fitted.choice.candidates:
        kind, fit = candidate.kind, candidate.purchases
        for penalizer, mae in candidate.mae_by_penalizer.items():
            metrics[f"{kind}_holdout_mae_penalizer_{penalizer:g}"] = mae
        if fit is None:
            continue
        metrics.update({f"{kind}_{name}": value for name, value in fit.values().items()})
        metrics.update({f"{kind}_log_likelihood": fit.log_likelihood, f"{kind}_penalizer": fit.penalizer,
                        f"{kind}_holdout_mae": candidate.holdout.mae,
                        f"{kind}_holdout_predicted_purchases": candidate.holdout.predicted_purchases,
                        f"{kind}_p_alive_p01": candidate.p_alive_range[0],
                        f"{kind}_p_alive_p99": candidate.p_alive_range[1]})
    return {k: v for k, v in metrics.items() if np.isfinite(v)}


def _log_validation(fitted: FittedCLV, transactions: pd.DataFrame, config: CLVConfig,
                    summary: HoldoutSummary, predicted: np.ndarray) -> dict[str, int]:
    """Log parameters, holdout metrics, tables, plots and warnings to the active run; returns the segment counts."""
    params = fitted.params
    gg = params.gamma_gamma
    metrics = {**_candidate_metrics(fitted),
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
    for penalizer, mae in fitted.gamma_gamma_mae_by_penalizer.items():
        metrics[f"gamma_gamma_holdout_mae_penalizer_{penalizer:g}"] = mae
    mlflow.log_metrics(metrics)
    mlflow.set_tags({
        "gamma_gamma_assumption": "holds" if gamma_gamma_assumption_holds(fitted.correlation) else "violated",
        "clv_model_reason": fitted.choice.reason[:TAG_LIMIT],
        "warnings": json.dumps(list(fitted.warnings))[:TAG_LIMIT],
        **run_tags(params),
    })
    mlflow.log_dict({"warnings": list(fitted.warnings), "model_warnings": list(params.warnings)}, "warnings.json")
    mlflow.log_dict(json_ready({"chosen": params.model, "reason": fitted.choice.reason,
                                "candidates": [c.as_dict() for c in fitted.choice.candidates]}), "candidates.json")

    by_frequency = purchases_by_frequency(fitted.holdout, predicted)
    calibration = p_alive_calibration(params, fitted.holdout)
    tracking = cumulative_tracking(params, daily_purchases(transactions, config.observation_end))
    mlflow.log_text(by_frequency.to_csv(index=False), "validation/holdout_by_frequency.csv")
    mlflow.log_text(calibration.to_csv(index=False), "validation/p_alive_calibration.csv")
    mlflow.log_text(tracking.to_csv(index=False), "validation/cumulative_tracking.csv")
    label = MODEL_LABELS[params.model]
    for figure, name in ((tracking_figure(tracking, pd.Timestamp(config.calibration_end), label), "tracking.png"),
                         (by_frequency_figure(by_frequency), "holdout_by_frequency.png"),
                         (p_alive_figure(calibration), "p_alive_calibration.png")):
        mlflow.log_figure(figure, f"validation/{name}")
    mlflow.log_metrics({f"segment_{name}": n for name, n in fitted.segments.items()})
    mlflow.log_dict(parameters_to_dict(params), f"model_parameters/{PARAMETERS_FILE}")
    return fitted.segments


def train_clv_model(
    transactions: pd.DataFrame,
    config: CLVConfig,
    tracking_uri: str,
    artifact_root: str,
    channels: pd.DataFrame | None = None,
    with_monetary: bool = True,
    promote: Promote | str = Promote.auto,
    model_name: str = CLV_MODEL_NAME,
) -> CLVTrainingResult:
    """Fit, validate, log to the MLflow experiment ``clv`` and register as ``model_name`` with champion gating
    (the purchase model as ``config.model`` says: ``auto``, ``bgnbd``, ``mbgnbd`` or ``pnbd``)."""
    promote = Promote.parse(promote)
    with threadpool_limits(limits=1, user_api="blas"):
        fitted = fit_clv(transactions, config, channels, with_monetary)
    summary, predicted = evaluate_on_holdout(fitted.params, fitted.holdout)
    use_tracking(tracking_uri)
    use_experiment(EXPERIMENT, artifact_root)
    with mlflow.start_run() as run, tempfile.TemporaryDirectory() as workdir:
        log_run_facts(config, fitted.holdout)
        mlflow.set_tag("model_name", model_name)
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

        promotion = register_and_gate(model_uri, model_name, GATING_METRIC, summary.mae, champion_mae,
                                      higher_is_better=False, promote=promote)
        mlflow.set_tags({"champion": str(promotion.champion).lower(), "promotion_reason": promotion.reason,
                         "model_version": promotion.version})
    return CLVTrainingResult(fitted.params, summary, run.info.run_id, model_uri, promotion, fitted.correlation,
                             segments, config.calibration_end, config.observation_end, fitted.choice,
                             fitted.warnings)


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
    model_name: str | None = None,
    model: str = "auto",
) -> CLVTrainingResult:
    """Train on the CRM's orders (dates default from their range) with new-customer values per acquisition channel.

    Registered as ``model_name`` (default ``clv``, :data:`training.registry.CLV_MODEL_NAME`).
    """
    engine = connect(db_url)
    try:
        transactions = read_crm_orders(engine, observation_end)
        channels = read_acquisition_channels(engine)
    finally:
        engine.dispose()
    cal, end = default_dates(transactions, horizon_days, calibration_end, observation_end)
    config = CLVConfig(cal, end, time_unit=time_unit, horizon_days=horizon_days, discount_rate=discount_rate,
                       source=f"crm:{safe_url(db_url)}", model=model)
    return train_clv_model(transactions, config, tracking_uri, artifact_root, channels, True, promote,
                           model_name or CLV_MODEL_NAME)


def train_from_file(
    path: Path,
    customer_col: str,
    date_col: str,
    calibration_end: date | str | None,
    observation_end: date | str | None,
    tracking_uri: str,
    artifact_root: str,
    amount_col: str | None = None,
    horizon_days: int = 365,
    discount_rate: float = 0.10,
    time_unit: str = "D",
    promote: Promote | str = Promote.auto,
    model_name: str | None = None,
    model: str = "auto",
) -> CLVTrainingResult:
    """Train on a transactions file; without ``amount_col`` the model predicts purchases only (no CLV). Dates not
    given default as for the CRM (:func:`features.rfm.default_dates`).

    Registered as ``model_name`` (default ``clv-<file stem>``): never as the CRM's ``clv``, which the API and
    the nightly jobs score the CRM's customers with.
    """
    if model_name == CLV_MODEL_NAME:
        raise InvalidInput(f"--model-name {CLV_MODEL_NAME}: that is the CRM model, the one leadval serve and the "
                           "nightly jobs score the CRM's customers with; leave --model-name out (default "
                           f"{file_model_name(path, CLV_MODEL_NAME)}) or pick another name")
    transactions = read_transactions(Path(path), customer_col, date_col, amount_col, observation_end)
    cal, end = default_dates(transactions, horizon_days, calibration_end, observation_end)
    config = CLVConfig(cal, end, time_unit=time_unit, horizon_days=horizon_days, discount_rate=discount_rate,
                       source=f"file:{Path(path).name}", model=model)
    return train_clv_model(transactions, config, tracking_uri, artifact_root, None, amount_col is not None, promote,
                           model_name or file_model_name(path, CLV_MODEL_NAME))
