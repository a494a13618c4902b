"""Rows checked against the column rules (:mod:`features.crm.rules`) wherever they enter.

The checks are vectorised: a frame of raw values in, typed columns and a list of ``Problem``s out, which
:func:`problem_report` words for people. Timestamps with an offset become naive UTC; those without are
taken as UTC. The import (:func:`parse_rows`), transactions files, the KPI tables (:func:`conform_frame`)
and RFM summaries (:func:`check_rfm`) all go through these rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.arrays import ArrowStringArray
from sqlalchemy import Table

from features.crm.problems import EXAMPLES_SHOWN, NO_ROWS, Problem, problem_report, show_value
from features.crm.rules import ColumnRule, Kind, Plausibility, column_rules, plausible_rules
from features.errors import InvalidInput

CONTROL_CHARACTERS = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"
"""C0 control characters (NUL and the others below U+0020) but tab, line feed and carriage return."""
_LINE_BYTES = np.array([0x09, 0x0A, 0x0D], dtype=np.uint8)
_PLAIN_TEXT = "text without control characters (NUL, or another below U+0020 but tab, line feed and carriage return)"


def parse_rows(
    table: Table, raw: pd.DataFrame, plausibility: Plausibility | None
) -> tuple[pd.DataFrame, list[Problem]]:
    """Typed columns of ``table`` parsed from ``raw`` (export values, our column names), and every bad value.

    With ``plausibility`` values must also be plausible (outside data); with ``None`` only what the columns
    can store is checked (dates are not bounded). Each bad cell is reported once, under the first rule it
    breaks (type before range), so one typo is one problem.
    """
    rules = column_rules(table) if plausibility is None else plausible_rules(table, plausibility)
    return _parsed(rules, raw)


def _parsed(rules: Sequence[ColumnRule], raw: pd.DataFrame) -> tuple[pd.DataFrame, list[Problem]]:
    parsed: dict[str, pd.Series] = {}
    problems: list[Problem] = []
    for rule in rules:
        if rule.name not in raw.columns:
            if rule.blank_as is not None:
                parsed[rule.name] = pd.Series(rule.blank_as, index=raw.index, dtype="str")
            continue
        values = raw[rule.name] if rule.kind == "json" else _cleaned(raw[rule.name], stripped=not rule.identifier)
        given = values.notna().to_numpy()
        typed, checks = _parse(rule, values, given)
        if rule.required:
            checks.insert(0, ("a value (required)", ~given))
        problems += [Problem.at(rule.name, expected, np.asarray(bad, dtype=bool), values) for expected, bad in checks]
        if rule.blank_as is not None:
            typed = typed.where(given, rule.blank_as)
        parsed[rule.name] = typed
    frame = pd.DataFrame(parsed, index=raw.index)
    return frame, [p for p in problems if p.count]


def _parse(rule: ColumnRule, values: pd.Series, given: np.ndarray) -> tuple[pd.Series, list]:
    """The typed column and its ``(expected, bad rows)`` checks for one rule; ``given`` marks non-empty cells."""
    if rule.kind == "json":
        return values, []
    if rule.kind == "text":
        text = _text(values)
        checks = _text_checks(rule, text, given)
        bad = np.logical_or.reduce([rows for _, rows in checks]) if checks else None
        return (text.where(~bad) if bad is not None and bad.any() else text), checks
    if rule.kind in ("datetime", "date"):
        stamps = _as_naive_utc(values)
        valid = stamps.notna().to_numpy()
        typed = stamps
        if rule.kind == "date":
            valid = valid & (stamps == stamps.dt.normalize()).to_numpy()
            typed = stamps.dt.date.where(valid, None)
        return typed, [(rule.expected, given & ~valid), *_time_checks(rule, stamps, valid)]
    numbers = _as_number(values).to_numpy()
    checks, in_range = _number_checks(rule, numbers, given)
    typed = pd.Series(np.where(in_range, numbers, np.nan), index=values.index)
    return (typed.astype("Int64") if rule.kind == "integer" else typed), checks


def _text_checks(rule: ColumnRule, text: pd.Series, given: np.ndarray) -> list:
    """A text rule's checks, each on the cells that passed the ones before: one problem per bad cell."""
    checks, ok = [], given.copy()
    if rule.plain_text:
        controls = ok & _control_characters(text)
        checks.append((_PLAIN_TEXT, controls))
        ok &= ~controls
    if rule.max_length:
        too_long = ok & (text.str.len() > rule.max_length).to_numpy()
        checks.append((rule.expected, too_long))
        ok &= ~too_long
    if rule.allowed:
        checks.append((f"one of: {', '.join(rule.allowed)}", ok & ~text.isin(rule.allowed).to_numpy()))
    return checks


