"""The training reference stored with a lead model: how each feature and the validation scores were distributed.

:func:`feature_reference` summarises the training rows per feature (numerics: decile bin edges and counts per
bin, categoricals: counts per training category, both with the missing count) and the validation scores (score
deciles and band shares). Input drift (:mod:`serving.monitoring.drift`) compares tonight's open leads with it.

Open leads age by construction: the longer a CRM runs, the more old, never-converted leads it holds, and their
ages, recencies and activity counts have no counterpart in a training set of younger snapshots. So CRM rows are
counted per **age stratum** (:data:`AGE_EDGES_DAYS` of ``days_since_created``) and leads older than the last
edge are left out: drift then compares tonight's leads with training leads *of the same age*, the reference
mixed in tonight's age proportions. Rows without the age column (a flat file's) form one stratum.
Saved as ``reference.json`` next to ``scorer.json``; models trained before it have none.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

AGE_COLUMN = "days_since_created"
"""The lead's age in days: what the strata are cut on."""
AGE_EDGES_DAYS: tuple[float, ...] = (0, 7, 14, 30, 60, 90, 120, 180, 240, 300, 365)
"""Age strata ``[edge, next edge)``; leads a year old or older are not compared (see the module doc)."""
DECILES = np.linspace(0.1, 0.9, 9)
SCORE_EDGES: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)
"""Score bins 1-10, 11-20, ..., 91-99: the deciles of the validation leads (scores are their percentiles)."""
REFERENCE_FILE = "reference.json"
FORMAT = 1


