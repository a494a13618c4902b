"""What rows must satisfy wherever they enter, derived from the SQLAlchemy tables themselves.

Each column's rule (type, required, length, range, allowed values, referenced table) is read from the
``Table``: nullability, ``String(n)``, ``Integer``, ``DateTime``/``Date``, ``ForeignKey`` and the value rule
declared on the column (``Column.info``, from which the schema also generates the ``CHECK`` constraints).
The checks are vectorised: a frame of raw values in, typed columns and a list of ``Problem``s out, which
:func:`problem_report` words for people. Timestamps with an offset become naive UTC; those without are
taken as UTC. The import (:func:`parse_rows`), transactions files, the KPI tables (:func:`conform_frame`)
and RFM summaries (:func:`check_rfm`) all go through these rules.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Literal

import numpy as np
import pandas as pd
from sqlalchemy import JSON, BigInteger, Date, DateTime, Float, Integer, Numeric, String, Table, Text

from features.crm.problems import EXAMPLES_SHOWN, NO_ROWS, Problem, problem_report, show_value
from features.errors import InvalidInput

Kind = Literal["text", "datetime", "date", "number", "integer", "json"]

BLANK_MEANS_EMPTY_TEXT: Mapping[str, frozenset[str]] = {"marketing_spend": frozenset({"campaign"})}
"""Key columns where an empty cell (or no column at all) means ``''``, e.g. spend not tied to a campaign."""

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class ColumnRule:
    """What one column must hold, read from the table definition."""

    name: str
    kind: Kind
    required: bool
    max_length: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    allowed: tuple[str, ...] | None = None
    blank_as: str | None = None
    references: tuple[str, str] | None = None

    @property
    def expected(self) -> str:
        """The rule's type in words, for messages."""
        if self.kind == "text":
            return f"text of at most {self.max_length} characters" if self.max_length else "text"
        return _EXPECTED[self.kind]


_EXPECTED = {
    "datetime": "a date-time in ISO 8601 (e.g. 2025-03-31T14:05:00 or 2025-03-31T14:05:00+02:00)",
    "date": "a calendar day in ISO 8601 (e.g. 2025-03-31)",
    "integer": "a whole number",
    "number": "a number",
    "json": "a JSON value",
}


def column_rules(table: Table) -> tuple[ColumnRule, ...]:
    """The rule of every column of ``table``, from its types, nullability, foreign keys and declared value rules."""
    blank = BLANK_MEANS_EMPTY_TEXT.get(table.name, frozenset())
    rules = []
    for column in table.columns:
        kind, (lowest, highest) = _kind(column.type, f"{table.name}.{column.name}")
        fks = list(column.foreign_keys)
        rules.append(
            ColumnRule(
                name=column.name,
                kind=kind,
                required=not column.nullable and column.name not in blank,
                max_length=getattr(column.type, "length", None) if kind == "text" else None,
                minimum=_tightest(max, lowest, column.info.get("minimum")),
                maximum=_tightest(min, highest, column.info.get("maximum")),
                allowed=column.info.get("allowed"),
                blank_as="" if column.name in blank else None,
                references=(fks[0].column.table.name, fks[0].column.name) if fks else None,
            )
        )
    return tuple(rules)


def _kind(type_, where: str) -> tuple[Kind, tuple[float | None, float | None]]:
    """The parse kind of a column type and the range the type itself can store."""
    if isinstance(type_, DateTime):
        return "datetime", (None, None)
    if isinstance(type_, Date):
        return "date", (None, None)
    if isinstance(type_, BigInteger):
        return "integer", _INT64
    if isinstance(type_, Integer):
        return "integer", _INT32
    if isinstance(type_, (Float, Numeric)):
        return "number", (None, None)
    if isinstance(type_, (String, Text)):
        return "text", (None, None)
    if isinstance(type_, JSON):
        return "json", (None, None)
    raise TypeError(f"no column rule for the type {type_!r} of {where}")


def _tightest(pick: Callable[..., float], *bounds: float | None) -> float | None:
    given = [b for b in bounds if b is not None]
    return pick(given) if given else None


def column_problems(table: Table, columns: Sequence[str], renamed: Mapping[str, str]) -> list[Problem]:
    """Missing required columns and columns ``table`` does not have; ``columns`` are the names after mapping."""
    rules = column_rules(table)
    known = [r.name for r in rules]
    unknown = [c for c in columns if c not in known]
    theirs = {ours: their for their, ours in renamed.items()}
    problems = []
    for rule in rules:
        if rule.required and rule.name not in columns:
            hint = _closest(rule.name, [theirs.get(c, c) for c in unknown])
            advice = f"; map the export's column onto it with --map '{hint or '<their column>'}={rule.name}'"
            problems.append(Problem(rule.name, "required column is missing" + advice, NO_ROWS))
    for name in unknown:
        original = theirs.get(name, name)
        hint = _closest(name, known)
        guess = f"did you mean {hint}? " if hint else f"{table.name} has {', '.join(known)}; "
        problems.append(Problem(
            original,
            f"unknown column; {guess}rename it with --map '{original}={hint or '<column>'}' "
            f"or skip it with --map '{original}='",
            NO_ROWS,
        ))
    return problems


