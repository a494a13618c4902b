"""The CLV model as an MLflow pyfunc, persisted as explicit JSON parameters and rebuilt from them.

Fitted lifetimes models do not pickle (``fit`` attaches a lambda) and restoring only ``params_``
breaks Gamma-Gamma's CLV, so the model is its parameters (``clv_parameters.json``, floats written
with Python's round-tripping repr) and :func:`training.clv.predict.predict_clv` computes everything
from them: loading it back predicts exactly what the in-memory model did.

Format 2 stores the purchase model's kind (``"model": "bgnbd" | "mbgnbd" | "pnbd"``) and its parameters
(``"purchases"``), the segment rule with its basis (P(alive) or recency) and the training's
``warnings``. Format 1 (models registered before there was a choice) has ``"bgnbd"``: it loads as BG/NBD
with the segment rule it was trained with (``SegmentRule.version = 1``), so it scores exactly as it did.

Input (one row per customer, RFM in days): ``customer_id`` (string, optional), ``frequency``
(integer: repeat purchase days), ``recency_days`` (first to last purchase), ``age_days`` (first purchase to
now, T), ``monetary_value`` (mean repeat order value). Output: ``customer_id`` (when given),
``expected_purchases``, ``p_alive``, ``expected_order_value``, ``clv``, ``segment``. Predict params:
``horizon_days`` (default the model's, 365) and ``discount_rate`` (annual, default 0.1).

The value of a new customer per acquisition channel (for value-weighted lead scores):
``model.unwrap_python_model().new_customer_value(channel)`` on a loaded pyfunc, or the
``new_customer_value`` entry of the MLflow model metadata (``model.metadata.metadata``). The model's
warnings (say them wherever it scores): ``model.unwrap_python_model().params.warnings``, or the
``warnings`` entry of the metadata (with ``clv_model`` and ``segments_by``).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from features.errors import InvalidInput
from features.json_ready import json_ready
from training.clv.fit import GammaGammaParameters
from training.clv.predict import CLVParameters, SegmentRule, new_customer_value, predict_clv
from training.clv.purchases import BgNbdParameters, parameters_from_values
from training.registry import TAG_LIMIT
from training.tracking import RunNotReadable, model_requirements, read_run_tags

PARAMETERS_FILE = "clv_parameters.json"
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
INPUT_EXAMPLE = pd.DataFrame({
    "customer_id": ["c1", "c2"],
    "frequency": [0, 3],
    "recency_days": [0.0, 120.0],
    "age_days": [30.0, 400.0],
    "monetary_value": [0.0, 42.5],
})


def parameters_to_dict(params: CLVParameters) -> dict[str, Any]:
    """The parameters as plain JSON-ready values (NaN written as null), in the current format."""
    values = asdict(params)
    values["model"] = params.model
    values["format_version"] = FORMAT_VERSION
    return json_ready(values)


def _number(value: float | None) -> float:
    return float("nan") if value is None else value


def parameters_from_dict(values: dict[str, Any]) -> CLVParameters:
    """Rebuild :class:`CLVParameters` from :func:`parameters_to_dict`'s output (format 2, or format 1 as BG/NBD)."""
    version = values.get("format_version")
    if version not in READABLE_FORMATS:
        raise InvalidInput(f"CLV parameters: format_version {version!r} is not one of {READABLE_FORMATS}")
    gamma_gamma = values["gamma_gamma"]
    rule = dict(values["segment_rule"])
    if version == 1:
        purchases = BgNbdParameters(**values["bgnbd"])
        rule["version"] = 1
    else:
        purchases = parameters_from_values(values["model"], values["purchases"])
        rule.update({k: float("inf") if rule.get(k) is None else rule[k]
                     for k in ("recency_at_risk_days", "recency_lost_days")})
    return CLVParameters(
        time_unit=values["time_unit"],
        purchases=purchases,
        gamma_gamma=GammaGammaParameters(**gamma_gamma) if gamma_gamma is not None else None,
        horizon_days=values["horizon_days"],
        discount_rate=values["discount_rate"],
        segment_rule=SegmentRule(**rule),
        new_customer_value_overall=_number(values["new_customer_value_overall"]),
        new_customer_value_by_channel={k: _number(v) for k, v in values["new_customer_value_by_channel"].items()},
        warnings=tuple(values.get("warnings") or ()),
    )


def save_parameters(params: CLVParameters, path: Path) -> Path:
    """Write the parameters as JSON to ``path``."""
    path.write_text(json.dumps(parameters_to_dict(params), indent=2, sort_keys=True))
    return path


def load_parameters(path: Path) -> CLVParameters:
    """Read parameters written by :func:`save_parameters`."""
    return parameters_from_dict(json.loads(Path(path).read_text()))


