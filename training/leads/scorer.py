"""A fitted lead-scoring model: booster, calibration, score scale, bands and reason codes, saved and loaded exactly.

:class:`LeadScorer` is everything scoring needs, in plain values plus the booster's text. Per lead:

* ``probability``: the calibrated probability of converting within the horizon;
* ``score``, an integer 1-99: the percentile of that probability among the model's reference leads (its
  validation split), ``min(99, max(1, ceil(100 x F(probability))))`` with F the share of reference leads
  less likely to convert (:class:`ScoreScale`). It ranks and reads the same at any base rate (a 1% base
  rate put 79% of leads at "probability x 100" = 0), is monotone in the probability, and each score from
  2 to 98 holds 1% of reference leads (1 the bottom 1%, 99 the top 2%);
* ``band`` A-D from the score: with the default ``band_shares`` A = 91-99 (the top 10% of reference leads
  by likelihood), B = 71-90 (the next 20%), C = 41-70 (the next 30%), D = 1-40 (the rest), so no score
  value is in two bands;
* ``reasons`` from SHAP contributions (:mod:`training.leads.reasons`).

Saved as ``scorer.json`` format 2 (:data:`FORMAT_VERSION`). Models saved in format 1 have no reference
leads and keep scoring exactly as they did: score = probability x 100 rounded (0-100), bands from the
probability thresholds, reasons without the evidence check. :func:`training.leads.fit.fit_lead_model`
makes a scorer.
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

from features.crm.schema import SCORE_BANDS
from features.errors import InvalidInput
from features.lead_features import LeadFeatureArrays
from training.leads.reasons import FeatureWording, ReasonCoder, ReasonPhrases
from training.leads.reference import REFERENCE_FILE, FeatureReference
from training.leads.spec import FeatureSpec
from training.leads.tree_shap import TreeShap

FORMAT_VERSION = 2
"""``scorer.json`` format written: 2 = percentile score with its reference leads (:class:`ScoreScale`), bands
by score, evidence-checked reasons. Format 1 (no ``score_scale``) still loads and scores as it always did."""
FORMATS = (1, 2)
MAX_KNOTS = 1_001
"""Most points of the reference leads' distribution a :class:`ScoreScale` keeps (shares to ~0.1%)."""
BOOSTER_FILE = "booster.txt"
SCORER_FILE = "scorer.json"
SMALL_BATCH = 2_000
"""Below this many rows LightGBM predicts on one thread (thread start-up costs more than it saves)."""


class TruncatedModelFile(ValueError):
    """A saved model file that lacks its later parts: cut short (a full disk, an interrupted copy) or overwritten."""