def _closest(name: str, candidates: Sequence[str]) -> str | None:
    folded = {c.lower().replace(" ", "_").replace("-", "_"): c for c in candidates}
    match = difflib.get_close_matches(name.lower().replace(" ", "_").replace("-", "_"), list(folded), n=1, cutoff=0.6)
    return folded[match[0]] if match else None


def parse_rows(
    table: Table, raw: pd.DataFrame, now: pd.Timestamp | None
) -> tuple[pd.DataFrame, list[Problem]]:
    """Typed columns of ``table`` parsed from ``raw`` (export values, our column names), and every bad value.

    ``now`` is naive UTC; dates after it are problems (``None``: dates are not bounded). Each bad cell is
    reported once, under the first rule it breaks (type before range), so one typo is one problem.
    """
    return _parsed(column_rules(table), raw, now)


def _parsed(
    rules: Sequence[ColumnRule], raw: pd.DataFrame, now: pd.Timestamp | None
) -> tuple[pd.DataFrame, list[Problem]]:
    parsed: dict[str, pd.Series] = {}
    problems: list[Problem] = []
    for rule in rules:
        if rule.name not in raw.columns:
            if rule.blank_as is not None:
                parsed[rule.name] = pd.Series(rule.blank_as, index=raw.index, dtype="str")
            continue
        values = raw[rule.name] if rule.kind == "json" else _cleaned(raw[rule.name])
        given = values.notna().to_numpy()
        typed, checks = _parse(rule, values, given, now)
        if rule.required:
            checks.insert(0, ("a value (required)", ~given))
        problems += [Problem.at(rule.name, expected, np.asarray(bad, dtype=bool), values) for expected, bad in checks]
        if rule.blank_as is not None:
            typed = typed.where(given, rule.blank_as)
        parsed[rule.name] = typed
    frame = pd.DataFrame(parsed, index=raw.index)
    return frame, [p for p in problems if p.count]


def _parse(
    rule: ColumnRule, values: pd.Series, given: np.ndarray, now: pd.Timestamp | None
) -> tuple[pd.Series, list]:
    """The typed column and its ``(expected, bad rows)`` checks for one rule; ``given`` marks non-empty cells."""
    if rule.kind == "json":
        return values, []
    if rule.kind == "text":
        text = _text(values)
        checks = []
        if rule.max_length:
            checks.append((rule.expected, given & (text.str.len() > rule.max_length).to_numpy()))
        if rule.allowed:
            checks.append((f"one of: {', '.join(rule.allowed)}", given & ~text.isin(rule.allowed).to_numpy()))
        return text, checks
    if rule.kind in ("datetime", "date"):
        stamps = _as_naive_utc(values)
        parsed = stamps.notna().to_numpy()
        if rule.kind == "date":
            whole_day = parsed & (stamps == stamps.dt.normalize()).to_numpy()
            typed = stamps.dt.date.where(whole_day, None)
            checks = [(rule.expected, given & ~whole_day)]
            if now is not None:
                future = whole_day & (stamps > now.normalize()).to_numpy()
                checks.append((f"a day not in the future (today is {now:%Y-%m-%d} UTC)", future))
            return typed, checks
        checks = [(rule.expected, given & ~parsed)]
        if now is not None:
            future = parsed & (stamps > now).to_numpy()
            checks.append((f"a date not in the future (now is {now:%Y-%m-%d %H:%M} UTC)", future))
        return stamps, checks
    numbers = _as_number(values).to_numpy()
    checks, in_range = _number_checks(rule, numbers, given)
    typed = pd.Series(np.where(in_range, numbers, np.nan), index=values.index)
    return (typed.astype("Int64") if rule.kind == "integer" else typed), checks


