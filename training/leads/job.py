"""The lead-scoring job: splits (:mod:`training.leads.data.splits`) -> model and baseline -> evaluation -> MLflow ->
registry.

For a flat file, the booster's parameters are optionally searched within a time box on the training split
(:mod:`training.leads.tune`) first. :func:`train_and_register` fits the LightGBM scorer (early stopping and
calibration on validation) and the logistic-regression baseline on the training split, keeps the reference of
all splits' rows that input drift is judged by (:mod:`training.leads.reference`: the test split is the nearest to
the cutoff), evaluates both on the test split,
logs config, data fingerprint, git commit, the data's end instant (tag ``data_end``, CRM only), metrics,
tables, plots, a model card (what the score, bands and reasons mean), the column audit and the pyfunc to the
``lead-scoring`` experiment, registers the model (a flat file's under a name of its own, never the CRM model's)
and promotes it to ``@champion`` per ``promote`` (auto: only when its test ROC AUC is at least the champion's on
the same test rows, unless the champion used columns the audit flags as leaky: then its figure does not block).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from features.crm.schema import SCORE_BANDS
from features.errors import InvalidInput, LeadvalError
from features.json_ready import json_ready
from features.lead_labels import LABEL_COLUMN
from training.leads.data.splits import CrmTrainingConfig, LeadSplits, TableTrainingConfig
from training.leads.evaluation import (
    calibration_table,
    evaluation_plots,
    gains_table,
    lead_metrics,
    new_leads_metrics,
)
from training.leads.fit import fit_baseline, fit_lead_model
from training.leads.pyfunc import log_lead_model, scorer_of
from training.leads.reasons import FRESH_DAYS
from training.leads.reference import AGE_COLUMN, feature_reference
from training.leads.scorer import LeadScorer
from training.registry import (
    LEAD_MODEL_NAME,
    TAG_LIMIT,
    Promote,
    file_model_name,
    load_registered,
    register_and_gate,
    version_tags,
)
from training.tracking import log_run_facts, use_experiment, use_tracking

EXPERIMENT_NAME = LEAD_MODEL_NAME
GATE_METRIC = "roc_auc"


@dataclass(frozen=True)
class LeadTrainingResult:
    """What a training run produced and what the registry did with it."""

    run_id: str
    model_name: str
    model_version: str
    model_uri: str
    logged_model_uri: str
    champion: bool
    promotion_reason: str
    previous_champion: str | None
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    seconds: float
    scorer: LeadScorer = field(repr=False, compare=False)
    splits: LeadSplits = field(repr=False, compare=False)
    warnings: tuple[str, ...] = ()
    tuning: dict[str, Any] | None = None

    @property
    def features_used(self) -> list[str]:
        """The model's columns, in the booster's order."""
        return list(self.scorer.spec.features)

    @property
    def dropped(self) -> dict[str, str]:
        """Columns the audit left out, with why (column -> reason)."""
        return dict(self.splits.audit.dropped) if self.splits.audit else {}

    def summary(self) -> dict[str, Any]:
        """The JSON-ready result (``--json``)."""
        return {"run_id": self.run_id, "model_name": self.model_name, "model_version": self.model_version,
                "model_uri": self.model_uri, "champion": self.champion, "promotion_reason": self.promotion_reason,
                "previous_champion": self.previous_champion, "metrics": self.metrics,
                "baseline_metrics": self.baseline_metrics, "features_used": self.features_used,
                "dropped": self.dropped, "kept": list(self.splits.audit.kept) if self.splits.audit else [],
                "notes": list(self.splits.audit.notes) if self.splits.audit else [],
                "warnings": list(self.warnings), "tuning": self.tuning,
                "seconds": round(self.seconds, 2)}


def train_and_register(
    splits: LeadSplits,
    config: CrmTrainingConfig | TableTrainingConfig,
    tracking_uri: str,
    artifact_root: str,
    promote: Promote | str = Promote.auto,
    model_name: str | None = None,
) -> LeadTrainingResult:
    """Fit, evaluate against the baseline, log everything to MLflow, register and gate; see the module doc.

    ``model_name`` defaults to ``lead-scoring`` for the CRM and to ``lead-scoring-<file stem>`` for a flat
    file, which may never be registered as ``lead-scoring``: the service and the nightly jobs score CRM
    leads with that model.
    """
    promote = Promote.parse(promote)
    from_file = splits.source["source"] == "table"
    model_name = model_name or (file_model_name(config.path) if from_file else LEAD_MODEL_NAME)
    if from_file and model_name == LEAD_MODEL_NAME:
        raise InvalidInput(f"--model-name {LEAD_MODEL_NAME}: that is the CRM model, the one leadval serve and the "
                           "nightly jobs score CRM leads with; a model trained on a flat file cannot score them. "
                           f"Leave --model-name out (default {file_model_name(config.path)}) or pick another name")
    started = time.perf_counter()
    model_config, tuning = config.model, None
    if from_file and config.tune_seconds > 0:
        from training.leads.tune import tune_lead_model

        tuning = tune_lead_model(splits.train, splits.spec, config.model, config.tune_seconds, LABEL_COLUMN)
        model_config = tuning.config
    fit_started = time.perf_counter()
    scorer = fit_lead_model(splits.train, splits.valid, splits.spec, splits.wording, model_config, LABEL_COLUMN,
                            splits.horizon_days, splits.source.get("cutoff"))
    fit_seconds = time.perf_counter() - fit_started
    valid_scored = scorer.predict(splits.valid, reasons=False)
    scorer = replace(scorer, reference=feature_reference(splits.all_rows, splits.spec.categorical, splits.spec.numeric,
                                                         valid_scored["score"], valid_scored["band"]))
    baseline = fit_baseline(splits.train, splits.spec, LABEL_COLUMN)
    outcome = splits.test[LABEL_COLUMN].to_numpy()
    if np.unique(outcome).size < 2:
        raise InvalidInput(f"test data: {len(outcome)} rows, all with outcome {outcome[:1].tolist()}; the holdout "
                           "needs converters and non-converters (use more data or a longer history)")
    probability = scorer.probability(splits.test)
    baseline_probability = baseline.predict_proba(splits.spec.matrix(splits.test))[:, 1]
    ages = splits.test[AGE_COLUMN].to_numpy() if AGE_COLUMN in splits.test.columns else None
    metrics = lead_metrics(outcome, probability) | new_leads_metrics(outcome, probability, ages, splits.horizon_days)
    baseline_metrics = lead_metrics(outcome, baseline_probability)
    audit = splits.audit
    flagged = set(audit.leaky) if audit is not None and from_file else set()
    leaky_used = sorted(flagged & set(splits.spec.features))
    warnings = list(audit.warnings) if audit is not None else []
    if metrics["roc_auc"] < baseline_metrics["roc_auc"]:
        warnings.append(f"the model ranks the holdout worse than the logistic-regression baseline (ROC AUC "
                        f"{metrics['roc_auc']:.3f} against {baseline_metrics['roc_auc']:.3f}): the data may be too "
                        "small or too simple for boosted trees; compare both before relying on the scores")
    if tuning is not None and tuning.trials == 0:
        warnings.append(f"--tune {config.tune_seconds:g}: no candidate finished within the time box; trained with "
                        "the configuration as given (give it more seconds)")

    use_tracking(tracking_uri)
    use_experiment(EXPERIMENT_NAME, artifact_root)
    with mlflow.start_run() as run:
        log_run_facts(config, splits.all_rows)
        mlflow.set_tags({"source": splits.source["source"], "model_name": model_name,
                         **({"data_end": scorer.info["data_end"]} if "data_end" in scorer.info else {})})
        mlflow.log_dict(json_ready(splits.source), "data_source.json")
        mlflow.log_metrics({**metrics, **{f"baseline_{k}": v for k, v in baseline_metrics.items()},
                            "best_iteration": scorer.info["best_iteration"], "fit_seconds": fit_seconds})
        if audit is not None:
            mlflow.log_dict(json_ready(audit.as_dict()), "audit.json")
        if warnings:
            mlflow.set_tag("warnings", json.dumps(warnings)[:TAG_LIMIT])
            mlflow.log_dict({"warnings": warnings}, "warnings.json")
        if tuning is not None:
            mlflow.log_dict(json_ready(tuning.as_dict()), "tuning.json")
            mlflow.log_params({f"tuned.{k}": v for k, v in tuning.params.items()})
            mlflow.log_metrics({"tune_cv_roc_auc": tuning.cv_roc_auc, "tune_start_cv_roc_auc": tuning.start_cv_roc_auc,
                                "tune_trials": tuning.trials, "tune_seconds": tuning.seconds})
        _log_tables_and_plots(scorer, splits, outcome, probability, baseline_probability)
        mlflow.log_text(model_card(scorer, splits, metrics, baseline_metrics, model_name), "model_card.md")
        info = log_lead_model(scorer, splits.id_dtype, metadata={"source": splits.source["source"],
                                                                 "test_metrics": metrics})
        tags = {"source": splits.source["source"], "features": ",".join(splits.spec.features),
                "audit_flagged": ",".join(sorted(flagged)), "leaky_columns": ",".join(leaky_used)}
        champion = ChampionOnHoldout(splits.test, flagged, leaky_used)
        promotion = register_and_gate(info.model_uri, model_name, GATE_METRIC, metrics[GATE_METRIC],
                                      champion.roc_auc, higher_is_better=True, promote=promote, tags=tags,
                                      champion_caveat=champion.caveat)
        mlflow.set_tags({"registered_version": promotion.version, "champion": str(promotion.champion),
                         "promotion": promotion.reason})
    return LeadTrainingResult(run.info.run_id, model_name, promotion.version,
                              f"models:/{model_name}/{promotion.version}", info.model_uri, promotion.champion,
                              promotion.reason, promotion.previous_champion, metrics,
                              baseline_metrics, time.perf_counter() - started, scorer, splits, tuple(warnings),
                              tuning.as_dict() if tuning is not None else None)


class ChampionOnHoldout:
    """The champion judged on the candidate's holdout: its ROC AUC there, and whether that figure counts.

    It does not when the champion used columns the candidate's audit flags as leaky (``flagged``), or that its
    own registration recorded as leaky (kept with ``--keep``), unless the candidate itself uses flagged columns
    (``candidate_leaky``): then both figures are inflated and compared as they are.
    """

    def __init__(self, test: pd.DataFrame, flagged: set[str] | None = None, candidate_leaky: list[str] | None = None):
        self.test, self.flagged, self.candidate_leaky = test, flagged or set(), candidate_leaky or []
        self._scorers: dict[str, LeadScorer | None] = {}

    def scorer(self, model_uri: str) -> LeadScorer | None:
        """The registered model's scorer (loaded once), or None when it cannot be loaded as a lead model."""
        if model_uri not in self._scorers:
            try:
                self._scorers[model_uri] = scorer_of(load_registered(model_uri))
            except (InvalidInput, MlflowException, LeadvalError):
                self._scorers[model_uri] = None
        return self._scorers[model_uri]

    def roc_auc(self, model_uri: str) -> float:
        """ROC AUC of the model at ``model_uri`` on the candidate's test rows; -inf when it cannot score them
        (e.g. a champion trained on other columns), so a comparable candidate replaces it."""
        from sklearn.metrics import roc_auc_score

        scorer = self.scorer(model_uri)
        if scorer is None:
            return float("-inf")
        try:
            scored = scorer.predict(self.test, reasons=False)
        except (InvalidInput, LeadvalError):
            return float("-inf")
        return float(roc_auc_score(self.test[LABEL_COLUMN].to_numpy(), scored["probability"].to_numpy()))

    def caveat(self, model_uri: str) -> str | None:
        """Why the champion's figure does not count (it used columns flagged as leaky), or None."""
        scorer = self.scorer(model_uri)
        if scorer is None or self.candidate_leaky:
            return None
        recorded = {c for c in version_tags(model_uri).get("leaky_columns", "").split(",") if c}
        leaky = sorted(set(scorer.spec.features) & (self.flagged | recorded))
        if not leaky:
            return None
        return f"used columns flagged as leaky ({', '.join(leaky)})"


