"""What each column must hold, read from the SQLAlchemy tables themselves, and the plausibility bounds of exports.

Each column's rule (type, required, length, range, allowed values, referenced table) is read from the
``Table``: nullability, ``String(n)``, ``Integer``, ``DateTime``/``Date``, ``ForeignKey`` and the value rule
declared on the column (``Column.info``, from which the schema also generates the ``CHECK`` constraints).
:mod:`features.crm.rows` checks values against these rules.

Where outside data enters (the import, transactions files), a :class:`Plausibility` tightens the rules to what
a real export holds: dates from 1990 (or a given day) to a day after now, amounts of money up to a maximum
(default 1e9) and text without control characters. Values the database could store but no business has
(an order in year 1, an amount of 1e300, a NUL byte in a name) are then problems like any other, so they
are named and counted with their lines. These bounds are settings, not schema facts: no ``CHECK`` holds them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import pandas as pd
from sqlalchemy import JSON, BigInteger, Date, DateTime, Float, Integer, Numeric, String, Table, Text

from features.crm.problems import NO_ROWS, Problem

Kind = Literal["text", "datetime", "date", "number", "integer", "json"]

BLANK_MEANS_EMPTY_TEXT: Mapping[str, frozenset[str]] = {"marketing_spend": frozenset({"campaign"})}
"""Key columns where an empty cell (or no column at all) means ``''``, e.g. spend not tied to a campaign."""

EARLIEST_DATE = pd.Timestamp("1990-01-01")
"""The first day an export's dates may fall on unless the import is told an earlier one (``--allow-dates-from``)."""

LATEST_AFTER_NOW = pd.Timedelta(days=1)
"""How far after now an export's dates may fall: a day, for clocks and time zones, not for the future."""

MAX_AMOUNT = 1e9
"""The largest plausible amount of money in one cell (an order, a day's spend) unless told (``--max-amount``)."""

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
    money: bool = False
    earliest: pd.Timestamp | None = None
    latest: pd.Timestamp | None = None
    plain_text: bool = False
    identifier: bool = False
    """Text naming a record (a column ``*_id``): ids are data, kept exactly as given, surrounding whitespace too."""
    advice: str = ""
    """How to admit values beyond the plausibility bound (the earliest date, the maximum amount), for messages."""

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
                money=bool(column.info.get("money")),
                identifier=kind == "text" and column.name.endswith("_id"),
            )
        )
    return tuple(rules)


@dataclass(frozen=True)
class Plausibility:
    """Bounds on what outside data may hold beyond what the columns can store: see the module's docstring.

    ``now`` is naive UTC. The advice says in messages how to widen a bound, e.g. with which flag of the command.
    """

    now: pd.Timestamp
    dates_from: pd.Timestamp = EARLIEST_DATE
    max_amount: float = MAX_AMOUNT
    dates_from_advice: str = ""
    max_amount_advice: str = ""


def plausible_rules(table: Table, plausibility: Plausibility) -> tuple[ColumnRule, ...]:
    """The rules of ``table`` tightened by ``plausibility``: dates bounded, money capped, text without controls."""
    return tuple(_plausible(rule, plausibility) for rule in column_rules(table))


def _plausible(rule: ColumnRule, bounds: Plausibility) -> ColumnRule:
    if rule.kind in ("datetime", "date"):
        latest = bounds.now + LATEST_AFTER_NOW
        whole_days = rule.kind == "date"
        return replace(rule, earliest=bounds.dates_from.normalize() if whole_days else bounds.dates_from,
                       latest=latest.normalize() if whole_days else latest, advice=bounds.dates_from_advice)
    if rule.kind == "text":
        return replace(rule, plain_text=True)
    if rule.money and (rule.maximum is None or bounds.max_amount < rule.maximum):
        return replace(rule, maximum=bounds.max_amount, advice=bounds.max_amount_advice)
    return rule


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
