"""Backtests of the lead model: how its scores and bands did on the leads open at past dates.

At each as-of date whose horizon has fully passed (``as_of + horizon_days`` at or before the CRM's last event), the
leads open then (created by it, not converted by it) are scored from what was known then and compared with what
happened: converted within ``horizon_days`` after it, or not. Per as-of date: leads, conversions, base rate, ROC
AUC, PR AUC and lift at the top 10%; per band: leads, predicted rate (mean calibrated probability) and actual rate
(share converted). Pooled over the dates per band, this is the honest "conversion by band".

The scores come from one of two kinds of model (``model``):

* ``retrain`` (default): at each date, a model trained by the champion's recipe (its training config: the stacked
  monthly snapshots of :func:`training.leads.data.splits.crm_splits`, fitted by
  :func:`training.leads.fit.fit_lead_model`
  on the training and validation snapshots, the test snapshots left out as training leaves them out) on the CRM
  as it was at that date: every label window it learns from ends by the date (``trained_to``), so it knows nothing
  that happened after it;
* ``current``: the champion itself. It was trained on data that overlaps the backtest period, so its figures are
  optimistic; the result says so in ``warnings``.

Pure on frames: :func:`backtest_as_of_dates`, :func:`retrained_scorer`, :func:`score_as_of` and
:func:`run_backtest`. The edges: :func:`champion_recipe` (MLflow: the champion's run's ``config.json``),
:func:`store_backtest` and :func:`latest_backtest` (the ``lead_backtests`` and ``lead_backtest_bands`` tables, one
transaction, a rerun of the same backtest replacing its rows). Nothing is registered or logged in MLflow.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score
from sqlalchemy import Engine, select

from features.crm import schema
from features.crm.store import create_schema, insert_frame, missing_tables, read_frame
from features.errors import InvalidInput
from features.json_ready import json_ready
from features.kpi.predictive import backtest_calibration
from features.lead_features import BEHAVIOUR_FEATURES, PROFILE_FEATURES, lead_feature_arrays
from features.lead_labels import LABEL_COLUMN, conversion_labels, open_leads, snapshot_plan, training_snapshots
from training.leads.data.splits import CrmTrainingConfig
from training.leads.evaluation import lift_and_capture
from training.leads.fit import LeadModelConfig, fit_lead_model
from training.leads.reasons import crm_wording
from training.leads.scorer import LeadScorer
from training.leads.spec import FeatureSpec
from training.registry import LEAD_MODEL_URI

MODELS = schema.BACKTEST_MODELS
DEFAULT_AS_OFS = 6
DEFAULT_EVERY_DAYS = 30
BAND_COLUMNS = ("as_of", "band", "leads", "conversions", "predicted_rate", "actual_rate")
METRIC_COLUMNS = ("as_of", "leads", "conversions", "base_rate", "mean_probability", "roc_auc", "pr_auc",
                  "lift_top10", "trained_to")
OPTIMISTIC = ("--model current scores the past with the champion, which was trained on data{until} that overlaps "
              "the backtest period: its figures are optimistic; the default (--model retrain) is the honest one")


@dataclass(frozen=True)
class Recipe:
    """How the backtest's models are made: a CRM training config, and where it came from (``source``)."""

    config: CrmTrainingConfig
    source: str
    model_uri: str | None = None
    model_version: str | None = None
    run_id: str | None = None
    trained_to: pd.Timestamp | None = None
    """The champion's training cutoff (nothing after it was read), when its run records one."""
    warning: str | None = None
    """What to know about a recipe that is not the champion's logged one."""

    def summary(self) -> dict[str, Any]:
        """The JSON-ready recipe (``--json`` ``recipe``, the ``lead_backtests.recipe`` column)."""
        config = {k: v for k, v in asdict(self.config).items() if k != "as_of"}
        return json_ready({"source": self.source, "model_uri": self.model_uri, "model_version": self.model_version,
                           "run_id": self.run_id, "config": config})


@dataclass(frozen=True)
class AsOfResult:
    """One as-of date's figures (:data:`METRIC_COLUMNS` as ``metrics``) and its per-band rows (``bands``)."""

    metrics: dict[str, Any]
    bands: pd.DataFrame


