"""The lead-scoring job: data -> time-ordered splits -> model and baseline -> evaluation -> MLflow -> registry.

Two sources give the same kind of model:

* the CRM (:func:`crm_splits`): stacked point-in-time snapshots (:mod:`features.lead_labels`), the
  latest ones held out for the test, the ones before for validation, each a full horizon apart;
* a flat file, one row per lead with an outcome column (:func:`table_splits`): categoricals detected,
  holdout = the latest rows by ``time_column`` (or by file order with ``holdout="latest"``), else a
  stratified random holdout.

:func:`train_and_register` fits the LightGBM scorer (early stopping and calibration on validation) and
the logistic-regression baseline on the training split, evaluates both on the test split, logs config,
data fingerprint, git commit, the data's end instant (tag ``data_end``, CRM only), metrics, tables, plots,
a model card (what the score, bands and reasons mean) and the pyfunc to the
``lead-scoring`` experiment, registers the model and promotes it to ``@champion`` per ``promote``
(auto: only when its test ROC AUC is at least the champion's on the same test rows).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from sklearn.model_selection import train_test_split
from sqlalchemy import Engine

from features.crm.imports import read_export
from features.crm.schema import SCORE_BANDS
from features.errors import InvalidInput, LeadvalError
from features.json_ready import json_ready
from features.lead_history import crm_period, load_crm_frames
from features.lead_features import BEHAVIOUR_FEATURES, PROFILE_FEATURES, as_of_timestamp
from features.lead_labels import LABEL_COLUMN, snapshot_plan, training_snapshots
from training.leads.evaluation import calibration_table, evaluation_plots, gains_table, lead_metrics
from training.leads.fit import LeadModelConfig, fit_baseline, fit_lead_model
from training.leads.pyfunc import log_lead_model, scorer_of
from training.leads.reasons import FRESH_DAYS, FeatureWording, column_wording, crm_wording
from training.leads.scorer import LeadScorer
from training.leads.spec import FeatureSpec
from training.registry import LEAD_MODEL_NAME, Promote, load_registered, register_and_gate
from training.tracking import log_run_facts, use_experiment, use_tracking

EXPERIMENT_NAME = LEAD_MODEL_NAME
GATE_METRIC = "roc_auc"
TRUE_WORDS = frozenset({"1", "yes", "y", "true", "t"})
FALSE_WORDS = frozenset({"0", "no", "n", "false", "f"})


@dataclass(frozen=True)
class CrmTrainingConfig:
    """Training from the CRM: the cutoff (nothing after it is read), the horizon and the snapshots."""

    as_of: str | None = None
    horizon_days: int = 90
    snapshot_every_days: int = 30
    valid_snapshots: int = 2
    test_snapshots: int = 2
    max_train_snapshots: int = 24
    model: LeadModelConfig = field(default_factory=LeadModelConfig)


@dataclass(frozen=True)
class TableTrainingConfig:
    """Training from a flat file: which column is what, and how to hold out.

    ``holdout``: ``latest`` = the latest ``test_share`` of rows by ``time_column`` (or by file order
    without one; right for files sorted by date), ``random`` = stratified random, ``auto`` = latest with
    a time column, else random. Validation takes ``valid_share`` of the remaining rows the same way.
    """

    path: str
    target: str
    positive: str | None = None
    id_column: str | None = None
    time_column: str | None = None
    drop: tuple[str, ...] = ()
    holdout: Literal["auto", "latest", "random"] = "auto"
    test_share: float = 0.2
    valid_share: float = 0.2
    model: LeadModelConfig = field(default_factory=LeadModelConfig)

    def __post_init__(self) -> None:
        if self.holdout not in ("auto", "latest", "random"):
            raise InvalidInput(f"--holdout: must be auto, latest or random, got {self.holdout!r}")
        for name in ("test_share", "valid_share"):
            if not 0 < getattr(self, name) < 0.5:
                raise InvalidInput(f"{name}: must be between 0 and 0.5, got {getattr(self, name)}")


@dataclass(frozen=True)
class LeadSplits:
    """Train, validation and test rows (features plus the ``converted`` label) and how to read them."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    spec: FeatureSpec
    wording: tuple[FeatureWording, ...]
    horizon_days: int | None
    source: dict[str, Any]
    id_dtype: str = "string"

    @property
    def all_rows(self) -> pd.DataFrame:
        return pd.concat([self.train, self.valid, self.test], ignore_index=True)


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

    def summary(self) -> dict[str, Any]:
        """The JSON-ready result (``--json``)."""
        return {"run_id": self.run_id, "model_name": self.model_name, "model_version": self.model_version,
                "model_uri": self.model_uri, "champion": self.champion, "promotion_reason": self.promotion_reason,
                "previous_champion": self.previous_champion, "metrics": self.metrics,
                "baseline_metrics": self.baseline_metrics, "seconds": round(self.seconds, 2)}