def _control_characters(text: pd.Series) -> np.ndarray:
    """Which cells of ``text`` hold a control character (:data:`CONTROL_CHARACTERS`).

    Arrow-backed text is first scanned as bytes, a hundredth of the regex's time: in UTF-8 no byte of a longer
    character is below 0x80, so a column without bytes below 0x20 other than tab, LF and CR has none. Only
    a column that has one is searched cell by cell.
    """
    arrow = pa.array(text.array) if isinstance(text.array, ArrowStringArray) else None
    parts = arrow.chunks if isinstance(arrow, pa.ChunkedArray) else [arrow]
    if arrow is not None and all(pa.types.is_string(p.type) or pa.types.is_large_string(p.type) for p in parts):
        low = [b[b < 0x20] for b in (np.frombuffer(p.buffers()[2] or b"", np.uint8) for p in parts)]
        if not any(np.isin(b, _LINE_BYTES, invert=True).any() for b in low):
            return np.zeros(len(text), dtype=bool)
    return text.str.contains(CONTROL_CHARACTERS, regex=True).fillna(False).to_numpy(dtype=bool)


def _time_checks(rule: ColumnRule, stamps: pd.Series, valid: np.ndarray) -> list:
    """The plausible-dates checks of a date or date-time rule on the ``valid`` cells of ``stamps``."""
    what, shown = ("a day", "%Y-%m-%d") if rule.kind == "date" else ("a date-time", "%Y-%m-%d %H:%M")
    checks = []
    if rule.earliest is not None:
        earlier = valid & (stamps < rule.earliest).to_numpy()
        checks.append((f"{what} on or after {rule.earliest:%Y-%m-%d}{_advised(rule)}", earlier))
    if rule.latest is not None:
        when = "tomorrow" if rule.kind == "date" else "a day after now"
        later = valid & (stamps > rule.latest).to_numpy()
        checks.append((f"{what} no later than {when} ({rule.latest.strftime(shown)} UTC)", later))
    return checks


def _advised(rule: ColumnRule) -> str:
    return f" ({rule.advice})" if rule.advice else ""


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
        checks.append((f"{rule.expected} <= {_number(rule.maximum)}{_advised(rule)}", above))
        in_range &= ~above
    return checks, in_range


def _number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e16:
        return str(int(value))
    return f"{value:g}"


def _cleaned(values: pd.Series, stripped: bool = True) -> pd.Series:
    """Text (and object) values stripped, with empty cells missing; typed Parquet columns as they are.

    Without ``stripped`` (ids) text keeps its surrounding whitespace; a cell of whitespace only is still empty.
    """
    if pd.api.types.is_string_dtype(values.dtype) or isinstance(values.dtype, pd.CategoricalDtype):
        text = _as_text(values, stripped)
        held = (text if stripped else text.str.strip()).str.len() > 0
        return text.where(held)
    return values


def _as_text(values: pd.Series, stripped: bool = True) -> pd.Series:
    """Values as text (``str`` dtype, missing stays missing), stripped unless told not; whole floats lose ``.0``."""
    if pd.api.types.is_float_dtype(values.dtype):
        finite = values.dropna()
        if len(finite) and (finite == np.round(finite)).all():
            values = values.astype("Int64")
    if values.dtype != "str":
        values = values.astype(object).where(values.notna(), None).astype("str")
    return values.str.strip() if stripped else values


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
    them, but without its plausibility bounds (dates may be in the future, say), and the primary key must be
    unique. Times and days become ``datetime64[ns]``, numbers ``float64``, whole numbers ``int64``
    (``float64`` when some are missing).
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
        typed, problems = _parsed(rules, raw)
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