@dataclass(frozen=True)
class Backtest:
    """A finished backtest: per as-of metrics, per as-of and band rows, and what to know about them."""

    backtest_id: str
    model: str
    recipe: Recipe
    horizon_days: int
    every_days: int
    metrics: pd.DataFrame
    bands: pd.DataFrame
    warnings: tuple[str, ...]
    created_at: datetime
    seconds: float = 0.0

    @property
    def pooled(self) -> pd.DataFrame:
        """Per band, pooled over the as-of dates (:func:`features.kpi.predictive.backtest_calibration`)."""
        return backtest_calibration(self.bands)

    def summary(self) -> dict[str, Any]:
        """The JSON-ready result (``--json``): ``bands`` is one ``{band, leads, predicted_rate, actual_rate, as_of}``
        per as-of date and band."""
        bands = [{k: row[k] for k in ("band", "leads", "predicted_rate", "actual_rate", "as_of")}
                 for row in self.bands.to_dict("records")]
        return json_ready({
            "backtest_id": self.backtest_id, "model": self.model, "recipe": self.recipe.summary(),
            "horizon_days": self.horizon_days, "every_days": self.every_days, "created_at": self.created_at,
            "as_ofs": self.metrics.to_dict("records"), "bands": bands,
            "pooled": self.pooled.to_dict("records"), "warnings": list(self.warnings),
            "seconds": round(self.seconds, 2),
        })


def parse_every(text: str) -> int:
    """Days between as-of dates from ``30d``, ``4w`` or ``30``; anything else is an ``InvalidInput``."""
    found = re.fullmatch(r"\s*(\d+)\s*([dw]?)\s*", str(text).lower())
    days = int(found.group(1)) * (7 if found.group(2) == "w" else 1) if found else 0
    if days < 1:
        raise InvalidInput(f"--every {text!r}: expected a positive number of days such as 30d (or weeks: 4w)")
    return days


def backtest_as_of_dates(
    data_start: pd.Timestamp,
    data_end: pd.Timestamp,
    horizon_days: int,
    first: pd.Timestamp | None = None,
    last: pd.Timestamp | None = None,
    every_days: int = DEFAULT_EVERY_DAYS,
    count: int = DEFAULT_AS_OFS,
) -> tuple[pd.Timestamp, ...]:
    """The as-of dates, oldest first: from ``last`` back every ``every_days`` to ``first`` (without ``first``: the
    ``count`` latest).

    ``last`` defaults to the latest midnight whose horizon has fully passed (``+ horizon_days`` at or before
    ``data_end``); a later ``last``, or a ``first`` after it, is an ``InvalidInput`` naming that date.
    """
    horizon = pd.Timedelta(days=horizon_days)
    latest = (data_end - horizon).normalize()
    if latest <= data_start:
        raise InvalidInput(f"history: the CRM covers {data_start:%Y-%m-%d} to {data_end:%Y-%m-%d}; no as-of date "
                           f"after its start has its whole {horizon_days}-day horizon in it")
    if last is not None and last + horizon > data_end:
        raise InvalidInput(f"--to {last:%Y-%m-%d}: its {horizon_days}-day horizon ends after the CRM's last event "
                           f"({data_end:%Y-%m-%d %H:%M}); the latest as-of whose outcomes are all known is "
                           f"{latest:%Y-%m-%d}")
    end = latest if last is None else last
    if first is not None and first > end:
        raise InvalidInput(f"--from {first:%Y-%m-%d} is after the last as-of date {end:%Y-%m-%d}")
    step = pd.Timedelta(days=every_days)
    dates = []
    at = end
    while (first is None and len(dates) < count) or (first is not None and at >= first):
        if at <= data_start:
            break
        dates.append(at)
        at -= step
    if not dates:
        raise InvalidInput(f"--from {first:%Y-%m-%d} --to {end:%Y-%m-%d}: no as-of date in it after the CRM's start "
                           f"({data_start:%Y-%m-%d})")
    return tuple(reversed(dates))


class SnapshotCache:
    """Training snapshots by date, computed once from the whole CRM and shared by the retrains of a backtest.

    A snapshot at ``s`` is the same whatever the cutoff, as long as its label window ends by the cutoff
    (``s + horizon <= cutoff``): its features read nothing after ``s`` and its labels nothing after ``s + horizon``.
    :meth:`frame` refuses any other.
    """

    def __init__(self, leads: pd.DataFrame, activities: pd.DataFrame, horizon_days: int) -> None:
        self.leads, self.activities, self.horizon_days = leads, activities, horizon_days
        self._frames: dict[pd.Timestamp, pd.DataFrame] = {}

    def frame(self, dates: Sequence[pd.Timestamp], cutoff: pd.Timestamp) -> pd.DataFrame:
        """The stacked snapshots of ``dates`` (all with label windows ending by ``cutoff``)."""
        late = [d for d in dates if d + pd.Timedelta(days=self.horizon_days) > cutoff]
        if late:
            raise ValueError(f"snapshots {late} have label windows ending after the cutoff {cutoff}")
        for at in dates:
            if at not in self._frames:
                self._frames[at] = training_snapshots(self.leads, self.activities, [at], self.horizon_days)
        return pd.concat([self._frames[at] for at in dates], ignore_index=True)