def crm_splits(engine: Engine, config: CrmTrainingConfig) -> LeadSplits:
    """Stacked snapshots of the CRM as of ``config.as_of`` (default: its latest event), split in time."""
    start, end = crm_period(engine)
    cutoff = as_of_timestamp(config.as_of) if config.as_of else end
    crm = load_crm_frames(engine, cutoff)
    plan = snapshot_plan(start, cutoff, config.horizon_days, config.snapshot_every_days, config.valid_snapshots,
                         config.test_snapshots, config.max_train_snapshots)
    parts = {name: training_snapshots(crm.leads, crm.activities, getattr(plan, name), config.horizon_days)
             for name in ("train", "valid", "test")}
    spec = FeatureSpec.learn(parts["train"], "lead_id", PROFILE_FEATURES, BEHAVIOUR_FEATURES)
    source = {"source": "crm", "cutoff": cutoff, "data_start": start, "horizon_days": config.horizon_days,
              "snapshots": {name: [d.isoformat() for d in getattr(plan, name)] for name in ("train", "valid", "test")},
              "leads": len(crm.leads), "activities": len(crm.activities)}
    return LeadSplits(parts["train"], parts["valid"], parts["test"], spec, crm_wording(spec.features),
                      config.horizon_days, source)


def read_lead_table(path: Path, spec: FeatureSpec | None = None, id_column: str | None = None) -> pd.DataFrame:
    """A CSV (comma, semicolon or tab separated) or Parquet file of leads with typed columns.

    With a model's ``spec``, its categorical columns are read as text and its numeric ones as numbers
    (a non-number is an error naming the column and rows). Without, CSV columns whose every non-empty
    value is a number become float and the rest stay text. The id column (``id_column`` or the spec's)
    keeps the file's text. Empty cells are missing.
    """
    id_column = id_column or (spec.id_column if spec else None)
    frame = read_export(Path(path)).frame
    typed = {}
    for name in frame.columns:
        column = frame[name]
        textual = column.dtype == object or isinstance(column.dtype, pd.StringDtype)
        if textual and name == id_column:
            typed[name] = column.astype("str")
        elif pd.api.types.is_bool_dtype(column) or (spec is not None and name in spec.categorical):
            typed[name] = _missing_if_blank(column.astype("str")) if textual else column.astype("str")
        elif not textual:
            typed[name] = column
        else:
            text = _missing_if_blank(column.astype("str"))
            numbers = pd.to_numeric(text, errors="coerce").astype("float64")
            is_number = numbers.notna().sum() == text.notna().sum()
            if spec is not None and name in spec.numeric and not is_number:
                bad = np.flatnonzero((numbers.isna() & text.notna()).to_numpy())[:5].tolist()
                raise InvalidInput(f"{name}: rows {bad} are not numbers (e.g. {text.iloc[bad[0]]!r}); "
                                   "the model expects a number or an empty cell")
            typed[name] = numbers if is_number and (spec is None or name in spec.numeric) else text
    return pd.DataFrame(typed)


def _missing_if_blank(text: pd.Series) -> pd.Series:
    stripped = text.str.strip()
    return stripped.where(stripped != "", None)