def booster_from_text(text: str, path: Path) -> lgb.Booster:
    """The LightGBM booster saved as ``text`` (read from ``path``), after checking that it is whole: LightGBM 4 aborts
    the whole process on a model text cut short inside its trees, where Python could catch nothing."""
    lines = text.splitlines()
    sizes = next((line.split("=", 1)[1].split() for line in lines[:40] if line.startswith("tree_sizes=")), None)
    trees = sum(1 for line in lines if line.startswith("Tree="))
    if "\nend of trees" not in text or (sizes is not None and trees != len(sizes)):
        raise TruncatedModelFile(f"{path.name} is not a whole LightGBM model (its trees do not end as its header says)")
    return lgb.Booster(model_str=text)


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
        """Fit on held-out raw margins and outcomes (scikit-learn is imported here: scoring does not need it)."""
        from sklearn.isotonic import IsotonicRegression
        from sklearn.linear_model import LogisticRegression

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
class ScoreScale:
    """Probability -> score 1-99 and band: the percentile of the probability among reference leads.

    ``probabilities`` (increasing) and ``shares`` are points of the reference leads' distribution: at each
    probability, the share of reference leads with a lower one, ties counted half (mid-rank). Between
    points F is linear, with F(0) = 0 and F(1) = 1, so it is continuous and non-decreasing:
    score = min(99, max(1, ceil(100 x F(p)))) (100 x F rounded to 9 decimals first, so float noise never
    tips a score), i.e. a lead scoring s is likelier to convert than (s - 1)% to s% of reference leads.
    ``band_scores`` are the scores at which bands A, B and C start: ``101 - round(100 x cumulative share)``;
    shares (0.10, 0.20, 0.30) give 91, 71, 41, so A = F > 0.90 = the top 10%.
    """

    probabilities: tuple[float, ...]
    shares: tuple[float, ...]
    band_scores: tuple[int, int, int]
    reference_leads: int

    @classmethod
    def fit(cls, probability: np.ndarray, band_shares: tuple[float, float, float],
            knots: int = MAX_KNOTS) -> ScoreScale:
        """The scale of reference leads' calibrated ``probability`` with bands holding ``band_shares`` of them."""
        p = np.asarray(probability, dtype="float64")
        if len(p) == 0 or not np.isfinite(p).all():
            raise InvalidInput(f"score scale: needs reference probabilities, got {len(p)} with "
                               f"{int((~np.isfinite(p)).sum())} not finite")
        distinct, counts = np.unique(p, return_counts=True)
        shares = (np.cumsum(counts) - counts / 2) / len(p)
        if len(distinct) > knots:
            keep = np.unique(np.r_[0, np.searchsorted(shares, np.linspace(shares[0], shares[-1], knots)),
                                   len(distinct) - 1].clip(0, len(distinct) - 1))
            distinct, shares = distinct[keep], shares[keep]
        if distinct[0] > 0:
            distinct, shares = np.r_[0.0, distinct], np.r_[0.0, shares]
        if distinct[-1] < 1:
            distinct, shares = np.r_[distinct, 1.0], np.r_[shares, 1.0]
        cumulative = np.cumsum(band_shares)
        band_scores = tuple(int(101 - round(100 * c)) for c in cumulative)
        if not 99 >= band_scores[0] > band_scores[1] > band_scores[2] >= 2:
            raise InvalidInput(f"band_shares: {band_shares} give band scores {band_scores}; each band needs at least "
                               "1% of leads, A at least 2%, and D at least 1%")
        return cls(tuple(distinct.tolist()), tuple(shares.tolist()), band_scores, int(len(p)))

    @cached_property
    def _points(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.probabilities), np.asarray(self.shares)

    @cached_property
    def _band_starts(self) -> np.ndarray:
        return np.asarray(self.band_scores)

    def share_below(self, probability: np.ndarray) -> np.ndarray:
        """F: the share of reference leads less likely to convert than each probability (ties half).

        Linear between the points, computed as a fraction of each interval: ``np.interp`` divides by the
        interval's width first, which overflows for subnormal probabilities (1e-311) and broke monotonicity.
        """
        x, y = self._points
        p = np.clip(np.asarray(probability, dtype="float64"), x[0], x[-1])
        i = np.clip(np.searchsorted(x, p, side="right") - 1, 0, len(x) - 2)
        width = x[i + 1] - x[i]
        t = np.divide(p - x[i], width, out=np.zeros_like(p), where=width > 0)
        return y[i] + t * (y[i + 1] - y[i])

    def score(self, probability: np.ndarray) -> np.ndarray:
        """Scores 1-99 of calibrated probabilities (int64), monotone non-decreasing in the probability."""
        return np.clip(np.ceil(np.round(100 * self.share_below(probability), 9)), 1, 99).astype("int64")

    def band(self, score: np.ndarray) -> np.ndarray:
        """Bands A-D of scores: A from ``band_scores[0]`` up, B from ``band_scores[1]``, C from ``band_scores[2]``."""
        return np.asarray(SCORE_BANDS, dtype=object)[(np.asarray(score)[:, None] < self._band_starts).sum(axis=1)]

    def band_ranges(self) -> list[tuple[str, int, int, float]]:
        """Per band, best first: its lowest and highest score and the share of reference leads it holds."""
        edges = [100, *self.band_scores, 1]
        ranges = []
        for band, high, low in zip(SCORE_BANDS, [e - 1 for e in edges[:-1]], edges[1:], strict=True):
            top = 1.0 if high >= 99 else high / 100
            ranges.append((band, low, min(high, 99), top - (low - 1) / 100))
        return ranges

    def band_probabilities(self) -> tuple[float, float, float]:
        """The probabilities above which bands A, B and C start (the inverse of F at (score - 1) / 100)."""
        x, y = self._points
        return tuple(float(np.interp((s - 1) / 100, y, x)) for s in self.band_scores)