def retrained_scorer(
    snapshots: SnapshotCache, data_start: pd.Timestamp, as_of: pd.Timestamp, config: CrmTrainingConfig
) -> tuple[LeadScorer, pd.Timestamp]:
    """A model trained by ``config``'s recipe on the CRM as it was at ``as_of``, and its last label window's end.

    The same snapshots as :func:`training.leads.data.splits.crm_splits` with ``as_of`` as the cutoff, and the same
    fit as
    training; the test snapshots are left out, as training leaves them out of the fit.
    """
    plan = snapshot_plan(data_start, as_of, config.horizon_days, config.snapshot_every_days,
                         config.valid_snapshots, config.test_snapshots, config.max_train_snapshots)
    train, valid = snapshots.frame(plan.train, as_of), snapshots.frame(plan.valid, as_of)
    spec = FeatureSpec.learn(train, "lead_id", PROFILE_FEATURES, BEHAVIOUR_FEATURES)
    scorer = fit_lead_model(train, valid, spec, crm_wording(spec.features), config.model, LABEL_COLUMN,
                            config.horizon_days)
    return scorer, plan.valid[-1] + pd.Timedelta(days=config.horizon_days)


def score_as_of(
    scorer: LeadScorer, leads: pd.DataFrame, activities: pd.DataFrame, as_of: pd.Timestamp, horizon_days: int,
) -> AsOfResult:
    """Score the leads open at ``as_of`` from what was known then, against conversions within the horizon."""
    features = lead_feature_arrays(open_leads(leads, as_of), activities, as_of)
    scores = scorer.predict_features(features, reasons=False)
    labels = conversion_labels(leads, as_of, horizon_days).set_index("lead_id")[LABEL_COLUMN]
    converted = labels.reindex(pd.Index(features.lead_ids).astype("str")).to_numpy(dtype="float64")
    probability = np.asarray(scores.probability, dtype="float64")
    return AsOfResult(as_of_metrics(as_of, converted, probability), band_rates(as_of, scores.band, probability,
                                                                                 converted))


def as_of_metrics(as_of: pd.Timestamp, converted: np.ndarray, probability: np.ndarray) -> dict[str, Any]:
    """Leads, conversions, base rate, mean probability, ROC AUC and PR AUC (None without both outcomes), lift."""
    both = np.unique(converted).size == 2
    return {
        "as_of": as_of, "leads": len(converted), "conversions": int(converted.sum()),
        "base_rate": float(converted.mean()) if len(converted) else None,
        "mean_probability": float(probability.mean()) if len(probability) else None,
        "roc_auc": float(roc_auc_score(converted, probability)) if both else None,
        "pr_auc": float(average_precision_score(converted, probability)) if both else None,
        "lift_top10": lift_and_capture(converted, probability, 0.10)[0] if len(converted) else None,
    }


def band_rates(as_of: pd.Timestamp, band: np.ndarray, probability: np.ndarray, converted: np.ndarray) -> pd.DataFrame:
    """Per band (all of A-D, empty ones too): leads, conversions, mean probability and share converted."""
    frame = pd.DataFrame({"band": np.asarray(band, dtype=object), "p": probability, "y": converted})
    grouped = frame.groupby("band").agg(leads=("y", "size"), conversions=("y", "sum"), predicted_rate=("p", "mean"),
                                        actual_rate=("y", "mean")).reindex(list(schema.SCORE_BANDS))
    grouped[["leads", "conversions"]] = grouped[["leads", "conversions"]].fillna(0).astype("int64")
    grouped.index.name = "band"
    return grouped.reset_index().assign(as_of=as_of)[list(BAND_COLUMNS)]


