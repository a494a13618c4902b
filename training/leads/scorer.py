"""A fitted lead-scoring model: booster, calibration, bands and reason codes, saved and loaded exactly.

:class:`LeadScorer` is everything scoring needs, in plain values plus the booster's text: scores are
the calibrated probability, a band from thresholds fixed on validation data, and reasons from SHAP
contributions. :func:`training.leads.fit.fit_lead_model` makes one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from features.crm.schema import SCORE_BANDS
from features.errors import InvalidInput
from features.lead_features import LeadFeatureArrays
from training.leads.reasons import FeatureWording, ReasonCoder, ReasonPhrases
from training.leads.spec import FeatureSpec
from training.leads.tree_shap import TreeShap

FORMAT_VERSION = 1
BOOSTER_FILE = "booster.txt"
SCORER_FILE = "scorer.json"
SMALL_BATCH = 2_000
"""Below this many rows LightGBM predicts on one thread (thread start-up costs more than it saves)."""


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
