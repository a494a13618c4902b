"""Transactions for CLV from a file (bring your own) or the CRM's orders, validated where they enter.

A transactions file is one the import reads (CSV separated by commas, semicolons or tabs, gzipped or not,
or Parquet) with one row per order: a customer column, a date column (ISO 8601, ``YYYY-MM-DD``,
``YYYYMMDD``; time of day and time zone allowed, converted to UTC) and optionally an amount column. Its
values must satisfy the rules of ``orders.customer_id``, ``orders.ordered_at`` and ``orders.amount``,
checked as the import checks them, plausibility included with its default bounds (orders from 1990-01-01
to a day after now, amounts up to 1e9, ids without control characters), and bad rows are reported as the
import reports them: the file, the column as the user named it, the file lines and the values. One more
check is the file's own: orders after the observation end are an error, not silently dropped, because a
file that runs past the date the user named usually means a wrong date or a wrong file; cut the file or
pass the later date. (The RFM
functions themselves ignore orders after the end, as lifetimes does; the CRM path reads only orders up
to the end.)
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine

from features.crm.exports import read_export
from features.crm.problems import NO_ROWS, Problem, problem_report
from features.crm.rows import parse_rows
from features.crm.rules import Plausibility
from features.crm.schema import customers, orders
from features.crm.store import read_frame
from features.errors import InvalidInput

TRANSACTION_COLUMNS: tuple[str, ...] = ("customer_id", "ordered_at", "amount")


def read_transactions(
    path: Path,
    customer_col: str,
    date_col: str,
    amount_col: str | None = None,
    observation_end: date | datetime | str | None = None,
) -> pd.DataFrame:
    """A validated transactions file as ``customer_id``, ``ordered_at`` (naive UTC) and ``amount`` (if given).

    Raises ``InvalidInput`` listing every problem with the file's lines, as the import does: missing
    columns, missing customers, unreadable or implausible dates (before 1990, more than a day after now),
    bad or implausible amounts (above 1e9) and (with ``observation_end``) orders on a day after it.
    """
    export = read_export(Path(path))
    theirs = dict(zip(TRANSACTION_COLUMNS, (customer_col, date_col, amount_col)))
    wanted = {ours: their for ours, their in theirs.items() if their is not None}
    missing = [Problem(their, f"column is missing; the file has {', '.join(export.frame.columns)}", NO_ROWS)
               for their in wanted.values() if their not in export.frame.columns]
    if missing:
        raise InvalidInput(problem_report(export.path.name, missing, export.locate, outcome="the file was not used"))
    raw = pd.DataFrame({ours: export.frame[their] for ours, their in wanted.items()})
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)
    rows, problems = parse_rows(orders, raw, Plausibility(now))
    if observation_end is not None:
        problems += _after(rows["ordered_at"], raw["ordered_at"], pd.Timestamp(observation_end), problems)
    if problems:
        named = [replace(p, column=theirs[p.column]) for p in problems]
        raise InvalidInput(problem_report(export.path.name, named, export.locate, outcome="the file was not used"))
    return rows


def _after(ordered_at: pd.Series, raw: pd.Series, end: pd.Timestamp, problems: list[Problem]) -> list[Problem]:
    """Orders on a day after ``end``'s day, among those without another problem in ``ordered_at``."""
    late = (ordered_at.dt.normalize() > end.normalize()).to_numpy(copy=True)
    for problem in problems:
        if problem.column == "ordered_at":
            late[problem.rows] = False
    expected = (f"an order on or before the observation end {end.date()}; cut the file at that day or pass a "
                "later end date (--observation-end to train, --as-of to score)")
    return [Problem.at("ordered_at", expected, late, raw)] if late.any() else []


def read_crm_orders(engine: Engine, observation_end: date | datetime | str | None = None) -> pd.DataFrame:
    """The CRM's orders as ``customer_id, ordered_at, amount``, up to the end of ``observation_end``'s day."""
    where = None
    if observation_end is not None:
        where = orders.c.ordered_at < pd.Timestamp(observation_end).normalize() + pd.Timedelta(days=1)
    return read_frame(engine, orders, list(TRANSACTION_COLUMNS), where)


def read_acquisition_channels(engine: Engine) -> pd.DataFrame:
    """Each CRM customer's ``acquisition_channel`` (``customer_id``, ``acquisition_channel``)."""
    return read_frame(engine, customers, ["customer_id", "acquisition_channel"])
