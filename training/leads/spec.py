"""The model's input columns: which features, the categories learned in training, and the float matrix.

Categoricals are cast here (category -> code from the training categories; missing and unseen
categories become missing, never an error), so the booster only ever sees a float matrix, and the
same cast runs at training and at scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from features.errors import InvalidInput
from features.lead_features import BEHAVIOUR_FEATURES, PROFILE_FEATURES, LeadFeatureArrays

ROW_COLUMN = "row"
"""Output id column of models trained without an id column: the 1-based row number of the input."""
SMALL_FRAME = 4_000
"""Up to this many rows categorical codes come from a dict lookup: pandas' per-call overhead (~0.23 ms a column)
outweighs its speed per row below ~4,000 rows (1,000 rows: 0.09 ms by dict, 0.24 ms by pandas; 10,000: 0.89 and
0.57 ms)."""


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