def _number_checks(rule: ColumnRule, numbers: np.ndarray, given: np.ndarray) -> tuple[list, np.ndarray]:
    """The ``(expected, bad rows)`` checks of a number rule on parsed ``numbers``, and which rows pass them all."""
    ok = np.isfinite(numbers)
    if rule.kind == "integer":
        ok &= numbers == np.round(numbers)
    checks = [(rule.expected, given & ~ok)]
    in_range = ok.copy()
    if rule.minimum is not None:
        below = ok & (numbers < rule.minimum)
        checks.append((f"{rule.expected} >= {_number(rule.minimum)}", below))
        in_range &= ~below
    if rule.maximum is not None:
        above = ok & (numbers > rule.maximum)
        checks.append((f"{rule.expected} <= {_number(rule.maximum)}", above))
        in_range &= ~above
    return checks, in_range


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _cleaned(values: pd.Series) -> pd.Series:
    """Text (and object) values stripped, with empty cells missing; typed Parquet columns as they are."""
    if pd.api.types.is_string_dtype(values.dtype) or isinstance(values.dtype, pd.CategoricalDtype):
        text = _as_text(values)
        return text.where(text.str.len() > 0)
    return values


def _as_text(values: pd.Series) -> pd.Series:
    """Values as stripped text (``str`` dtype, missing stays missing); whole floats lose their ``.0``."""
    if pd.api.types.is_float_dtype(values.dtype):
        finite = values.dropna()
        if len(finite) and (finite == np.round(finite)).all():
            values = values.astype("Int64")
    if values.dtype != "str":
        values = values.astype(object).where(values.notna(), None).astype("str")
    return values.str.strip()


def _text(values: pd.Series) -> pd.Series:
    """Cleaned text as it is; typed values (numeric IDs from Parquet) as text."""
    return values if values.dtype == "str" else _as_text(values)


def _as_naive_utc(values: pd.Series) -> pd.Series:
    """Timestamps as naive UTC microseconds: offsets converted, values without an offset taken as UTC."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        if getattr(values.dt, "tz", None) is not None:
            values = values.dt.tz_convert("UTC").dt.tz_localize(None)
        return values.astype("datetime64[us]")
    parsed = pd.to_datetime(_text(values), format="ISO8601", utc=True, errors="coerce")
    return parsed.dt.tz_localize(None).astype("datetime64[us]")


def _as_number(values: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("float64")
    return pd.to_numeric(_text(values), errors="coerce").astype("float64")


def duplicate_keys(table: Table, frame: pd.DataFrame, within: str = "the file") -> list[Problem]:
    """Rows whose primary key appears more than once in ``frame`` (every occurrence is named).

    ``within`` says in messages what ``frame`` is: ``the file`` for an import.
    """
    key = [c.name for c in table.primary_key.columns]
    if not set(key) <= set(frame.columns):
        return []
    repeated = frame[key].duplicated(keep=False).to_numpy() & frame[key].notna().all(axis=1).to_numpy()
    rows = np.flatnonzero(repeated)
    if not len(rows):
        return []
    label = key[0] if len(key) == 1 else "(" + ", ".join(key) + ")"
    shown = frame[key].iloc[rows[:EXAMPLES_SHOWN]].astype(str).agg(" / ".join, axis=1).tolist()
    return [Problem(label, f"each {label} once in {within}", rows, tuple(map(show_value, shown)))]


_FRAME_DTYPES: Mapping[Kind, object] = {"datetime": "datetime64[ns]", "date": "datetime64[ns]", "number": "float64",
                                        "integer": "int64", "text": "str", "json": object}


def conform_frame(table: Table, frame: pd.DataFrame, required: Sequence[str] = ()) -> pd.DataFrame:
    """``frame`` with every column of ``table`` checked and typed, or ``InvalidInput`` naming column and rows.

    For frames built in code or read from the database (the KPI tables). The ``required`` columns must be
    there; other columns of ``table`` that are missing are filled with typed nulls (``''`` where blank means
    empty), and columns ``table`` does not have are kept as they are. Values are checked as an import checks
    them, except that dates may be in the future, and the primary key must be unique. Times and days become
    ``datetime64[ns]``, numbers ``float64``, whole numbers ``int64`` (``float64`` when some are missing).
    """
    expected = f"required column is missing; expected at least {', '.join(required)}"
    problems = [Problem(name, expected, NO_ROWS) for name in required if name not in frame.columns]
    given = frame[[c for c in frame.columns if c in table.c]].reset_index(drop=True)
    typed, bad_values = parse_rows(table, given, None)
    problems += bad_values + duplicate_keys(table, typed, within="the table")
    if problems:
        located = partial(_located, frame.index, "row")
        raise InvalidInput(problem_report(table.name, problems, located, outcome="the table was not used"))
    out = frame.copy()
    for rule in column_rules(table):
        values = typed[rule.name] if rule.name in typed else pd.Series(None, index=typed.index, dtype=object)
        gaps = rule.kind == "integer" and values.isna().any()
        out[rule.name] = values.astype("float64" if gaps else _FRAME_DTYPES[rule.kind]).array
    return out


def _located(labels: pd.Index | np.ndarray, noun: str, rows: np.ndarray) -> list[str]:
    """``row 7`` for the row at position 7 when ``labels`` is the frame's index, ``customer c7`` by ids."""
    return [f"{noun} {label}" for label in labels[rows]]


