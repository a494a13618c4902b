"""What a CRM export must satisfy before it is loaded, derived from the SQLAlchemy tables themselves.

Each column's rule (type, required, length, range, allowed values, referenced table) is read from the
``Table``: nullability, ``String(n)``, ``Integer``, ``DateTime``/``Date``, ``ForeignKey`` and the
``CHECK`` constraints. The checks are vectorised: a frame of raw export values in, typed columns and
a list of ``Problem``s out. Timestamps with an offset become naive UTC; those without are taken as UTC.
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from sqlalchemy import BigInteger, CheckConstraint, Date, DateTime, Float, Integer, Numeric, String, Table, Text

Kind = Literal["text", "datetime", "date", "number", "integer"]

BLANK_MEANS_EMPTY_TEXT: Mapping[str, frozenset[str]] = {"marketing_spend": frozenset({"campaign"})}
"""Key columns where an empty cell (or no column at all) means ``''``, e.g. spend not tied to a campaign."""

EXAMPLES_SHOWN = 5
"""How many offending rows a message quotes per problem."""

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_CLAUSE = re.compile(r"^(?:(?P<guard>\w+) IS NULL OR )?(?P<column>\w+) (?P<op>>=|<=|IN) (?P<rhs>.+)$")


@dataclass(frozen=True)
class ColumnRule:
    """What one column of an export must hold, read from the table definition."""

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
}


@dataclass(frozen=True)
class Problem:
    """One class of bad values: the column, what was expected, at which rows (0-based), quoting the first few.

    A problem without rows is about the file's columns themselves; ``expected`` then says what is wrong.
    """

    column: str
    expected: str
    rows: np.ndarray
    examples: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        return len(self.rows)


def column_rules(table: Table) -> tuple[ColumnRule, ...]:
    """The import rule of every column of ``table``, from its types, nullability, foreign keys and CHECKs."""
    bounds = _check_bounds(table)
    blank = BLANK_MEANS_EMPTY_TEXT.get(table.name, frozenset())
    rules = []
    for column in table.columns:
        kind, (lowest, highest) = _kind(column.type, f"{table.name}.{column.name}")
        checked = bounds.get(column.name, {})
        fks = list(column.foreign_keys)
        rules.append(
            ColumnRule(
                name=column.name,
                kind=kind,
                required=not column.nullable and column.name not in blank,
                max_length=getattr(column.type, "length", None) if kind == "text" else None,
                minimum=_tightest(max, lowest, checked.get("minimum")),
                maximum=_tightest(min, highest, checked.get("maximum")),
                allowed=checked.get("allowed"),
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
    raise TypeError(f"import has no rule for the type {type_!r} of {where}")


def _tightest(pick: Callable[..., float], *bounds: float | None) -> float | None:
    given = [b for b in bounds if b is not None]
    return pick(given) if given else None


def _check_bounds(table: Table) -> dict[str, dict]:
    """Per column: minimum, maximum and allowed values stated by the table's CHECK constraints."""
    bounds: dict[str, dict] = {}
    for constraint in table.constraints:
        if not isinstance(constraint, CheckConstraint):
            continue
        for clause in str(constraint.sqltext).split(" AND "):
            match = _CLAUSE.match(clause.strip())
            if match is None or match["guard"] not in (None, match["column"]):
                raise ValueError(f"import cannot check {table.name}.{constraint.name}: {clause!r}")
            rule = bounds.setdefault(match["column"], {})
            if match["op"] == "IN":
                values = ast.literal_eval(match["rhs"])
                rule["allowed"] = (values,) if isinstance(values, str) else tuple(values)
            else:
                rule["minimum" if match["op"] == ">=" else "maximum"] = float(match["rhs"])
    return bounds


def column_problems(table: Table, columns: Sequence[str], renamed: Mapping[str, str]) -> list[Problem]:
    """Missing required columns and columns ``table`` does not have; ``columns`` are the names after mapping."""
    rules = column_rules(table)
    known = [r.name for r in rules]
    unknown = [c for c in columns if c not in known]
    theirs = {ours: their for their, ours in renamed.items()}
    none = np.empty(0, dtype=np.int64)
    problems = []
    for rule in rules:
        if rule.required and rule.name not in columns:
            hint = _closest(rule.name, [theirs.get(c, c) for c in unknown])
            advice = f"; map the export's column onto it with --map '{hint or '<their column>'}={rule.name}'"
            problems.append(Problem(rule.name, "required column is missing" + advice, none))
    for name in unknown:
        original = theirs.get(name, name)
        hint = _closest(name, known)
        guess = f"did you mean {hint}? " if hint else f"{table.name} has {', '.join(known)}; "
        problems.append(Problem(
            original,
            f"unknown column; {guess}rename it with --map '{original}={hint or '<column>'}' "
            f"or skip it with --map '{original}='",
            none,
        ))
    return problems


def _closest(name: str, candidates: Sequence[str]) -> str | None:
    folded = {c.lower().replace(" ", "_").replace("-", "_"): c for c in candidates}
    match = difflib.get_close_matches(name.lower().replace(" ", "_").replace("-", "_"), list(folded), n=1, cutoff=0.6)
    return folded[match[0]] if match else None