def backtest_id(model: str, recipe: Recipe, as_ofs: Sequence[pd.Timestamp]) -> str:
    """The same work gets the same id: the model kind, the recipe (and for ``current`` the champion), the dates."""
    work = {"model": model, "recipe": recipe.summary()["config"], "as_ofs": [d.isoformat() for d in as_ofs],
            "champion": recipe.model_version if model == "current" else None}
    return "bt-" + hashlib.sha256(json.dumps(work, sort_keys=True).encode()).hexdigest()[:16]


def run_backtest(
    leads: pd.DataFrame,
    activities: pd.DataFrame,
    data_start: pd.Timestamp,
    as_ofs: Sequence[pd.Timestamp],
    recipe: Recipe,
    model: str = "retrain",
    champion: LeadScorer | None = None,
    every_days: int = DEFAULT_EVERY_DAYS,
    progress: Callable[[], None] | None = None,
) -> Backtest:
    """Backtest at each of ``as_ofs`` with retrained models (``retrain``) or ``champion`` (``current``).

    ``leads`` and ``activities`` are the whole CRM (:func:`features.lead_history.load_crm_frames` without a
    cutoff): each date reads only what it may. A date whose retrain lacks data is left out with a warning;
    none left is an ``InvalidInput``.
    """
    if model not in MODELS:
        raise InvalidInput(f"--model {model!r}: expected {' or '.join(MODELS)}")
    if model == "current" and champion is None:
        raise InvalidInput("--model current needs the champion model")
    horizon = recipe.config.horizon_days
    warnings: list[str] = [recipe.warning] if recipe.warning else []
    if model == "current":
        until = f" up to {recipe.trained_to:%Y-%m-%d}" if recipe.trained_to is not None else ""
        warnings.append(OPTIMISTIC.format(until=until))
    snapshots = SnapshotCache(leads, activities, horizon)
    done: list[AsOfResult] = []
    for as_of in as_ofs:
        trained_to = None
        scorer = champion
        if model == "retrain":
            try:
                scorer, trained_to = retrained_scorer(snapshots, data_start, as_of, replace(
                    recipe.config, as_of=as_of.isoformat()))
            except InvalidInput as exc:
                warnings.append(f"as-of {as_of:%Y-%m-%d} left out: no model could be trained on the data before "
                                f"it ({exc})")
        if scorer is not None:
            result = score_as_of(scorer, leads, activities, as_of, horizon)
            result.metrics["trained_to"] = trained_to
            done.append(result)
            if result.metrics["roc_auc"] is None:
                warnings.append(f"as-of {as_of:%Y-%m-%d}: {result.metrics['leads']} open leads and "
                                f"{result.metrics['conversions']} conversions, so no ROC or PR AUC")
        if progress is not None:
            progress()
    if not done:
        raise InvalidInput("backtest: no as-of date could be backtested; " + "; ".join(warnings))
    metrics = pd.DataFrame([r.metrics for r in done], columns=list(METRIC_COLUMNS))
    bands = pd.concat([r.bands for r in done], ignore_index=True)
    thin = bands[(bands["leads"] > 0) & (bands["leads"] < 30)]
    if len(thin):
        warnings.append(f"{len(thin)} band(s) at single as-of dates have fewer than 30 leads; read the per-date "
                        "rates with care (the pooled rates are steadier)")
    kept = tuple(pd.Timestamp(d) for d in metrics["as_of"])
    return Backtest(backtest_id(model, recipe, kept), model, recipe, horizon, every_days, metrics, bands,
                    tuple(warnings), datetime.now(UTC).replace(tzinfo=None, microsecond=0))


