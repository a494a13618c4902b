"""Training the lead-scoring model: LightGBM with native categoricals, calibrated and banded, and its baseline.

:func:`fit_lead_model` trains a binary LightGBM booster on the training split with early stopping on
the (later) validation split, weighting converters up for class imbalance; then fits the calibration
(Platt or isotonic, on the validation split's raw margins) and keeps the validation split's calibrated
probabilities as the reference leads of the score (:class:`~training.leads.scorer.ScoreScale`: score =
their percentile, 1-99; bands A-D = score ranges holding ``band_shares`` of them, e.g. A = 91-99 = the
top 10%). :func:`fit_baseline` is the logistic regression it is compared with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from features.errors import InvalidInput
from training.leads.reasons import FeatureWording
from training.leads.scorer import Calibrator, LeadScorer, ScoreScale
from training.leads.spec import FeatureSpec


@dataclass(frozen=True)
class LeadModelConfig:
    """Hyperparameters of the booster, the imbalance handling, the calibration and the bands.

    ``imbalance``: ``sqrt`` weights converters by sqrt(negatives/positives), ``balanced`` by the full
    ratio, ``none`` not at all (calibration undoes the weighting's effect on probabilities).
    ``band_shares``: shares of validation leads in bands A, B and C (D is the rest), best first, in whole
    percents (rounded; bands are score ranges and a score is a percentile): A at least 2% (score 99 holds
    the top 2%), B and C at least 1%, D at least 1%. The default: A = top 10%, B = next 20%, C = next 30%.
    Shallow trees by default: on CRM-sized data they generalise as well as deeper ones, and reason codes
    come from exact SHAP tables only for trees of at most 10 splits (:mod:`training.leads.tree_shap`).
    ``num_threads`` 1 by default: on a shared 2-core machine OpenMP threads competing with other work
    made training 7-10x slower; 0 uses every core.
    """

    learning_rate: float = 0.05
    num_leaves: int = 8
    max_depth: int = 3
    min_child_samples: int = 100
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambda_l2: float = 10.0
    max_cat_to_onehot: int = 32
    max_rounds: int = 1_000
    early_stopping_rounds: int = 100
    imbalance: Literal["sqrt", "balanced", "none"] = "sqrt"
    calibration: Literal["platt", "isotonic"] = "platt"
    band_shares: tuple[float, float, float] = (0.10, 0.20, 0.30)
    num_threads: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.learning_rate <= 1:
            raise InvalidInput(f"learning_rate: must be in (0, 1], got {self.learning_rate}")
        for name in ("num_leaves", "min_child_samples", "max_cat_to_onehot", "max_rounds", "early_stopping_rounds"):
            if getattr(self, name) < 1 + (name == "num_leaves"):
                raise InvalidInput(f"{name}: must be >= {1 + (name == 'num_leaves')}, got {getattr(self, name)}")
        for name in ("feature_fraction", "bagging_fraction"):
            if not 0 < getattr(self, name) <= 1:
                raise InvalidInput(f"{name}: must be in (0, 1], got {getattr(self, name)}")
        if self.imbalance not in ("sqrt", "balanced", "none"):
            raise InvalidInput(f"imbalance: must be sqrt, balanced or none, got {self.imbalance!r}")
        if self.calibration not in ("platt", "isotonic"):
            raise InvalidInput(f"calibration: must be platt or isotonic, got {self.calibration!r}")
        if (len(self.band_shares) != 3 or self.band_shares[0] < 0.02 or min(self.band_shares) < 0.01
                or sum(self.band_shares) > 0.99):
            raise InvalidInput(f"band_shares: three shares (A, B, C), A at least 0.02, B and C at least 0.01, summing "
                               f"to at most 0.99, got {self.band_shares}")


def fit_lead_model(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    spec: FeatureSpec,
    wording: tuple[FeatureWording, ...],
    config: LeadModelConfig,
    label: str,
    horizon_days: int | None = None,
    data_end: pd.Timestamp | None = None,
) -> LeadScorer:
    """Train, calibrate and band a :class:`LeadScorer` (``label`` holds 0/1 outcomes in both frames).

    ``data_end``: the end instant of the training data (the CRM as-of), kept in ``info["data_end"]`` (ISO).
    """
    y_train, y_valid = _outcomes(train, label, "training"), _outcomes(valid, label, "validation")
    x_train, x_valid = spec.matrix(train), spec.matrix(valid)
    params = booster_params(config, y_train)
    features = list(spec.features)
    categorical = list(range(len(spec.categorical)))
    train_set = lgb.Dataset(x_train, y_train, feature_name=features, categorical_feature=categorical,
                            free_raw_data=True)
    valid_set = lgb.Dataset(x_valid, y_valid, reference=train_set)
    trained = lgb.train(params, train_set, num_boost_round=config.max_rounds, valid_sets=[valid_set],
                        callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)])
    best = trained.best_iteration or trained.current_iteration()
    booster = lgb.Booster(model_str=trained.model_to_string(num_iteration=best))
    margin = booster.predict(x_valid, raw_score=True, num_threads=config.num_threads)
    calibrator = Calibrator.fit(margin, y_valid, config.calibration)
    scale = ScoreScale.fit(calibrator(margin), config.band_shares)
    info = {"best_iteration": int(best), "train_rows": int(len(y_train)), "valid_rows": int(len(y_valid)),
            "train_positive_rate": float(y_train.mean()), "valid_positive_rate": float(y_valid.mean()),
            "scale_pos_weight": float(params["scale_pos_weight"])}
    if data_end is not None:
        info["data_end"] = pd.Timestamp(data_end).isoformat()
    return LeadScorer(spec, booster, calibrator, scale.band_probabilities(), wording, horizon_days,
                      config.num_threads, info, scale)


def booster_params(config: LeadModelConfig, outcomes: np.ndarray) -> dict:
    """LightGBM parameters for ``config``, with the converter weight from the training outcomes."""
    positives = float(outcomes.sum())
    ratio = (len(outcomes) - positives) / positives
    weight = {"sqrt": math.sqrt(ratio), "balanced": ratio, "none": 1.0}[config.imbalance]
    return {
        "objective": "binary",
        "metric": "auc",
        "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves,
        "max_depth": config.max_depth,
        "min_data_in_leaf": config.min_child_samples,
        "feature_fraction": config.feature_fraction,
        "bagging_fraction": config.bagging_fraction,
        "bagging_freq": 1 if config.bagging_fraction < 1 else 0,
        "lambda_l2": config.lambda_l2,
        "max_cat_to_onehot": config.max_cat_to_onehot,
        "scale_pos_weight": weight,
        "num_threads": config.num_threads,
        "seed": config.seed,
        "deterministic": True,
        "force_col_wise": True,
        "verbosity": -1,
    }


def _outcomes(frame: pd.DataFrame, label: str, split: str) -> np.ndarray:
    if label not in frame.columns:
        raise InvalidInput(f"{split} data: missing outcome column {label!r}")
    y = frame[label].to_numpy()
    if len(y) == 0 or np.unique(y).size < 2:
        raise InvalidInput(f"{split} data: {len(y)} rows with outcomes {sorted(set(y.tolist()))}; "
                           "both converters and non-converters are needed")
    return y.astype("int8")


def fit_baseline(train: pd.DataFrame, spec: FeatureSpec, label: str) -> Pipeline:
    """The simple baseline: logistic regression on the same features (one-hot categories; numbers
    median-imputed with missing flags, standardised)."""
    n_cat = len(spec.categorical)
    columns = ColumnTransformer([
        ("categories", make_pipeline(SimpleImputer(strategy="constant", fill_value=-1.0),
                                     OneHotEncoder(handle_unknown="ignore")), list(range(n_cat))),
        ("numbers", make_pipeline(SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
                                  StandardScaler()), list(range(n_cat, len(spec.features)))),
    ])
    model = make_pipeline(columns, LogisticRegression(max_iter=2_000))
    return model.fit(spec.matrix(train), _outcomes(train, label, "training"))
