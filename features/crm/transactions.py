"""Transactions for CLV from a file (bring your own) or the CRM's orders, validated where they enter.

A transactions file is CSV or Parquet with one row per order: a customer column, a date column
(ISO 8601, ``YYYY-MM-DD``, ``YYYYMMDD``; time of day and time zone allowed, converted to UTC) and
optionally an amount column. Bad rows are errors naming the column and the rows (counted from 1,
header excluded): missing customers, unparseable dates, non-numeric or negative amounts, and orders
after the observation end. The last is an error in a file, not silently dropped, because a file that
runs past the date the user named usually means a wrong date or a wrong file; cut the file or pass the
later date. (The RFM functions themselves ignore orders after the end, as lifetimes does; the CRM
path reads only orders up to the end.)
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from features.crm.store import read_frame
from features.errors import InvalidInput
from features.crm.schema import customers, orders

TRANSACTION_COLUMNS: tuple[str, ...] = ("customer_id", "ordered_at", "amount")


def _row_list(mask: np.ndarray) -> str:
    rows = np.flatnonzero(mask) + 1
    shown = ", ".join(str(r) for r in rows[:5])
    return shown + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")


def _read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif suffix in (".csv", ".txt", ".gz"):
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        else:
            raise InvalidInput(f"{path}: expected a .csv or .parquet file")
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{path}: cannot read it ({exc})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InvalidInput(f"{path}: missing column(s) {missing}; the file has {list(frame.columns)}")
    return frame[columns]


def parse_dates(values: pd.Series, column: str) -> pd.Series:
    """Dates and times as naive UTC; ``InvalidInput`` naming the rows that cannot be read."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values.dt.tz_convert("UTC") if getattr(values.dt, "tz", None) is not None else values
    else:
        parsed = pd.to_datetime(values.astype("string"), format="ISO8601", errors="coerce", utc=True)
    bad = parsed.isna().to_numpy()
    if bad.any():
        example = values[bad].iloc[0]
        raise InvalidInput(f"{column}: row(s) {_row_list(bad)} are not dates (e.g. {example!r}); "
                           "expected YYYY-MM-DD, YYYYMMDD or ISO 8601 date-times")
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_localize(None)
    return parsed


def parse_amounts(values: pd.Series, column: str) -> pd.Series:
    """Order amounts as float64 >= 0; ``InvalidInput`` naming the rows that are missing, not numbers or negative."""
    amounts = pd.to_numeric(values, errors="coerce").astype("float64")
    not_number = ~np.isfinite(amounts.to_numpy())
    if not_number.any():
        raise InvalidInput(f"{column}: row(s) {_row_list(not_number)} are not numbers "
                           f"(e.g. {values[not_number].iloc[0]!r}); expected an amount >= 0")
    negative = amounts.to_numpy() < 0
    if negative.any():
        raise InvalidInput(f"{column}: row(s) {_row_list(negative)} are negative (e.g. {amounts[negative].iloc[0]}); "
                           "expected amounts >= 0 (book refunds against their order instead)")
    return amounts


def read_transactions(
    path: Path,
    customer_col: str,
    date_col: str,
    amount_col: str | None = None,
    observation_end: date | datetime | str | None = None,
) -> pd.DataFrame:
    """A validated transactions file as ``customer_id``, ``ordered_at`` (naive UTC) and ``amount`` (if given).

    Raises ``InvalidInput`` naming the column and rows for missing customers, unparseable dates,
    bad amounts and (with ``observation_end``) orders on a day after it.
    """
    path = Path(path)
    columns = [customer_col, date_col] + ([amount_col] if amount_col else [])
    raw = _read_table(path, columns).reset_index(drop=True)
    customer = raw[customer_col].astype("string")
    no_customer = (customer.isna() | (customer.str.strip() == "")).to_numpy()
    if no_customer.any():
        raise InvalidInput(f"{customer_col}: row(s) {_row_list(no_customer)} have no customer id")
    out = pd.DataFrame({"customer_id": customer.astype(object), "ordered_at": parse_dates(raw[date_col], date_col)})
    if amount_col:
        out["amount"] = parse_amounts(raw[amount_col], amount_col)
    if observation_end is not None:
        end = pd.Timestamp(observation_end).normalize()
        late = (out["ordered_at"].dt.normalize() > end).to_numpy()
        if late.any():
            raise InvalidInput(
                f"{date_col}: row(s) {_row_list(late)} are after the observation end {end.date()} "
                f"(e.g. {out['ordered_at'][late].iloc[0]}); cut the file at that day or pass a later end date "
                "(--observation-end to train, --as-of to score)"
            )
    return out


def read_crm_orders(engine: Engine, observation_end: date | datetime | str | None = None) -> pd.DataFrame:
    """The CRM's orders as ``customer_id, ordered_at, amount``, up to the end of ``observation_end``'s day."""
    where = None
    if observation_end is not None:
        where = orders.c.ordered_at < pd.Timestamp(observation_end).normalize() + pd.Timedelta(days=1)
    return read_frame(engine, orders, list(TRANSACTION_COLUMNS), where)


def read_acquisition_channels(engine: Engine) -> pd.DataFrame:
    """Each CRM customer's ``acquisition_channel`` (``customer_id``, ``acquisition_channel``)."""
    return read_frame(engine, customers, ["customer_id", "acquisition_channel"])