class CLVModel(mlflow.pyfunc.PythonModel):
    """BG/NBD, MBG/NBD or Pareto/NBD + Gamma-Gamma CLV as a pyfunc: RFM rows in days in, per-customer CLV
    outputs out."""

    def __init__(self, params: CLVParameters | None = None) -> None:
        self.params = params

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.params = load_parameters(Path(context.artifacts["parameters"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        given = params or {}
        return predict_clv(self.params, model_input, given.get("horizon_days"), given.get("discount_rate"))

    def new_customer_value(self, channel: str | None = None) -> float:
        """Predicted CLV (model horizon) of a new customer from ``channel``; the overall mean if unknown."""
        return new_customer_value(self.params, channel)

    def new_customer_values(self) -> dict[str, Any]:
        """``{"overall": float, "by_channel": {channel: float}}``."""
        return {"overall": self.params.new_customer_value_overall,
                "by_channel": dict(self.params.new_customer_value_by_channel)}


MODEL_KEY, SEGMENTS_KEY = "clv_model", "segments_by"
"""The purchase model's kind and the segment basis: under these names in the MLmodel metadata and as run tags."""
RULE_TAG, WARNINGS_TAG = "segment_rule_version", "model_warnings"
"""Run tags: the segment rule's version (:class:`training.clv.predict.SegmentRule`) and the model's warnings
(JSON). Runs of models saved before format 2 have none of these tags: BG/NBD, version-1 segments by P(alive),
warnings not recorded."""


def run_tags(params: CLVParameters) -> dict[str, str]:
    """The tags a training run records about its model (read back by :func:`recorded_notes`)."""
    return {MODEL_KEY: params.model, SEGMENTS_KEY: params.segment_rule.basis,
            RULE_TAG: str(params.segment_rule.version), WARNINGS_TAG: json.dumps(list(params.warnings))[:TAG_LIMIT]}


def recorded_notes(run_id: str, tracking_uri: str) -> dict[str, Any]:
    """What the training run ``run_id`` recorded about its CLV model: ``model``, ``segments_by``,
    ``segment_rule_version`` and ``warnings``; ``{"error": why}`` when the run cannot be read (a missing local
    store is never created).

    A run from before format 2 has no such tags: its model is BG/NBD with the version-1 segment rule (by
    P(alive)), and its warnings are unknown: ``warnings`` is None and ``warnings_unknown`` says why.
    """
    try:
        tags = read_run_tags(run_id, tracking_uri)
    except RunNotReadable as exc:
        return {"error": str(exc)}
    if WARNINGS_TAG not in tags:
        return {"model": "bgnbd", "segments_by": "p_alive", "segment_rule_version": 1, "warnings": None,
                "warnings_unknown": "the model was trained before training runs recorded warnings"}
    try:
        warnings = json.loads(tags[WARNINGS_TAG])
    except ValueError:  # cut at the tag limit
        warnings = [tags[WARNINGS_TAG]]
    return {"model": tags.get(MODEL_KEY), "segments_by": tags.get(SEGMENTS_KEY),
            "segment_rule_version": int(tags.get(RULE_TAG, SegmentRule.version)), "warnings": warnings}


def model_signature(params: CLVParameters) -> ModelSignature:
    """Inputs, outputs and predict params (``horizon_days``, ``discount_rate``) of the pyfunc."""
    inputs = Schema([
        ColSpec("string", "customer_id", required=False),
        ColSpec("long", "frequency"),
        ColSpec("double", "recency_days"),
        ColSpec("double", "age_days"),
        ColSpec("double", "monetary_value"),
    ])
    outputs = Schema([
        ColSpec("string", "customer_id", required=False),
        ColSpec("double", "expected_purchases"),
        ColSpec("double", "p_alive"),
        ColSpec("double", "expected_order_value"),
        ColSpec("double", "clv"),
        ColSpec("string", "segment"),
    ])
    predict_params = ParamSchema([
        ParamSpec("horizon_days", "double", float(params.horizon_days)),
        ParamSpec("discount_rate", "double", float(params.discount_rate)),
    ])
    return ModelSignature(inputs=inputs, outputs=outputs, params=predict_params)


def log_clv_model(params: CLVParameters, workdir: Path, name: str = "model") -> str:
    """Log the pyfunc to the active run; returns its model URI."""
    parameters_path = save_parameters(params, Path(workdir) / PARAMETERS_FILE)
    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=CLVModel(),
        artifacts={"parameters": str(parameters_path)},
        signature=model_signature(params),
        input_example=INPUT_EXAMPLE,
        pip_requirements=model_requirements(),
        metadata={
            "time_unit": params.time_unit,
            "horizon_days": params.horizon_days,
            "discount_rate": params.discount_rate,
            "new_customer_value": json_ready({
                "overall": params.new_customer_value_overall,
                "by_channel": dict(params.new_customer_value_by_channel),
            }),
            MODEL_KEY: params.model,
            SEGMENTS_KEY: params.segment_rule.basis,
            "warnings": list(params.warnings),
        },
    )
    return info.model_uri
