"""Bad values in words: one ``Problem`` per kind of bad value, and the message that names each with its rows.

Every check of incoming rows (the import, transactions files, the KPI tables, RFM summaries) reports through
these, so a user reads the same kind of message wherever the data came in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

EXAMPLES_SHOWN = 5
"""How many offending rows a message quotes per problem."""

NO_ROWS = np.empty(0, dtype=np.int64)
"""The rows of a problem about the columns themselves rather than values."""


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

    @classmethod
    def at(cls, column: str, expected: str, bad: np.ndarray, values: pd.Series) -> Problem:
        """The problem of the ``bad`` rows (a boolean mask) of ``values``, quoting the first few."""
        rows = np.flatnonzero(bad)
        if not len(rows):
            return cls(column, expected, rows)
        return cls(column, expected, rows, tuple(show_value(v) for v in values.iloc[rows[:EXAMPLES_SHOWN]].tolist()))


def show_value(value: object) -> str:
    """A value as a message quotes it: ``(empty)`` for missing ones, long text cut to 40 characters."""
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return "(empty)"
    text = str(value)
    return repr(text if len(text) <= 40 else text[:37] + "...")


def problem_report(
    source: str, problems: Sequence[Problem], locate: Callable[[np.ndarray], Sequence[str]],
    renamed: Mapping[str, str] | None = None, outcome: str = "nothing was imported",
) -> str:
    """The multi-line message for ``problems``: a summary line, then one line per problem with rows and values.

    ``locate`` turns 0-based row positions into what the user sees (``line 7`` in a CSV, ``row 6`` in Parquet);
    ``renamed`` maps export column names to ours so a mapped column is named both ways; ``outcome`` ends the
    summary line with what did not happen because of the problems.
    """
    theirs = {ours: their for their, ours in (renamed or {}).items() if ours}
    rows = np.unique(np.concatenate([p.rows for p in problems])) if problems else np.empty(0)
    n = len(problems)
    summary = f"{source}: {n} problem{'s' if n != 1 else ''}"
    if len(rows):
        summary += f" in {len(rows):,} row{'s' if len(rows) != 1 else ''}"
    lines = [f"{summary}; {outcome}"]
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