def _log_tables_and_plots(scorer: LeadScorer, splits: LeadSplits, outcome: np.ndarray, probability: np.ndarray,
                          baseline_probability: np.ndarray) -> None:
    importance = pd.Series(scorer.booster.feature_importance("gain"), index=list(splits.spec.features))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        gains_table(outcome, probability).to_csv(folder / "gains_table.csv", index=False)
        gains_table(outcome, baseline_probability).to_csv(folder / "baseline_gains_table.csv", index=False)
        calibration_table(outcome, probability).to_csv(folder / "calibration_table.csv", index=False)
        importance.sort_values(ascending=False).rename("gain").to_csv(folder / "feature_importance.csv")
        mlflow.log_artifacts(str(folder), "evaluation")
        plots = folder / "plots"
        evaluation_plots(outcome, {"LightGBM": probability, "logistic baseline": baseline_probability},
                         importance, plots)
        mlflow.log_artifacts(str(plots), "plots")


def model_card(scorer: LeadScorer, splits: LeadSplits, metrics: dict[str, float], baseline: dict[str, float],
               model_name: str) -> str:
    """The model card (markdown): purpose, data, method, holdout figures against the baseline, limits."""
    source = splits.source
    if source["source"] == "crm":
        data = (f"CRM snapshots as of {source['cutoff']:%Y-%m-%d} (history from {source['data_start']:%Y-%m-%d}): "
                f"{len(splits.train):,} training, {len(splits.valid):,} validation and {len(splits.test):,} test "
                f"lead-snapshots; label = converted within {splits.horizon_days} days after the snapshot; leads "
                "converted before it excluded. Splits are a full horizon apart (no label window overlaps the "
                "next split).")
        target = f"the probability that an open lead converts within {splits.horizon_days} days"
    else:
        data = (f"Flat file {source['file']} ({source['rows']:,} rows, positive rate {source['positive_rate']:.1%}); "
                f"{source['holdout']} holdout: {len(splits.train):,} training, {len(splits.valid):,} validation, "
                f"{len(splits.test):,} test rows. Columns left out by the audit: "
                f"{'; '.join(f'{c} ({r})' for c, r in source['dropped'].items()) or 'none'}."
                + (f" Kept though suspected of leakage (--keep): {', '.join(source['kept'])}."
                   if source['kept'] else ""))
        target = "the probability of the file's positive outcome"
    rows = "\n".join(f"| {name} | {metrics[name]:.4f} | {baseline[name]:.4f} |"
                     for name in ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_top10", "capture_top10",
                                  "lift_top20", "capture_top20"))
    scale = scorer.scale
    if scale is None:
        a, b, c = scorer.band_thresholds
        score_text = "a score 0-100 (probability x 100)"
        bands = f"Bands from validation probabilities: A >= {a:.4f}, B >= {b:.4f}, C >= {c:.4f}, else D."
    else:
        score_text = "a score 1-99 (the percentile of the probability among validation leads)"
        starts = dict(zip(SCORE_BANDS, [*scorer.band_thresholds, 0.0], strict=True))
        ranges = "\n".join(f"| {band} | {low}-{high} | {share:.0%} | {starts[band]:.4f} |"
                           for band, low, high, share in scale.band_ranges())
        bands = f"""Score = the percentile of the lead's probability among the {scale.reference_leads:,} validation rows
(their calibrated probabilities are stored with the model): min(99, max(1, ceil(100 x F(p)))), F(p) = the
share of validation rows with a lower probability (ties counted half, linear between stored points). It
never puts a likelier lead below a less likely one (monotone in the probability) and reads the same at
any base rate: each score from 2 to 98 holds 1% of validation rows, 1 the bottom 1%, 99 the top 2%. It
is a rank, not a likelihood: the probability says how likely.

Bands are score ranges, so no score is in two bands:

| band | score | share of validation rows (best first) | probability above |
|---|---|---|---|
{ranges}"""
    data_end = f" Data end: {scorer.info['data_end']}." if "data_end" in scorer.info else ""
    return f"""# Model card: {model_name}

## What it predicts
{target}, as a calibrated probability, {score_text}, a band and reason codes.

## Data
{data}{data_end}

## Method
LightGBM binary classifier with native categoricals ({len(splits.spec.categorical)} categorical,
{len(splits.spec.numeric)} numeric features), early stopping on the validation split
({scorer.info['best_iteration']} trees), converters weighted x{scorer.info['scale_pos_weight']:.2f} for class
imbalance, {scorer.calibrator.method} calibration on the validation split.

## Score and bands
{bands}

## Reasons
Top 3 factors up and down from LightGBM SHAP contributions grouped by original feature (they add up to
the model's log-odds), each worded from the member feature that contributed most. An up reason states
evidence present on the lead (an activity, its recency, a profile attribute, its age): a factor worded as
an absence ("no ... yet", "not known", a zero count or rate) is not shown as raising the score, and a
down reason never states a fresh intent signal (a pricing-page visit, demo request, webinar registration or
attendance, or form within {FRESH_DAYS} days, or any count of them); the next factor in the same direction
takes such a factor's place.

## Holdout (test split, never used for fitting, stopping, calibration or bands)
| metric | LightGBM | logistic baseline |
|---|---|---|
{rows}

Base rate {metrics['base_rate']:.4f} over {int(metrics['rows']):,} rows.

## Intended use and limits
Ranking and prioritising open leads for sales follow-up. Probabilities are calibrated to the period the
model was validated on; re-train when conversion rates, channels or the sales process change. Unseen
categories are scored as missing. It is not a decision about a person and must not be used to deny service.
"""
