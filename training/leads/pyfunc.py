"""The lead-scoring model as one MLflow pyfunc, and the one scoring path everything calls.

Scoring path: :func:`score_leads` (CRM leads + activities as of a date) and :func:`score_rows` (rows
that already hold the features: :func:`features.lead_features.lead_features` output, or a flat file's
rows). The API, the nightly batch job, the notebook and the pyfunc's ``predict`` all end in
:meth:`training.leads.scorer.LeadScorer.predict`, so they give identical scores.

Pyfunc input: one row per lead with the id column (``lead_id`` for CRM models; a flat file model's
``--id-col``, or none) and every feature column: categoricals as strings, numbers as doubles, missing
values allowed, unseen categories scored as missing. Output: the id column (``row`` = 1-based input
row number for models without one), ``score`` (int 1-99: the percentile of the probability among the
model's validation leads, see :class:`training.leads.scorer.ScoreScale`; models saved in scorer format 1
give probability x 100, 0-100), ``probability`` (calibrated), ``band`` (A-D, score ranges: by default
A = 91-99 = the top 10% of validation leads), ``reasons`` (JSON string ``{"up": [...], "down": [...]}``,
see :mod:`training.leads.reasons`).
Predict param ``reasons`` (default true): false skips the reason codes (null), which is much faster.

The stock ``mlflow.lightgbm`` flavour is not used: its signature records category columns as strings
and then rejects them. This model records strings and casts them to the training categories itself.
Loading it needs the ``leadval`` package importable (the pyfunc's class lives here).
"""

from __future__ import annotations

import tempfile
from datetime import date, datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from features.errors import InvalidInput
from features.lead_features import lead_feature_arrays
from training.leads.scorer import LeadScorer
from training.tracking import model_requirements

ARTIFACT_NAME = "lead_model"
SCORER_ARTIFACT = "scorer"


class LeadScoringModel(mlflow.pyfunc.PythonModel):
    """The pyfunc: loads the :class:`~training.leads.scorer.LeadScorer` saved with it and scores input rows."""

    def __init__(self) -> None:
        self.scorer: LeadScorer | None = None

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.scorer = LeadScorer.load(Path(context.artifacts[SCORER_ARTIFACT]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:  # noqa: ANN001
        """Score ``model_input`` rows; ``params={"reasons": False}`` skips the reason codes."""
        reasons = True if params is None else bool(params.get("reasons", True))
        return self.scorer.predict(pd.DataFrame(model_input), reasons=reasons)


def scorer_of(model: LeadScorer | LeadScoringModel | mlflow.pyfunc.PyFuncModel) -> LeadScorer:
    """The scorer inside an in-memory scorer, a pyfunc model, or a loaded ``PyFuncModel``."""
    if isinstance(model, LeadScorer):
        return model
    if isinstance(model, mlflow.pyfunc.PyFuncModel):
        model = model.unwrap_python_model()
    if isinstance(model, LeadScoringModel) and model.scorer is not None:
        return model.scorer
    raise InvalidInput(f"model: expected a lead-scoring model, got {type(model).__name__}")


def score_rows(model: LeadScorer | LeadScoringModel | mlflow.pyfunc.PyFuncModel, rows: pd.DataFrame,
               reasons: bool = True) -> pd.DataFrame:
    """Scores of rows that hold the model's feature columns (see the module docstring for the columns)."""
    return scorer_of(model).predict(rows, reasons=reasons)


def score_leads(
    model: LeadScorer | LeadScoringModel | mlflow.pyfunc.PyFuncModel,
    leads: pd.DataFrame,
    activities: pd.DataFrame,
    as_of: str | date | datetime | pd.Timestamp,
    reasons: bool = True,
) -> pd.DataFrame:
    """Score CRM leads as of ``as_of``: ``lead_id, score, probability, band, reasons``, one row per lead.

    Features come from :func:`features.lead_features.lead_feature_arrays`: leads created after ``as_of`` are
    left out and activities after it ignored. The model must have been trained on CRM leads.
    """
    features = lead_feature_arrays(leads, activities, as_of)
    return scorer_of(model).predict_features(features, reasons=reasons).frame("lead_id", features.lead_ids)


def model_signature(scorer: LeadScorer, id_dtype: str = "string") -> ModelSignature:
    """Input: id (``id_dtype``), categoricals as strings, numerics as doubles. Output: the score columns
    (``score`` a long 1-99, see the module docstring)."""
    spec = scorer.spec
    inputs = [ColSpec(id_dtype, spec.id_column)] if spec.id_column else []
    inputs += [ColSpec("string", c) for c in spec.categorical] + [ColSpec("double", c) for c in spec.numeric]
    id_out = spec.id_column or "row"
    outputs = [ColSpec(id_dtype if spec.id_column else "long", id_out), ColSpec("long", "score"),
               ColSpec("double", "probability"), ColSpec("string", "band"), ColSpec("string", "reasons")]
    return ModelSignature(Schema(inputs), Schema(outputs), ParamSchema([ParamSpec("reasons", "boolean", True)]))


def input_example(scorer: LeadScorer, id_dtype: str = "string") -> pd.DataFrame:
    """Two made-up rows (no real lead's data in the artifact): typical values, then everything missing."""
    spec = scorer.spec
    columns: dict[str, list[Any]] = {}
    if spec.id_column:
        columns[spec.id_column] = ["example-1", "example-2"] if id_dtype == "string" else [1, 2]
    for name, categories in zip(spec.categorical, spec.categories):
        columns[name] = [categories[0] if categories else None, None]
    for name in spec.numeric:
        columns[name] = [0.0, np.nan]
    return pd.DataFrame(columns).astype({c: object for c in spec.categorical})


def log_lead_model(scorer: LeadScorer, id_dtype: str = "string", metadata: dict | None = None) -> ModelInfo:
    """Log ``scorer`` as the pyfunc in the active run (artifact ``lead_model``); returns its ModelInfo."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / SCORER_ARTIFACT
        scorer.save(folder)
        return mlflow.pyfunc.log_model(
            name=ARTIFACT_NAME,
            python_model=LeadScoringModel(),
            artifacts={SCORER_ARTIFACT: str(folder)},
            signature=model_signature(scorer, id_dtype),
            input_example=input_example(scorer, id_dtype),
            pip_requirements=model_requirements(),
            metadata={"id_column": scorer.spec.id_column, "horizon_days": scorer.horizon_days,
                      "scorer_format": scorer.format_version, "score": _score_meaning(scorer),
                      "band_thresholds": list(scorer.band_thresholds),
                      **({"band_scores": list(scorer.scale.band_scores)} if scorer.scale else {}),
                      **({"data_end": scorer.info["data_end"]} if "data_end" in scorer.info else {}),
                      **(metadata or {})},
        )


def _score_meaning(scorer: LeadScorer) -> str:
    """What ``score`` is, in words (the pyfunc's metadata)."""
    if scorer.scale is None:
        return "int 0-100: calibrated probability x 100"
    return ("int 1-99: percentile of the calibrated probability among the model's validation leads; "
            + ", ".join(f"{band} = {low}-{high}" for band, low, high, _ in scorer.scale.band_ranges()))