def table_outcome(values: pd.Series, target: str, positive: str | None) -> np.ndarray:
    """0/1 outcomes from the target column: ``== positive`` when given, else 0/1, yes/no or true/false."""
    missing = values.isna().to_numpy()
    if missing.any():
        rows = np.flatnonzero(missing)[:5].tolist()
        raise InvalidInput(f"{target}: {int(missing.sum())} rows without an outcome (rows {rows}); "
                           "every row needs one")
    text = values.astype("str").str.strip()
    if pd.api.types.is_numeric_dtype(values):
        text = pd.Series(np.where(values.to_numpy() == 1, "1", np.where(values.to_numpy() == 0, "0", text)))
    if positive is not None:
        outcome = (text == str(positive)).to_numpy()
        if not outcome.any():
            raise InvalidInput(f"--positive: no row of {target} equals {positive!r}; values are "
                               f"{sorted(text.unique().tolist())[:10]}")
        return outcome.astype("int8")
    lowered = text.str.lower()
    seen = set(lowered.unique().tolist())
    if not seen <= TRUE_WORDS | FALSE_WORDS:
        raise InvalidInput(f"{target}: values {sorted(text.unique().tolist())[:10]} are not 0/1, yes/no or "
                           "true/false; name the converted value with --positive")
    return lowered.isin(TRUE_WORDS).to_numpy().astype("int8")