def champion_recipe(model_uri: str = LEAD_MODEL_URI, load_model: bool = False) -> tuple[Recipe, LeadScorer | None]:
    """The champion's training recipe and, with ``load_model``, the champion itself (needs MLflow configured).

    The recipe is the ``config.json`` its training run logged; when that cannot be read, the defaults with the
    champion's horizon; without a champion (and without ``load_model``), the defaults. ``Recipe.source`` says which.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from training.leads.pyfunc import scorer_of
    from training.registry import ModelNotFound, load_registered, registered_identity

    try:
        _, version, run_id = registered_identity(model_uri)
    except ModelNotFound:
        if load_model:
            raise
        return Recipe(CrmTrainingConfig(), f"the default training config (no model at {model_uri})",
                      warning=f"no champion at {model_uri}: the models are retrained with the default training "
                              "config, which may not be the recipe of the model you use"), None
    scorer = scorer_of(load_registered(model_uri)) if load_model else None
    found: dict[str, Any] = {"model_uri": model_uri, "model_version": version, "run_id": run_id}
    try:
        logged = mlflow.artifacts.load_dict(f"runs:/{run_id}/config.json")
    except (MlflowException, OSError, ValueError):
        logged = None
    try:
        source = mlflow.artifacts.load_dict(f"runs:/{run_id}/data_source.json")
        found["trained_to"] = pd.Timestamp(source["cutoff"]) if source.get("cutoff") else None
    except (MlflowException, OSError, ValueError, KeyError):
        pass
    if logged is not None:
        return Recipe(recipe_config(logged, model_uri), f"config.json of the champion's training run {run_id}",
                      **found), scorer
    scorer = scorer or scorer_of(load_registered(model_uri))
    if scorer.horizon_days is None:
        raise InvalidInput(f"model {model_uri}: it was trained on a flat file, not on CRM leads; a backtest needs "
                           "a CRM model (leadval train leads --db URL)")
    source = (f"the default training config with the champion's {scorer.horizon_days}-day horizon (its run {run_id} "
              "has no readable config.json)")
    return Recipe(CrmTrainingConfig(horizon_days=scorer.horizon_days), source, **found,
                  warning=f"recipe: {source}; other settings of its training are not known"), scorer


def recipe_config(logged: dict[str, Any], model_uri: str = LEAD_MODEL_URI) -> CrmTrainingConfig:
    """A CRM training config from a run's logged ``config.json``; keys it does not know are ignored, missing
    ones take their defaults. A flat-file config is an ``InvalidInput``."""
    if "target" in logged or "path" in logged:
        raise InvalidInput(f"model {model_uri}: it was trained on a flat file ({logged.get('path')}), not on CRM "
                           "leads; a backtest needs a CRM model (leadval train leads --db URL)")
    model = {k: v for k, v in (logged.get("model") or {}).items() if k in {f.name for f in fields(LeadModelConfig)}}
    if "band_shares" in model:
        model["band_shares"] = tuple(model["band_shares"])
    known = {f.name for f in fields(CrmTrainingConfig)} - {"model", "as_of"}
    return CrmTrainingConfig(**{k: v for k, v in logged.items() if k in known}, model=LeadModelConfig(**model))


def store_backtest(engine: Engine, backtest: Backtest) -> int:
    """Write the backtest into ``lead_backtests`` and ``lead_backtest_bands`` in one transaction, replacing the
    rows of an earlier run of the same backtest; returns the rows written."""
    create_schema(engine)
    runs_t, bands_t = schema.lead_backtests, schema.lead_backtest_bands
    runs = backtest.metrics.assign(
        backtest_id=backtest.backtest_id, model=backtest.model, model_version=backtest.recipe.model_version,
        recipe=[backtest.recipe.summary()] * len(backtest.metrics), horizon_days=backtest.horizon_days,
        created_at=backtest.created_at)
    runs["trained_to"] = pd.to_datetime(runs["trained_to"])
    bands = backtest.bands.assign(backtest_id=backtest.backtest_id)
    with engine.begin() as conn:
        conn.execute(bands_t.delete().where(bands_t.c.backtest_id == backtest.backtest_id))
        conn.execute(runs_t.delete().where(runs_t.c.backtest_id == backtest.backtest_id))
        return insert_frame(conn, runs_t, runs) + insert_frame(conn, bands_t, bands)


def latest_backtest(engine: Engine) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The latest stored backtest (by ``created_at``): its ``lead_backtests`` and ``lead_backtest_bands`` rows,
    oldest as-of first; None when there is none (or the tables do not exist yet)."""
    runs_t, bands_t = schema.lead_backtests, schema.lead_backtest_bands
    if {runs_t.name, bands_t.name} & set(missing_tables(engine)):
        return None
    with engine.connect() as conn:
        latest = conn.execute(select(runs_t.c.backtest_id)
                              .order_by(runs_t.c.created_at.desc(), runs_t.c.backtest_id.desc()).limit(1)).scalar()
    if latest is None:
        return None
    runs = read_frame(engine, runs_t, where=runs_t.c.backtest_id == latest).sort_values("as_of", ignore_index=True)
    bands = read_frame(engine, bands_t, where=bands_t.c.backtest_id == latest)
    order = {band: i for i, band in enumerate(schema.SCORE_BANDS)}
    bands = bands.sort_values(["as_of", "band"], key=lambda c: c.map(order) if c.name == "band" else c,
                              ignore_index=True)
    return runs, bands
