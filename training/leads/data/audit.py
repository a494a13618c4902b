"""The column audit of a lead table before training: ids, one-value columns and suspected leakage.

Pure functions, a DataFrame in and an :class:`AuditReport` out. The rules (README, "Your own lead data"):

* **one value**: a column holding a single value (missing counts as a value) is dropped;
* **id-like**: an integer column (a CSV column written as integers) or a text column, never a float one, is
  dropped when its values are unique per row; or more than 95% unique and monotone in row order; or more
  than 95% unique and named like an id (last word ``id``, ``number``, ``no``, ``nr``, ``uuid``...: ``LeadID``,
  ``account_no``, not ``amount_paid``);
* **too many categories**: a text column with more distinct values than max(50, rows / 2) is dropped;
* **suspected leakage**, judged on the training split only: a column whose own holdout ROC AUC is at least
  0.95; or at least 0.85 and at least 0.10 above every other column not already suspected; or one filled
  for at least half of one class and at most a tenth of the other. It is named in a warning with the
  evidence and left out unless kept (``--keep COL``).

A column's own holdout AUC: the training rows are split (stratified, 70/30, seeded); on the 70% each of the
column's values (a text value, or a quantile bin of numbers, up to 20) gets its conversion rate, shrunk to
the overall rate by 10 rows' weight, missing being a value of its own; the 30% are ranked by the rate of
their value (unseen values get the overall rate) and the AUC of that ranking is the column's. It says how
far the column alone separates converters, not whether its value was known in time: a column filled in
after the outcome (sales' status tags, a close reason) separates them almost perfectly, which is the sign.
On the CRM, features are point-in-time by construction, so there the audit only warns
(:func:`audit_features`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

ID_UNIQUE_SHARE = 0.95
LEAK_AUC = 0.95
LEAK_AUC_ALONE = 0.85
LEAK_AUC_MARGIN = 0.10
FILLED_ONE_CLASS = 0.5
FILLED_OTHER_CLASS = 0.1
MAX_CATEGORIES = 50
INNER_HOLDOUT = 0.3
NUMBER_BINS = 20
SHRINK_ROWS = 10.0
ID_WORDS = frozenset({"id", "ids", "uuid", "guid", "number", "num", "no", "nr"})
TIME_WORDS = frozenset({"ts", "time", "timestamp", "date", "epoch", "created", "updated", "at"})


@dataclass(frozen=True)
class AuditReport:
    """What the audit found: the columns to train on, the ones dropped (column -> reason) and why.

    ``leaky``: every column suspected of leakage with its evidence, left out or kept; ``kept``: the suspected
    ones kept anyway (``--keep``); ``column_auc``: each judged column's own holdout ROC AUC on the training
    split; ``warnings`` and ``notes``: sentences for people (warnings for leakage, notes for the rest).
    """

    features: tuple[str, ...]
    dropped: dict[str, str] = field(default_factory=dict)
    leaky: dict[str, str] = field(default_factory=dict)
    kept: tuple[str, ...] = ()
    column_auc: dict[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        """The JSON-ready report (``--json`` and the MLflow run)."""
        return {"features_used": list(self.features), "dropped": dict(self.dropped), "leaky": dict(self.leaky),
                "kept": list(self.kept), "column_auc": {k: round(v, 4) for k, v in self.column_auc.items()},
                "warnings": list(self.warnings), "notes": list(self.notes)}


def is_integer_like(values: pd.Series) -> bool:
    """An integer column (``read_lead_table`` reads a CSV column written as integers as one); bools are not, and
    floats never are, whole-valued or not (amounts, scores)."""
    return pd.api.types.is_integer_dtype(values) and not pd.api.types.is_bool_dtype(values)


def named_like_id(name: str) -> bool:
    """Whether the column's last word is an id or number word: ``lead_id``, ``LeadID``, ``Prospect Number``,
    ``account_no``; not ``amount_paid`` or ``valid`` (words are split at punctuation, spaces and camel case)."""
    words = _words(name)
    return bool(words) and words[-1] in ID_WORDS


def _words(name: str) -> list[str]:
    """A column name's words, lower case, split at punctuation, spaces and camel case."""
    return [word.lower() for word in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)]


def is_number(values: pd.Series) -> bool:
    """A numeric column, bools aside (they are categories)."""
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def is_text(values: pd.Series) -> bool:
    """A column of text (object or string dtype)."""
    return values.dtype == object or isinstance(values.dtype, pd.StringDtype)