def table_splits(frame: pd.DataFrame, config: TableTrainingConfig) -> LeadSplits:
    """Features, outcome and holdout of a flat file (see :class:`TableTrainingConfig`)."""
    named = [c for c in (config.target, config.id_column, config.time_column, *config.drop) if c]
    missing = [c for c in named if c not in frame.columns]
    if missing:
        raise InvalidInput(f"--table: columns {missing} are not in the file; it has {list(frame.columns)}")
    if config.id_column and frame[config.id_column].duplicated().any():
        repeated = frame.loc[frame[config.id_column].duplicated(), config.id_column].head(5).tolist()
        raise InvalidInput(f"--id-col {config.id_column}: ids repeat (e.g. {repeated}); expected one row per lead")
    outcome = table_outcome(frame[config.target], config.target, config.positive)
    candidates = [c for c in frame.columns if c not in named]
    categorical, numeric, ignored = [], [], []
    for name in candidates:
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            numeric.append(name)
        elif column.nunique() > max(50, len(frame) // 2):
            ignored.append(name)
        else:
            categorical.append(name)
    if not categorical and not numeric:
        raise InvalidInput("--table: no feature columns left besides the target, id, time and dropped columns")
    data = frame.drop(columns=ignored).assign(**{LABEL_COLUMN: outcome})
    order = _holdout_order(frame, config)
    if order is None:
        rest, test = train_test_split(data, test_size=config.test_share, stratify=outcome,
                                      random_state=config.model.seed)
        train, valid = train_test_split(rest, test_size=config.valid_share, stratify=rest[LABEL_COLUMN],
                                        random_state=config.model.seed)
    else:
        ordered = data.iloc[order]
        n_test = int(round(len(ordered) * config.test_share))
        rest, test = ordered.iloc[: len(ordered) - n_test], ordered.iloc[len(ordered) - n_test:]
        n_valid = int(round(len(rest) * config.valid_share))
        train, valid = rest.iloc[: len(rest) - n_valid], rest.iloc[len(rest) - n_valid:]
    spec = FeatureSpec.learn(train, config.id_column, tuple(categorical), tuple(numeric))
    id_dtype = "string"
    if config.id_column and pd.api.types.is_numeric_dtype(frame[config.id_column]):
        id_dtype = "long" if pd.api.types.is_integer_dtype(frame[config.id_column]) else "double"
    source = {"source": "table", "file": Path(config.path).name, "rows": len(frame),
              "holdout": "random" if order is None else "latest", "ignored_columns": ignored,
              "positive_rate": float(outcome.mean())}
    return LeadSplits(*(part.reset_index(drop=True) for part in (train, valid, test)), spec,
                      column_wording(spec.features, categorical), None, source, id_dtype)


def _holdout_order(frame: pd.DataFrame, config: TableTrainingConfig) -> np.ndarray | None:
    """Row order oldest first for a latest-period holdout, or None for a random one."""
    latest = config.holdout == "latest" or (config.holdout == "auto" and config.time_column is not None)
    if not latest:
        return None
    if config.time_column is None:
        return np.arange(len(frame))
    times = frame[config.time_column]
    if not pd.api.types.is_numeric_dtype(times):
        times = pd.to_datetime(times, errors="coerce", format="mixed")
    if times.isna().any():
        rows = np.flatnonzero(times.isna().to_numpy())[:5].tolist()
        raise InvalidInput(f"--time-col {config.time_column}: rows {rows} have no readable date or number")
    return np.argsort(times.to_numpy(), kind="stable")


def train_and_register(
    splits: LeadSplits,
    config: CrmTrainingConfig | TableTrainingConfig,
    tracking_uri: str,
    artifact_root: str,
    promote: Promote | str = Promote.auto,
    model_name: str = LEAD_MODEL_NAME,
) -> LeadTrainingResult:
    """Fit, evaluate against the baseline, log everything to MLflow, register and gate; see the module doc."""
    promote = Promote.parse(promote)
    started = time.perf_counter()
    scorer = fit_lead_model(splits.train, splits.valid, splits.spec, splits.wording, config.model, LABEL_COLUMN,
                            splits.horizon_days, splits.source.get("cutoff"))
    fit_seconds = time.perf_counter() - started
    baseline = fit_baseline(splits.train, splits.spec, LABEL_COLUMN)
    outcome = splits.test[LABEL_COLUMN].to_numpy()
    if np.unique(outcome).size < 2:
        raise InvalidInput(f"test data: {len(outcome)} rows, all with outcome {outcome[:1].tolist()}; the holdout "
                           "needs converters and non-converters (use more data or a longer history)")
    probability = scorer.probability(splits.test)
    baseline_probability = baseline.predict_proba(splits.spec.matrix(splits.test))[:, 1]
    metrics = lead_metrics(outcome, probability)
    baseline_metrics = lead_metrics(outcome, baseline_probability)

    use_tracking(tracking_uri)
    use_experiment(EXPERIMENT_NAME, artifact_root)
    with mlflow.start_run() as run:
        log_run_facts(config, splits.all_rows)
        mlflow.set_tags({"source": splits.source["source"], "model_name": model_name,
                         **({"data_end": scorer.info["data_end"]} if "data_end" in scorer.info else {})})
        mlflow.log_dict(json_ready(splits.source), "data_source.json")
        mlflow.log_metrics({**metrics, **{f"baseline_{k}": v for k, v in baseline_metrics.items()},
                            "best_iteration": scorer.info["best_iteration"], "fit_seconds": fit_seconds})
        _log_tables_and_plots(scorer, splits, outcome, probability, baseline_probability)
        mlflow.log_text(model_card(scorer, splits, metrics, baseline_metrics, model_name), "model_card.md")
        info = log_lead_model(scorer, splits.id_dtype, metadata={"source": splits.source["source"],
                                                                 "test_metrics": metrics})
        promotion = register_and_gate(info.model_uri, model_name, GATE_METRIC, metrics[GATE_METRIC],
                                      lambda uri: champion_holdout_auc(uri, splits.test), higher_is_better=True,
                                      promote=promote)
        mlflow.set_tags({"registered_version": promotion.version, "champion": str(promotion.champion),
                         "promotion": promotion.reason})
    return LeadTrainingResult(run.info.run_id, model_name, promotion.version, f"models:/{model_name}/{promotion.version}",
                              info.model_uri, promotion.champion, promotion.reason, promotion.previous_champion, metrics,
                              baseline_metrics, time.perf_counter() - started, scorer, splits)


def champion_holdout_auc(model_uri: str, test: pd.DataFrame) -> float:
    """ROC AUC of the model at ``model_uri`` on the candidate's test rows; -inf when it cannot score them
    (e.g. a champion trained on other columns), so a comparable candidate replaces it."""
    from sklearn.metrics import roc_auc_score

    try:
        scored = scorer_of(load_registered(model_uri)).predict(test, reasons=False)
    except (InvalidInput, MlflowException, LeadvalError):
        return float("-inf")
    return float(roc_auc_score(test[LABEL_COLUMN].to_numpy(), scored["probability"].to_numpy()))


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
                f"{len(splits.test):,} test rows. Ignored identifier-like columns: {source['ignored_columns'] or 'none'}.")
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