@dataclass(frozen=True)
class LeadScores:
    """Scores of rows in input order: ``score`` (1-99; format-1 models 0-100), ``probability``, ``band`` (A-D)
    and ``reasons``.

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
    """A fitted lead-scoring model: feature preparation, booster, calibration, score scale, bands and reason codes.

    ``band_thresholds`` are the calibrated probabilities at which bands A, B and C start (with a ``scale``,
    derived from it, for reading: bands then come from the score). ``horizon_days`` is the conversion
    horizon of the probabilities (None: the flat file's outcome). ``scale`` None is a format-1 model:
    score = probability x 100, bands from ``band_thresholds``, reasons without the evidence check.
    ``info`` holds facts of the fit, e.g. ``data_end`` (ISO instant of the CRM data it was trained on).
    ``reference``: the training distributions input drift is judged against (``reference.json``; None for models
    trained before it was kept).
    """

    spec: FeatureSpec
    booster: lgb.Booster
    calibrator: Calibrator
    band_thresholds: tuple[float, float, float]
    wording: tuple[FeatureWording, ...]
    horizon_days: int | None = None
    num_threads: int = 1
    info: dict = field(default_factory=dict)
    scale: ScoreScale | None = None
    reference: FeatureReference | None = field(default=None, compare=False, repr=False)

    @property
    def format_version(self) -> int:
        """The ``scorer.json`` format this model scores by and saves as (1: no score scale)."""
        return 1 if self.scale is None else FORMAT_VERSION

    @cached_property
    def reason_coder(self) -> ReasonCoder:
        return ReasonCoder(self.wording, self.spec.category_map, evidence=self.scale is not None)

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
        if self.scale is None:
            score = np.clip(np.rint(probability * 100), 0, 100).astype("int64")
            band = np.asarray(SCORE_BANDS, dtype=object)[(probability[:, None] < self._thresholds).sum(axis=1)]
        else:
            score = self.scale.score(probability)
            band = self.scale.band(score)
        return LeadScores(
            score=score,
            probability=probability,
            band=band,
            reasons=self.reason_coder.phrases(self.shap_values(matrix), matrix) if reasons and len(matrix) else None,
        )

    def predict(self, frame: pd.DataFrame, reasons: bool = True) -> pd.DataFrame:
        """Score rows: id column, ``score`` (1-99), ``probability``, ``band`` (A-D) and ``reasons`` (JSON).

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
        """Write the booster's text and the rest as JSON into ``folder`` (the training reference, if any, apart)."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / BOOSTER_FILE).write_text(self.booster.model_to_string())
        values = {
            "format_version": self.format_version,
            "spec": asdict(self.spec),
            "calibrator": asdict(self.calibrator),
            "band_thresholds": list(self.band_thresholds),
            "wording": [asdict(w) for w in self.wording],
            "horizon_days": self.horizon_days,
            "num_threads": self.num_threads,
            "info": self.info,
        }
        if self.scale is not None:
            values["score_scale"] = asdict(self.scale)
        (folder / SCORER_FILE).write_text(json.dumps(values, indent=1))
        if self.reference is not None:
            (folder / REFERENCE_FILE).write_text(self.reference.to_json())

    @classmethod
    def load(cls, folder: Path) -> LeadScorer:
        """Read what :meth:`save` wrote."""
        values = json.loads((folder / SCORER_FILE).read_text())
        if values.get("format_version") not in FORMATS:
            raise InvalidInput(f"lead model: format_version {values.get('format_version')!r} is not one of {FORMATS} "
                               "(saved by a newer leadval?)")
        spec = values["spec"]
        calibrator = values["calibrator"]
        scale = values.get("score_scale") if values["format_version"] >= 2 else None
        if values["format_version"] >= 2 and scale is None:
            raise InvalidInput(f"lead model: {SCORER_FILE} of format {values['format_version']} has no score_scale")
        return cls(
            spec=FeatureSpec(spec["id_column"], tuple(spec["categorical"]),
                             tuple(tuple(c) for c in spec["categories"]), tuple(spec["numeric"])),
            booster=booster_from_text((folder / BOOSTER_FILE).read_text(), folder / BOOSTER_FILE),
            calibrator=Calibrator(calibrator["method"], calibrator["slope"], calibrator["intercept"],
                                  tuple(calibrator["x"]), tuple(calibrator["y"])),
            band_thresholds=tuple(values["band_thresholds"]),
            wording=tuple(FeatureWording(**w) for w in values["wording"]),
            horizon_days=values["horizon_days"],
            num_threads=values["num_threads"],
            info=values["info"],
            scale=None if scale is None else ScoreScale(tuple(scale["probabilities"]), tuple(scale["shares"]),
                                                        tuple(scale["band_scores"]), scale["reference_leads"]),
            reference=(FeatureReference.from_json((folder / REFERENCE_FILE).read_text())
                       if (folder / REFERENCE_FILE).exists() else None),
        )