def parse_rows(table: Table, raw: pd.DataFrame, now: pd.Timestamp) -> tuple[pd.DataFrame, list[Problem]]:
    """Typed columns of ``table`` parsed from ``raw`` (export values, our column names), and every bad value.

    ``now`` is naive UTC; dates after it are problems. Each bad cell is reported once, under the first
    rule it breaks (type before range), so one typo is one problem.
    """
    parsed: dict[str, pd.Series] = {}
    problems: list[Problem] = []
    for rule in column_rules(table):
        if rule.name not in raw.columns:
            if rule.blank_as is not None:
                parsed[rule.name] = pd.Series(rule.blank_as, index=raw.index, dtype="str")
            continue
        values = _cleaned(raw[rule.name])
        given = values.notna().to_numpy()
        typed, checks = _parse(rule, values, given, now)
        if rule.required:
            checks.insert(0, ("a value (required)", ~given))
        problems += [_problem(rule.name, expected, np.asarray(bad, dtype=bool), values) for expected, bad in checks]
        if rule.blank_as is not None:
            typed = typed.where(given, rule.blank_as)
        parsed[rule.name] = typed
    frame = pd.DataFrame(parsed, index=raw.index)
    return frame, [p for p in problems if p.count]


def _parse(rule: ColumnRule, values: pd.Series, given: np.ndarray, now: pd.Timestamp) -> tuple[pd.Series, list]:
    """The typed column and its ``(expected, bad rows)`` checks for one rule; ``given`` marks non-empty cells."""
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
            future = whole_day & (stamps > now.normalize()).to_numpy()
            typed = stamps.dt.date.where(whole_day, None)
            not_future = f"a day not in the future (today is {now:%Y-%m-%d} UTC)"
            return typed, [(rule.expected, given & ~whole_day), (not_future, future)]
        future = parsed & (stamps > now).to_numpy()
        not_future = f"a date not in the future (now is {now:%Y-%m-%d %H:%M} UTC)"
        return stamps, [(rule.expected, given & ~parsed), (not_future, future)]
    numbers = _as_number(values)
    ok = np.isfinite(numbers.to_numpy())
    if rule.kind == "integer":
        ok &= (numbers == np.round(numbers)).to_numpy()
    checks = [(rule.expected, given & ~ok)]
    in_range = ok.copy()
    if rule.minimum is not None:
        below = ok & (numbers < rule.minimum).to_numpy()
        checks.append((f"{rule.expected} >= {_number(rule.minimum)}", below))
        in_range &= ~below
    if rule.maximum is not None:
        above = ok & (numbers > rule.maximum).to_numpy()
        checks.append((f"{rule.expected} <= {_number(rule.maximum)}", above))
        in_range &= ~above
    typed = numbers.where(in_range)
    return (typed.astype("Int64") if rule.kind == "integer" else typed), checks


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


def _problem(column: str, expected: str, bad: np.ndarray, values: pd.Series) -> Problem:
    rows = np.flatnonzero(bad)
    examples = tuple(_show(v) for v in values.iloc[rows[:EXAMPLES_SHOWN]].tolist())
    return Problem(column, expected, rows, examples)


def _show(value: object) -> str:
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return "(empty)"
    text = str(value)
    return repr(text if len(text) <= 40 else text[:37] + "...")


def duplicate_keys(table: Table, frame: pd.DataFrame) -> list[Problem]:
    """Rows whose primary key appears more than once in the file (every occurrence is named)."""
    key = [c.name for c in table.primary_key.columns]
    if not set(key) <= set(frame.columns):
        return []
    repeated = frame[key].duplicated(keep=False).to_numpy() & frame[key].notna().all(axis=1).to_numpy()
    rows = np.flatnonzero(repeated)
    if not len(rows):
        return []
    label = key[0] if len(key) == 1 else "(" + ", ".join(key) + ")"
    shown = frame[key].iloc[rows[:EXAMPLES_SHOWN]].astype(str).agg(" / ".join, axis=1).tolist()
    return [Problem(label, f"each {label} once in the file", rows, tuple(map(_show, shown)))]


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
        problems.append(_problem(rule.name, expected, bad, values))
    return [p for p in problems if p.count]


def problem_report(
    source: str, problems: Sequence[Problem], locate: Callable[[np.ndarray], Sequence[str]],
    renamed: Mapping[str, str] | None = None,
) -> str:
    """The multi-line message for ``problems``: a summary line, then one line per problem with rows and values.

    ``locate`` turns 0-based row positions into what the user sees (``line 7`` in a CSV, ``row 6`` in Parquet);
    ``renamed`` maps export column names to ours so a mapped column is named both ways.
    """
    theirs = {ours: their for their, ours in (renamed or {}).items() if ours}
    rows = np.unique(np.concatenate([p.rows for p in problems])) if problems else np.empty(0)
    n = len(problems)
    summary = f"{source}: {n} problem{'s' if n != 1 else ''}"
    if len(rows):
        summary += f" in {len(rows):,} row{'s' if len(rows) != 1 else ''}"
    lines = [summary + "; nothing was imported"]
    for problem in problems:
        name = problem.column
        if name in theirs and theirs[name] != name:
            name = f"{name} (column {theirs[name]!r} in the file)"
        if not problem.count:
            lines.append(f"  - {name}: {problem.expected}")
            continue
        where = locate(problem.rows[:EXAMPLES_SHOWN])
        quoted = ", ".join(f"{at} {value}" for at, value in zip(where, problem.examples))
        more = f" and {problem.count - len(where):,} more" if problem.count > len(where) else ""
        plural = "s" if problem.count != 1 else ""
        lines.append(f"  - {name}: expected {problem.expected}; {problem.count:,} row{plural}: {quoted}{more}")
    return "\n".join(lines)