RFM_RULES: tuple[ColumnRule, ...] = (
    ColumnRule("frequency", "integer", True, minimum=0),
    ColumnRule("recency", "number", True, minimum=0),
    ColumnRule("T", "number", True, minimum=0),
    ColumnRule("monetary_value", "number", True, minimum=0),
)
"""An RFM summary's columns (``schema.RFM_COLUMNS``) one by one; :func:`check_rfm` adds the rules between them."""


def check_rfm(
    rfm: pd.DataFrame, source: str, outcome: str, frequency: str = "frequency", recency: str = "recency",
    age: str = "T", monetary: str | None = "monetary_value",
) -> None:
    """Raise ``InvalidInput`` naming every broken rule of an RFM summary, its column and customers.

    The columns are named by the frame's own names (``age`` is T; ``monetary`` None is not checked). Rules:
    frequency a whole number >= 0; recency, T and monetary value numbers >= 0 (all present and finite);
    recency <= T; recency 0 when frequency is 0. Customers are named by ``customer_id`` if the frame has
    it, else by index label; ``source`` and ``outcome`` begin and end the message (see :func:`problem_report`).
    """
    names = {rule.name: theirs for rule, theirs in zip(RFM_RULES, (frequency, recency, age, monetary)) if theirs}
    rules = [rule for rule in RFM_RULES if rule.name in names]
    problems = [Problem(name, "required column is missing", NO_ROWS) for name in names.values() if name not in rfm]
    if not problems and _rfm_holds(rules, {r.name: _as_number(rfm[names[r.name]]).to_numpy() for r in rules}):
        return
    if not problems:
        raw = pd.DataFrame({r.name: rfm[names[r.name]].to_numpy() for r in rules})
        typed, problems = _parsed(rules, raw, None)
        x, r, t = (typed[c].to_numpy(dtype="float64", na_value=np.nan) for c in ("frequency", "recency", "T"))
        after_end = r > t
        not_zero = (x == 0) & (r != 0) & ~np.isnan(r) & ~after_end
        problems += [p for p in (
            Problem.at("recency", f"a number <= {age} (the last purchase cannot be after the observation end)",
                     after_end, raw["recency"]),
            Problem.at("recency", f"0 when {frequency} is 0", not_zero, raw["recency"]),
        ) if p.count]
        problems = [replace(p, column=names[p.column]) for p in problems]
    if problems:
        labels, noun = (rfm["customer_id"].to_numpy(), "customer") if "customer_id" in rfm else (rfm.index, "row")
        raise InvalidInput(problem_report(source, problems, partial(_located, labels, noun), outcome=outcome))


def _rfm_holds(rules: Sequence[ColumnRule], numbers: Mapping[str, np.ndarray]) -> bool:
    """Whether every rule of :func:`check_rfm` holds: a quick verdict on the numbers, before any message is built."""
    if not all(np.isfinite(x).all() for x in numbers.values()):
        return False
    everyone = np.ones(len(numbers["frequency"]), dtype=bool)
    if any(bad.any() for rule in rules for _, bad in _number_checks(rule, numbers[rule.name], everyone)[0]):
        return False
    x, r, t = numbers["frequency"], numbers["recency"], numbers["T"]
    return not ((r > t).any() or ((x == 0) & (r != 0)).any())


def unknown_references(
    table: Table, frame: pd.DataFrame, existing: Callable[[str, str, np.ndarray], np.ndarray]
) -> list[Problem]:
    """Rows whose foreign keys point at nothing, in the database (``existing``) or, if self-referencing, the file.

    ``existing(table, column, values)`` returns which of the distinct ``values`` the database holds.
    """
    problems = []
    for rule in column_rules(table):
        if rule.references is None or rule.name not in frame.columns:
            continue
        target_table, target_column = rule.references
        values = frame[rule.name]
        distinct = values.dropna().unique()
        known = pd.Index(existing(target_table, target_column, np.asarray(distinct, dtype=object)))
        if target_table == table.name and target_column in frame.columns:
            known = known.append(pd.Index(frame[target_column].dropna()))
        bad = values.notna().to_numpy() & ~values.isin(known).to_numpy()
        expected = f"a {target_column} that exists in {target_table} (import {target_table} first)"
        problems.append(Problem.at(rule.name, expected, bad, values))
    return [p for p in problems if p.count]
