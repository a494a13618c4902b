"""The lead-scoring model: LightGBM with native categoricals, calibrated, banded and explained.

:func:`fit_lead_model` trains a binary LightGBM booster on the training split with early stopping on
the (later) validation split, weighting converters up for class imbalance; then fits the calibration
(Platt or isotonic, on the validation split's raw margins) and fixes the band thresholds on the
validation split's calibrated probabilities. The result, :class:`LeadScorer`, is everything scoring
needs, in plain values plus the booster's text, so it saves and loads exactly.

Categoricals are cast by the scorer itself (category -> code from the training categories; missing
and unseen categories become missing, never an error), so the booster only ever sees a float matrix.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from features.errors import InvalidInput
from features.lead_features import BEHAVIOUR_FEATURES, PROFILE_FEATURES, LeadFeatureArrays
from features.crm.schema import SCORE_BANDS
from training.leads.reasons import FeatureWording, ReasonCoder, ReasonPhrases
from training.leads.tree_shap import TreeShap

FORMAT_VERSION = 1
BOOSTER_FILE = "booster.txt"
SCORER_FILE = "scorer.json"
ROW_COLUMN = "row"
"""Output id column of models trained without an id column: the 1-based row number of the input."""
SMALL_BATCH = 2_000
"""Below this many rows LightGBM predicts on one thread (thread start-up costs more than it saves)."""
SMALL_FRAME = 64
"""Up to this many rows categorical codes come from a dict lookup (pandas' per-call overhead dominates)."""


@dataclass(frozen=True)
class LeadModelConfig:
    """Hyperparameters of the booster, the imbalance handling, the calibration and the bands.

    ``imbalance``: ``sqrt`` weights converters by sqrt(negatives/positives), ``balanced`` by the full
    ratio, ``none`` not at all (calibration undoes the weighting's effect on probabilities).
    ``band_shares``: shares of validation leads in bands A, B and C (D is the rest), best first.
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
        if len(self.band_shares) != 3 or min(self.band_shares) <= 0 or sum(self.band_shares) >= 1:
            raise InvalidInput(f"band_shares: three positive shares (A, B, C) summing below 1, got {self.band_shares}")


@dataclass(frozen=True)
class FeatureSpec:
    """The model's input columns and the categories learned from the training data.

    Categorical values are compared as text: the code of a value is its position in ``categories``.
    """

    id_column: str | None
    categorical: tuple[str, ...]
    categories: tuple[tuple[str, ...], ...]
    numeric: tuple[str, ...]

    @classmethod
    def learn(cls, frame: pd.DataFrame, id_column: str | None, categorical: tuple[str, ...],
              numeric: tuple[str, ...]) -> FeatureSpec:
        """The spec of ``frame``: categories are the sorted distinct non-missing values of each categorical."""
        categories = tuple(tuple(sorted(as_text(frame[c]).dropna().unique().tolist())) for c in categorical)
        return cls(id_column, tuple(categorical), categories, tuple(numeric))

    @property
    def features(self) -> tuple[str, ...]:
        """Feature names in the booster's column order: categoricals first, then numerics."""
        return (*self.categorical, *self.numeric)

    @property
    def category_map(self) -> dict[str, tuple[str, ...]]:
        return dict(zip(self.categorical, self.categories))

    @cached_property
    def _indexes(self) -> tuple[pd.Index, ...]:
        return tuple(pd.Index(c, dtype="object") for c in self.categories)

    @cached_property
    def _lookups(self) -> tuple[dict[str, int], ...]:
        return tuple({value: code for code, value in enumerate(c)} for c in self.categories)

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The float matrix the booster sees: category codes (missing or unseen: NaN) then numerics."""
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise InvalidInput(f"input: missing columns {missing}; the model needs {list(self.features)}")
        out = np.empty((len(frame), len(self.features)), dtype="float64")
        small = len(frame) <= SMALL_FRAME
        for j, column in enumerate(self.categorical):
            values = frame[column]
            out[:, j] = (_small_category_codes(values.tolist(), self._lookups[j]) if small
                         else _category_codes(values, self._indexes[j]))
        if self.numeric:
            out[:, len(self.categorical):] = _numbers(frame, self.numeric)
        return out

    @cached_property
    def _crm_positions(self) -> tuple[tuple[int, ...], np.ndarray] | None:
        if not (set(self.categorical) <= set(PROFILE_FEATURES) and set(self.numeric) <= set(BEHAVIOUR_FEATURES)):
            return None
        return (tuple(PROFILE_FEATURES.index(c) for c in self.categorical),
                np.array([BEHAVIOUR_FEATURES.index(c) for c in self.numeric], dtype="int64"))

    def crm_matrix(self, features: LeadFeatureArrays) -> np.ndarray:
        """:meth:`matrix` of ``features.frame()``, the same values, read straight from the arrays."""
        if self._crm_positions is None:
            return self.matrix(features.frame())
        profile, behaviour = self._crm_positions
        n = len(features.lead_ids)
        out = np.empty((n, len(self.features)), dtype="float64")
        for j, position in enumerate(profile):
            values = features.profile[:, position]
            out[:, j] = (_small_category_codes(values.tolist(), self._lookups[j]) if n <= SMALL_FRAME
                         else _category_codes(pd.Series(values, dtype=object), self._indexes[j]))
        out[:, len(profile):] = features.behaviour[:, behaviour]
        return out

    def ids(self, frame: pd.DataFrame) -> tuple[str, np.ndarray]:
        """The output id column's name and values."""
        if self.id_column is None:
            return ROW_COLUMN, np.arange(1, len(frame) + 1)
        if self.id_column not in frame.columns:
            raise InvalidInput(f"input: missing id column {self.id_column!r}")
        return self.id_column, frame[self.id_column].to_numpy()


def as_text(values: pd.Series) -> pd.Series:
    """Categorical values as text, missing kept missing (the same cast at training and scoring)."""
    return values.astype("str")


def _category_codes(values: pd.Series, index: pd.Index) -> np.ndarray:
    """Codes of ``values`` in the training categories as floats, NaN for missing or unseen; each distinct
    value is cast to text and looked up once."""
    codes, distinct = pd.factorize(values)
    if len(distinct) == 0:
        return np.full(len(values), np.nan)
    text = as_text(pd.Series(np.asarray(distinct, dtype=object))).to_numpy(dtype=object, na_value=None)
    found = index.get_indexer(text).astype("float64")
    found[found < 0] = np.nan
    return np.where(codes < 0, np.nan, found[codes])


def _small_category_codes(values: list, lookup: dict[str, int]) -> list[float]:
    """:func:`_category_codes` for a few rows, with a dict instead of pandas machinery (same results)."""
    codes = []
    for value in values:
        if value is None or value is pd.NA or (isinstance(value, float) and value != value):
            codes.append(np.nan)
        else:
            codes.append(lookup.get(value if isinstance(value, str) else str(value), np.nan))
    return codes


def _numbers(frame: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    """The numeric columns as a float matrix (``reindex`` selects them at a fraction of ``loc``'s cost)."""
    try:
        chosen = frame.reindex(columns=list(columns)) if frame.columns.is_unique else frame.loc[:, list(columns)]
        return chosen.to_numpy(dtype="float64", na_value=np.nan)
    except (TypeError, ValueError):
        for column in columns:
            parsed = pd.to_numeric(frame[column], errors="coerce")
            bad = parsed.isna() & frame[column].notna()
            if bad.any():
                rows = np.flatnonzero(bad.to_numpy())[:5].tolist()
                raise InvalidInput(f"{column}: rows {rows} are not numbers (e.g. {frame[column].iloc[rows[0]]!r}); "
                                   "expected a number or empty") from None
        raise


@dataclass(frozen=True)
class Calibrator:
    """Raw margin -> calibrated probability: Platt's sigmoid(slope * margin + intercept) or isotonic steps."""

    method: Literal["platt", "isotonic"]
    slope: float = 1.0
    intercept: float = 0.0
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()

    @classmethod
    def fit(cls, margin: np.ndarray, converted: np.ndarray, method: Literal["platt", "isotonic"]) -> Calibrator:
        """Fit on held-out raw margins and outcomes."""
        if method == "isotonic":
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(margin, converted)
            return cls("isotonic", x=tuple(iso.X_thresholds_.tolist()), y=tuple(iso.y_thresholds_.tolist()))
        platt = LogisticRegression(C=1e6, max_iter=1_000).fit(margin.reshape(-1, 1), converted)
        return cls("platt", slope=float(platt.coef_[0, 0]), intercept=float(platt.intercept_[0]))

    @cached_property
    def _steps(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.x), np.asarray(self.y)

    def __call__(self, margin: np.ndarray) -> np.ndarray:
        if self.method == "isotonic":
            x, y = self._steps
            return np.interp(margin, x, y)
        return 1.0 / (1.0 + np.exp(-(self.slope * margin + self.intercept)))


@dataclass(frozen=True)
class LeadScores:
    """Scores of rows in input order: ``score`` (0-100), ``probability``, ``band`` (A-D) and ``reasons``.

    ``reasons`` is None when they were not asked for, or there are no rows.
    """

    score: np.ndarray
    probability: np.ndarray
    band: np.ndarray
    reasons: ReasonPhrases | None

    def frame(self, id_name: str, ids: np.ndarray) -> pd.DataFrame:
        """The scores as the pyfunc's output frame: id column, score, probability, band, reasons."""
        out = pd.DataFrame({id_name: ids, "score": self.score, "probability": self.probability, "band": self.band})
        # Object labels: pandas 3 infers arrow-backed ones, and each column added or read then goes through pyarrow.
        out.columns = pd.Index(out.columns.tolist(), dtype=object)
        out["reasons"] = [None] * len(ids) if self.reasons is None else self.reasons.json()
        return out


@dataclass(frozen=True)
class LeadScorer:
    """A fitted lead-scoring model: feature preparation, booster, calibration, bands and reason codes.

    ``band_thresholds`` are the calibrated probabilities at which bands A, B and C start.
    ``horizon_days`` is the conversion horizon of the probabilities (None: the flat file's outcome).
    """

    spec: FeatureSpec
    booster: lgb.Booster
    calibrator: Calibrator
    band_thresholds: tuple[float, float, float]
    wording: tuple[FeatureWording, ...]
    horizon_days: int | None = None
    num_threads: int = 1
    info: dict = field(default_factory=dict)

    @cached_property
    def reason_coder(self) -> ReasonCoder:
        return ReasonCoder(self.wording, self.spec.category_map)

    @cached_property
    def _thresholds(self) -> np.ndarray:
        return np.asarray(self.band_thresholds)

    def _threads(self, rows: int) -> int:
        return 1 if rows < SMALL_BATCH else self.num_threads

    @cached_property
    def _tree_shap(self) -> TreeShap | None:
        return TreeShap.from_booster(self.booster)

    def shap_values(self, matrix: np.ndarray) -> np.ndarray:
        """Per-feature SHAP values and the bias (last column) of a prepared matrix, as ``pred_contrib`` gives them.

        From :mod:`training.leads.tree_shap`'s tables (~8x faster), or ``pred_contrib`` for trees too deep for them.
        """
        if self._tree_shap is not None:
            return self._tree_shap.contributions(matrix)
        return self.booster.predict(matrix, pred_contrib=True, num_threads=self._threads(len(matrix)))

    def raw_margin(self, matrix: np.ndarray) -> np.ndarray:
        """The booster's raw output (log-odds before calibration) for a prepared matrix."""
        return self.booster.predict(matrix, raw_score=True, num_threads=self._threads(len(matrix)))

    def probability(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities of converting (within the horizon) for input rows."""
        return self.calibrator(self.raw_margin(self.spec.matrix(frame)))

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Per-factor SHAP contributions in log-odds and the ``bias``: each row sums to the raw margin."""
        contrib = self.shap_values(self.spec.matrix(frame))
        grouped = pd.DataFrame(self.reason_coder.grouped(contrib), columns=list(self.reason_coder.groups))
        grouped["bias"] = contrib[:, -1]
        return grouped

    def score_matrix(self, matrix: np.ndarray, reasons: bool = True) -> LeadScores:
        """Scores of a prepared matrix (:meth:`FeatureSpec.matrix`); ``reasons=False`` skips the reason codes."""
        probability = self.calibrator(self.raw_margin(matrix))
        return LeadScores(
            score=np.clip(np.rint(probability * 100), 0, 100).astype("int64"),
            probability=probability,
            band=np.asarray(SCORE_BANDS, dtype=object)[(probability[:, None] < self._thresholds).sum(axis=1)],
            reasons=self.reason_coder.phrases(self.shap_values(matrix), matrix) if reasons and len(matrix) else None,
        )

    def predict(self, frame: pd.DataFrame, reasons: bool = True) -> pd.DataFrame:
        """Score rows: id column, ``score`` (0-100), ``probability``, ``band`` (A-D) and ``reasons`` (JSON).

        ``reasons=False`` skips the reason codes (SHAP is far slower than scoring) and leaves them empty.
        """
        id_name, ids = self.spec.ids(frame)
        return self.score_matrix(self.spec.matrix(frame), reasons).frame(id_name, ids)

    def predict_features(self, features: LeadFeatureArrays, reasons: bool = True) -> LeadScores:
        """Scores of CRM leads' features (:func:`features.lead_features.lead_feature_arrays`), in their order."""
        if self.spec.id_column != "lead_id":
            raise InvalidInput("model: it was trained on a flat file, not on CRM leads; score files with "
                               "'leadval score leads --table FILE'")
        return self.score_matrix(self.spec.crm_matrix(features), reasons)

    def save(self, folder: Path) -> None:
        """Write the booster's text and the rest as JSON into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / BOOSTER_FILE).write_text(self.booster.model_to_string())
        values = {
            "format_version": FORMAT_VERSION,
            "spec": asdict(self.spec),
            "calibrator": asdict(self.calibrator),
            "band_thresholds": list(self.band_thresholds),
            "wording": [asdict(w) for w in self.wording],
            "horizon_days": self.horizon_days,
            "num_threads": self.num_threads,
            "info": self.info,
        }
        (folder / SCORER_FILE).write_text(json.dumps(values, indent=1))

    @classmethod
    def load(cls, folder: Path) -> LeadScorer:
        """Read what :meth:`save` wrote."""
        values = json.loads((folder / SCORER_FILE).read_text())
        if values.get("format_version") != FORMAT_VERSION:
            raise InvalidInput(f"lead model: format_version {values.get('format_version')!r} is not {FORMAT_VERSION}")
        spec = values["spec"]
        calibrator = values["calibrator"]
        return cls(
            spec=FeatureSpec(spec["id_column"], tuple(spec["categorical"]),
                             tuple(tuple(c) for c in spec["categories"]), tuple(spec["numeric"])),
            booster=lgb.Booster(model_str=(folder / BOOSTER_FILE).read_text()),
            calibrator=Calibrator(calibrator["method"], calibrator["slope"], calibrator["intercept"],
                                  tuple(calibrator["x"]), tuple(calibrator["y"])),
            band_thresholds=tuple(values["band_thresholds"]),
            wording=tuple(FeatureWording(**w) for w in values["wording"]),
            horizon_days=values["horizon_days"],
            num_threads=values["num_threads"],
            info=values["info"],
        )


def fit_lead_model(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    spec: FeatureSpec,
    wording: tuple[FeatureWording, ...],
    config: LeadModelConfig,
    label: str,
    horizon_days: int | None = None,
) -> LeadScorer:
    """Train, calibrate and band a :class:`LeadScorer` (``label`` holds 0/1 outcomes in both frames)."""
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
    thresholds = band_thresholds(calibrator(margin), config.band_shares)
    info = {"best_iteration": int(best), "train_rows": int(len(y_train)), "valid_rows": int(len(y_valid)),
            "train_positive_rate": float(y_train.mean()), "valid_positive_rate": float(y_valid.mean()),
            "scale_pos_weight": float(params["scale_pos_weight"])}
    return LeadScorer(spec, booster, calibrator, thresholds, wording, horizon_days, config.num_threads, info)


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


def band_thresholds(probability: np.ndarray, shares: tuple[float, float, float]) -> tuple[float, float, float]:
    """Probabilities at which bands A, B and C start, so that ``shares`` of these leads fall in each."""
    cumulative = np.cumsum(shares)
    return tuple(float(q) for q in np.quantile(probability, 1 - cumulative))


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