def _monotone(values: pd.Series) -> bool:
    """Non-decreasing or non-increasing in row order (missing values skipped); text that is all numbers is
    compared as numbers, other text as text."""
    present = values.dropna()
    if len(present) < 2:
        return False
    if is_text(present):
        numbers = pd.to_numeric(present, errors="coerce")
        present = numbers if numbers.notna().all() else present.astype("str")
    return bool(present.is_monotonic_increasing or present.is_monotonic_decreasing)


def _dates(values: pd.Series) -> bool:
    """Whether a text column holds dates (judged on its first 50 values)."""
    import warnings

    sample = values.dropna().head(50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return len(sample) > 0 and bool(parsed.notna().all())


def _times(name: str, values: pd.Series) -> bool:
    """Whether a column looks like points in time: text dates, or integers named like a time (``created_ts``)."""
    if is_text(values):
        return _dates(values)
    return is_integer_like(values) and any(word in TIME_WORDS for word in _words(name))


def id_like_reason(name: str, values: pd.Series) -> str | None:
    """Why ``values`` look like an id (see the module doc), or None."""
    if not (is_integer_like(values) or is_text(values)) or len(values) == 0:
        return None
    distinct = int(values.nunique(dropna=True))
    share = distinct / len(values)
    kind = "integer" if is_integer_like(values) else "text"
    if distinct == len(values) and values.notna().all():
        return f"id-like: {kind}, a different value on every row"
    if share > ID_UNIQUE_SHARE and _monotone(values):
        return f"id-like: {kind}, {share:.1%} distinct and in row order"
    if share > ID_UNIQUE_SHARE and named_like_id(name):
        return f"id-like: {kind} named like an id or number, {share:.1%} distinct"
    return None


def structural_drops(frame: pd.DataFrame, columns: Iterable[str]) -> dict[str, str]:
    """Columns of the whole file (in file order) dropped for what they are: one value, id-like, or too many
    categories for a category (column -> reason)."""
    dropped = {}
    limit = max(MAX_CATEGORIES, len(frame) // 2)
    for name in columns:
        values = frame[name]
        distinct = int(values.nunique(dropna=False))
        if distinct <= 1:
            only = values.iloc[0] if len(values) else None
            dropped[name] = f"one value: every row is {'empty' if pd.isna(only) else repr(str(only))}"
            continue
        reason = id_like_reason(name, values)
        if reason is not None:
            dropped[name] = reason + (" (dates: --time-col to hold out the latest period)"
                                      if _times(name, values) else "")
        elif is_text(values) and values.nunique(dropna=True) > limit:
            dropped[name] = (f"too many distinct values for a category: {values.nunique(dropna=True):,} "
                             f"in {len(values):,} rows")
    return dropped


def _value_codes(fit: pd.Series, judge: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of each value (text, or a quantile bin of numbers learned on ``fit``) for both parts;
    missing is a code of its own, values unseen in ``fit`` get -1."""
    if is_number(fit):
        a, b = fit.to_numpy(dtype="float64"), judge.to_numpy(dtype="float64")
        present = a[~np.isnan(a)]
        edges = np.unique(np.quantile(present, np.linspace(0, 1, NUMBER_BINS + 1)[1:-1])) if len(present) else []
        bins = len(edges) + 1

        def code(x: np.ndarray) -> np.ndarray:
            return np.where(np.isnan(x), bins, np.searchsorted(edges, x, side="right"))

        return code(a), code(b)
    a, b = fit.astype("str").fillna("\0missing"), judge.astype("str").fillna("\0missing")
    index = pd.Index(pd.unique(a))
    return index.get_indexer(a), index.get_indexer(b)


def own_auc(values: pd.Series, outcome: np.ndarray, seed: int = 0) -> float:
    """The column's own holdout ROC AUC on these rows (see the module doc); NaN when the rows are too few."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    y = np.asarray(outcome, dtype="int8")
    if min(int(y.sum()), int(len(y) - y.sum())) < 4:
        return float("nan")
    rows = np.arange(len(y))
    fit, judge = train_test_split(rows, test_size=INNER_HOLDOUT, stratify=y, random_state=seed)
    fit_codes, judge_codes = _value_codes(values.iloc[fit], values.iloc[judge])
    prior = float(y[fit].mean())
    size = int(max(fit_codes.max(initial=-1), judge_codes.max(initial=-1))) + 1
    counts = np.bincount(fit_codes, minlength=size).astype("float64")
    positives = np.bincount(fit_codes, weights=y[fit], minlength=size)
    rate = (positives + prior * SHRINK_ROWS) / (counts + SHRINK_ROWS)
    score = np.where(judge_codes >= 0, rate[np.maximum(judge_codes, 0)], prior)
    return float(roc_auc_score(y[judge], score))


def filled_shares(values: pd.Series, outcome: np.ndarray) -> tuple[float, float]:
    """Shares of converters and of the others for whom the column is filled (not missing)."""
    filled = values.notna().to_numpy()
    y = np.asarray(outcome).astype(bool)
    return float(filled[y].mean()) if y.any() else 0.0, float(filled[~y].mean()) if (~y).any() else 0.0


def leakage(train: pd.DataFrame, outcome: np.ndarray, columns: Sequence[str],
            seed: int = 0) -> tuple[dict[str, str], dict[str, float]]:
    """Columns suspected of leakage on the training rows (column -> evidence) and every column's own AUC."""
    aucs = {name: own_auc(train[name], outcome, seed) for name in columns}
    suspects: dict[str, str] = {}
    for name in columns:
        auc = aucs[name]
        if auc >= LEAK_AUC:
            suspects[name] = f"on its own it ranks converters with ROC AUC {auc:.3f} (>= {LEAK_AUC})"
    honest = {name: auc for name, auc in aucs.items() if name not in suspects and not np.isnan(auc)}
    for name, auc in honest.items():
        others = [other for key, other in honest.items() if key != name]
        if auc >= LEAK_AUC_ALONE and others and auc >= max(others) + LEAK_AUC_MARGIN:
            best = max(honest, key=lambda key: honest[key] if key != name else -1.0)
            suspects[name] = (f"on its own it ranks converters with ROC AUC {auc:.3f}, {auc - honest[best]:.2f} "
                              f"above the next best column ({best}: {honest[best]:.3f})")
    for name in columns:
        converters, others = filled_shares(train[name], outcome)
        high, low = max(converters, others), min(converters, others)
        if high >= FILLED_ONE_CLASS and low <= FILLED_OTHER_CLASS:
            filled = (f"filled for {converters:.0%} of converters and {others:.0%} of the others: it may have "
                      "been recorded after the outcome")
            suspects[name] = f"{suspects[name]}; {filled}" if name in suspects else filled
    return {name: suspects[name] for name in columns if name in suspects}, aucs


def audit_table(frame: pd.DataFrame, train_rows: np.ndarray, outcome: np.ndarray, columns: Sequence[str],
                keep: Sequence[str] = (), seed: int = 0) -> AuditReport:
    """Audit a flat file's candidate ``columns``: drop one-value, id-like and too-many-category columns (whole
    file, in file order), then judge leakage on the training rows only (``train_rows``: their positions,
    ``outcome``: their 0/1 outcomes). A column in ``keep`` stays whatever is found (and still gets its warning
    or note)."""
    keep = tuple(keep)
    structural = structural_drops(frame, columns)
    judged = [c for c in columns if c not in structural or c in keep]
    train = frame.iloc[np.asarray(train_rows)]
    suspects, aucs = leakage(train, outcome, judged, seed)
    dropped = {c: reason for c, reason in structural.items() if c not in keep}
    dropped.update({c: f"suspected leakage: {evidence}" for c, evidence in suspects.items() if c not in keep})
    kept = tuple(c for c in judged if c in keep and (c in suspects or c in structural))
    features = tuple(c for c in columns if c not in dropped)
    warnings = tuple(f"suspected leakage in column {c!r}: {evidence}; "
                     + ("kept, as --keep asked: the holdout figures may be inflated" if c in keep
                        else f"left out (--keep {c} to use it)")
                     for c, evidence in suspects.items())
    notes = tuple(f"column {c!r} {'kept (--keep) though ' if c in keep else 'dropped: '}{reason}"
                  for c, reason in structural.items())
    return AuditReport(features, dropped, suspects, kept, aucs, warnings, notes)


def audit_features(train: pd.DataFrame, outcome: np.ndarray, columns: Sequence[str], seed: int = 0) -> AuditReport:
    """The leakage rules on features that are point-in-time by construction (the CRM's): nothing is dropped,
    suspects only get a warning."""
    suspects, aucs = leakage(train, outcome, columns, seed)
    warnings = tuple(f"feature {c!r} would be suspected of leakage in a flat file: {evidence}; CRM features are "
                     "computed as of each snapshot, so it stays, but check how that field is filled"
                     for c, evidence in suspects.items())
    return AuditReport(tuple(columns), {}, suspects, tuple(suspects), aucs, warnings)