@dataclass(frozen=True)
class FeatureCounts:
    """One feature's training distribution per age stratum: counts per bin (``bins`` names them) and missing.

    Numerics: ``edges`` are the deciles (duplicates dropped) and bin ``i`` holds ``edges[i-1] < x <= edges[i]``
    (open at both ends). Categoricals: ``bins`` are the training categories (as text), sorted by count.
    """

    name: str
    kind: str
    bins: tuple[str, ...]
    edges: tuple[float, ...]
    counts: tuple[tuple[int, ...], ...]
    missing: tuple[int, ...]

    def codes(self, values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """Bin of each value (``len(bins)``: a category unseen in training) and whether it is missing."""
        missing = values.isna().to_numpy()
        if self.kind == "numeric":
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            missing = np.isnan(numbers)
            return np.searchsorted(np.asarray(self.edges), np.nan_to_num(numbers), side="left"), missing
        lookup = {category: code for code, category in enumerate(self.bins)}
        text = values.astype(object).where(~missing, None).tolist()
        return np.array([len(self.bins) if t is None else lookup.get(str(t), len(self.bins)) for t in text]), missing

    @property
    def shares(self) -> list[float]:
        """Share of each bin among the non-missing training rows (all strata)."""
        total = np.asarray(self.counts, dtype="float64").sum(axis=0)
        return (total / max(total.sum(), 1.0)).round(6).tolist()

    @property
    def missing_rate(self) -> float:
        """Share of training rows (all strata) where the feature is missing."""
        rows = float(np.sum(self.counts) + np.sum(self.missing))
        return round(float(np.sum(self.missing)) / max(rows, 1.0), 6)


@dataclass(frozen=True)
class ScoreReference:
    """The validation scores: rows, share per score decile (:data:`SCORE_EDGES`) and per band."""

    rows: int
    shares: tuple[float, ...]
    bands: dict[str, float]


@dataclass(frozen=True)
class FeatureReference:
    """A lead model's training reference: features counted per age stratum, and the validation scores."""

    rows: int
    age_column: str | None
    age_edges: tuple[float, ...]
    features: tuple[FeatureCounts, ...]
    scores: ScoreReference | None

    def strata(self, frame: pd.DataFrame) -> np.ndarray:
        """Age stratum of each row (-1: older than the last edge, or no age: not compared); 0 without strata."""
        if self.age_column is None:
            return np.zeros(len(frame), dtype="int64")
        age = pd.to_numeric(frame[self.age_column], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        stratum = np.searchsorted(np.asarray(self.age_edges), age, side="right") - 1
        return np.where(np.isnan(age) | (stratum >= len(self.age_edges) - 1), -1, stratum)

    def to_json(self) -> str:
        """The reference as JSON (with each feature's overall shares and missing rate, for people)."""
        return json.dumps({
            "format": FORMAT, "rows": self.rows, "age_column": self.age_column, "age_edges": list(self.age_edges),
            "features": [{"name": f.name, "kind": f.kind, "bins": list(f.bins), "edges": list(f.edges),
                          "shares": f.shares, "missing_rate": f.missing_rate,
                          "counts_by_age": [list(c) for c in f.counts], "missing_by_age": list(f.missing)}
                         for f in self.features],
            "scores": None if self.scores is None else {"rows": self.scores.rows, "edges": list(SCORE_EDGES),
                                                        "shares": list(self.scores.shares),
                                                        "bands": self.scores.bands},
        }, indent=1)

    @classmethod
    def from_json(cls, text: str) -> FeatureReference:
        """Read what :meth:`to_json` wrote."""
        values = json.loads(text)
        scores = values["scores"]
        return cls(
            rows=values["rows"], age_column=values["age_column"], age_edges=tuple(values["age_edges"]),
            features=tuple(FeatureCounts(f["name"], f["kind"], tuple(f["bins"]), tuple(f["edges"]),
                                         tuple(tuple(c) for c in f["counts_by_age"]), tuple(f["missing_by_age"]))
                           for f in values["features"]),
            scores=None if scores is None else ScoreReference(scores["rows"], tuple(scores["shares"]),
                                                              scores["bands"]),
        )


def feature_reference(train: pd.DataFrame, categorical: Sequence[str], numeric: Sequence[str],
                      valid_scores: pd.Series | None = None, valid_bands: pd.Series | None = None
                      ) -> FeatureReference:
    """The reference of training rows ``train`` (stratified by age when it has :data:`AGE_COLUMN`) and of the
    validation leads' scores and bands."""
    age_column = AGE_COLUMN if AGE_COLUMN in train.columns else None
    shell = FeatureReference(len(train), age_column, AGE_EDGES_DAYS if age_column else (), (), None)
    stratum = shell.strata(train)
    n_strata = max(len(shell.age_edges) - 1, 1)
    kept = stratum >= 0
    features = []
    for name in (*categorical, *numeric):
        values = train[name][kept]
        if name in categorical:
            present = values.dropna().astype(str)
            bins, edges = tuple(present.value_counts().index.tolist()), ()
            kind = "categorical"
        else:
            numbers = pd.to_numeric(values, errors="coerce").dropna()
            edges = tuple(np.unique(np.quantile(numbers, DECILES)).tolist()) if len(numbers) else ()
            bins, kind = tuple(f"<= {e:g}" for e in edges) + (f"> {edges[-1]:g}" if edges else "all",), "numeric"
        counts = FeatureCounts(name, kind, bins, edges, (), ())
        codes, missing = counts.codes(values)
        by_stratum = stratum[kept]
        table = np.zeros((n_strata, len(bins) + 1), dtype="int64")
        np.add.at(table, (by_stratum[~missing], codes[~missing]), 1)
        features.append(FeatureCounts(name, kind, bins, edges, tuple(tuple(r[: len(bins)].tolist()) for r in table),
                                      tuple(np.bincount(by_stratum[missing], minlength=n_strata).tolist())))
    return FeatureReference(len(train), age_column, shell.age_edges, tuple(features),
                            None if valid_scores is None else score_reference(valid_scores, valid_bands))


def score_shares(scores: pd.Series) -> np.ndarray:
    """Share of ``scores`` in each score decile (:data:`SCORE_EDGES`)."""
    bins = np.searchsorted(np.asarray(SCORE_EDGES), scores.to_numpy(dtype="float64"), side="left")
    return np.bincount(bins, minlength=len(SCORE_EDGES) + 1) / max(len(scores), 1)


def score_reference(scores: pd.Series, bands: pd.Series | None) -> ScoreReference:
    """The validation scores' decile shares and band shares."""
    band_shares = {} if bands is None else {str(k): round(float(v), 6)
                                           for k, v in bands.value_counts(normalize=True).sort_index().items()}
    return ScoreReference(len(scores), tuple(score_shares(scores).round(6).tolist()), band_shares)
