"""RFM summaries of transactions, in the conventions of Fader, Hardie and the ``lifetimes`` package.

Per customer, as of an observation end (a calendar day, inclusive):

- ``frequency``: repeat purchases, i.e. purchase days after the first one;
- ``recency``: time from the first to the last purchase (0 for one-time buyers);
- ``T``: time from the first purchase to the observation end;
- ``monetary_value``: mean value of the repeat purchases, the first purchase excluded (0 when
  ``frequency`` is 0).

Purchases on the same calendar day count as one, their amounts summed; orders after the observation
end are ignored. Times are fractional in the chosen unit: days (``"D"``, default) or weeks (``"W"``,
days / 7, as in Fader, Hardie & Lee 2005).

Speed: customer ids become int32 codes in id order, from the runs of equal ids (pyarrow), hashing
only the runs' first ids when they are not already sorted; orders are put in (customer, day) order by
one in-place sort of packed int64 keys, skipped when they come in that order, and purchase days and
customers are reduced in numpy over the runs. Hash group-bys on string ids cost several times more
here, and each large temporary costs page faults on a first call, hence int32 and few copies.

References
----------
Fader, P. S., Hardie, B. G. S., & Lee, K. L. (2005). "Counting Your Customers" the Easy Way: An
Alternative to the Pareto/NBD Model. Marketing Science, 24(2), 275-284.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from features.errors import InvalidInput

TimeUnit = Literal["D", "W"]
DAYS_PER_UNIT: dict[str, int] = {"D": 1, "W": 7}


def days_per_unit(time_unit: str) -> int:
    """Days in one model time unit (``"D"`` -> 1, ``"W"`` -> 7)."""
    try:
        return DAYS_PER_UNIT[time_unit]
    except KeyError:
        raise InvalidInput(f"time unit must be D (days) or W (weeks), not {time_unit!r}") from None


def _day_number(value: date | datetime | str | pd.Timestamp, field: str) -> int:
    """Days since 1970-01-01 of a calendar day (times of day are dropped)."""
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise InvalidInput(f"{field}: cannot read {value!r} as a date; expected YYYY-MM-DD") from None
    if pd.isna(stamp):
        raise InvalidInput(f"{field}: a date is required, got {value!r}")
    return int((stamp.normalize().tz_localize(None) - pd.Timestamp("1970-01-01")).days)


def _day_numbers(values: pd.Series, field: str) -> np.ndarray:
    """Days since 1970-01-01 (UTC) of datetimes, int32 for us/ns ones (less memory); ``InvalidInput`` names bad rows."""
    if not pd.api.types.is_datetime64_any_dtype(values):
        values = pd.to_datetime(values, format="ISO8601", errors="coerce", utc=True)
    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    stamps = values.to_numpy()
    missing = np.isnat(stamps)
    if missing.any():
        rows = np.flatnonzero(missing)[:5].tolist()
        raise InvalidInput(f"{field}: row(s) {rows} have no readable date; expected datetimes")
    unit, count = np.datetime_data(stamps.dtype)
    ticks_per_day = np.timedelta64(1, "D") // np.timedelta64(count, unit)
    day = np.empty(len(stamps), dtype=np.int32 if ticks_per_day >= 86_400_000_000 else np.int64)
    np.floor_divide(stamps.view(np.int64), ticks_per_day, out=day, casting="unsafe")
    return day


@dataclass(frozen=True)
class PurchaseDays:
    """One row per customer and purchase day, sorted by customer then day (amounts of the day summed).

    ``customer_ids`` holds each customer once, sorted; ``code`` indexes it.
    """

    customer_ids: pa.Array
    code: np.ndarray
    day: np.ndarray
    amount: np.ndarray


def _dictionary_codes(ids: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """Distinct ids in sorted order and each row's int32 index into them, by hashing (dictionary encoding)."""
    if isinstance(ids, pa.ChunkedArray) and (ids.num_chunks == 0 or pa.types.is_dictionary(ids.type)):
        ids = ids.combine_chunks()
    encoded = pc.dictionary_encode(ids)
    chunks = encoded.chunks if isinstance(encoded, pa.ChunkedArray) else [encoded]
    dictionary = chunks[0].dictionary
    order = pc.sort_indices(dictionary)
    rank = np.empty(len(order), dtype=np.int32)
    rank[order.to_numpy()] = np.arange(len(order), dtype=np.int32)
    code = np.empty(len(ids), dtype=np.int32)
    done = 0
    for chunk in chunks:
        np.take(rank, chunk.indices.to_numpy(zero_copy_only=False), out=code[done:done + len(chunk)])
        done += len(chunk)
    return dictionary.take(order), code


def _encode(ids: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """Distinct ids in sorted order and each row's int32 index into them; only runs' first ids hashed, if unsorted."""
    if not (pa.types.is_integer(ids.type) or pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
        return _dictionary_codes(ids)
    first = np.ones(len(ids), dtype=bool)
    if len(ids) > 1:
        first[1:] = pc.not_equal(ids[1:], ids[:-1]).to_numpy(zero_copy_only=False)
    run = np.cumsum(first, dtype=np.int32)
    run -= 1
    heads = ids.filter(pa.array(first))
    heads = heads.combine_chunks() if isinstance(heads, pa.ChunkedArray) else heads
    if len(heads) < 2 or pc.all(pc.greater(heads[1:], heads[:-1])).as_py():
        return heads, run
    distinct, head_code = _dictionary_codes(heads)
    return distinct, head_code[run]


def _key_order(code: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Rows in stable (code, day) order: one in-place sort of (code, day, row) packed in an int64 when it fits."""
    first_day = int(day.min())
    day_bits = (int(day.max()) - first_day).bit_length()
    row_bits = (len(code) - 1).bit_length()
    if int(code.max()).bit_length() + day_bits + row_bits > 63:
        return np.lexsort((day, code))
    key = code.astype(np.int64)
    key <<= day_bits
    key += day
    key -= first_day
    key <<= row_bits
    key |= np.arange(len(key))
    key.sort()
    key &= (1 << row_bits) - 1
    return key


def purchase_days(
    transactions: pd.DataFrame,
    observation_end: date | datetime | str,
    customer_col: str = "customer_id",
    date_col: str = "ordered_at",
    amount_col: str | None = "amount",
) -> PurchaseDays:
    """The distinct purchase days of every customer up to and including ``observation_end``."""
    missing = [c for c in (customer_col, date_col, amount_col) if c is not None and c not in transactions.columns]
    if missing:
        raise InvalidInput(f"transactions: missing column(s) {missing}; found {list(transactions.columns)}")
    end_day = _day_number(observation_end, "observation end")
    day = _day_numbers(transactions[date_col], date_col)
    amount = transactions[amount_col].to_numpy(dtype="float64") if amount_col else None
    ids = pa.array(transactions[customer_col])
    keep = day <= end_day
    if not keep.all():
        ids, day = ids.filter(pa.array(keep)), day[keep]
        amount = amount[keep] if amount is not None else None
    if ids.null_count:
        raise InvalidInput(f"{customer_col}: {ids.null_count} order(s) have no customer id")
    customer_ids, code = _encode(ids)
    new_day = np.ones(len(code), dtype=bool)
    np.not_equal(code[1:], code[:-1], out=new_day[1:])
    if not ((code[1:] >= code[:-1]).all() and (new_day[1:] | (day[1:] >= day[:-1])).all()):
        rows = _key_order(code, day)
        code, day, amount = code[rows], day[rows], amount[rows] if amount is not None else None
        np.not_equal(code[1:], code[:-1], out=new_day[1:])
    new_day[1:] |= day[1:] != day[:-1]
    starts = np.flatnonzero(new_day)
    day_amount = np.add.reduceat(amount, starts) if amount is not None and len(starts) else np.zeros(len(starts))
    return PurchaseDays(customer_ids, code[starts], day[starts], day_amount)


def _runs(code: np.ndarray) -> np.ndarray:
    """Start index of each customer's run in arrays sorted by customer."""
    first = np.ones(len(code), dtype=bool)
    first[1:] = code[1:] != code[:-1]
    return np.flatnonzero(first)


def _summary(days: PurchaseDays, end_day: int, unit_days: int) -> pd.DataFrame:
    """RFM columns of the customers with a purchase day on or before ``end_day``."""
    code, day, amount = days.code, days.day, days.amount
    keep = day <= end_day
    if not keep.all():
        code, day, amount = code[keep], day[keep], amount[keep]
    starts = _runs(code)
    ends = np.append(starts[1:], len(code))[: len(starts)] - 1
    frequency = (ends - starts).astype(np.int64)
    first_day = day[starts]
    repeat_spend = (np.add.reduceat(amount, starts) - amount[starts]) if len(starts) else np.zeros(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        monetary = np.where(frequency > 0, repeat_spend / np.maximum(frequency, 1), 0.0)
    return pd.DataFrame({
        "customer_id": (days.customer_ids if len(starts) == len(days.customer_ids)
                        else days.customer_ids.take(pa.array(code[starts]))).to_pandas(),
        "frequency": frequency,
        "recency": (day[ends] - first_day) / unit_days,
        "T": (end_day - first_day) / unit_days,
        "monetary_value": monetary,
    })


def rfm_summary(
    transactions: pd.DataFrame,
    observation_end: date | datetime | str,
    customer_col: str = "customer_id",
    date_col: str = "ordered_at",
    amount_col: str | None = "amount",
    time_unit: TimeUnit = "D",
) -> pd.DataFrame:
    """One RFM row per customer with a purchase on or before ``observation_end``.

    Returns the columns ``customer_id, frequency, recency, T, monetary_value`` sorted by customer;
    without ``amount_col`` the monetary value is 0 for everyone.
    """
    unit_days = days_per_unit(time_unit)
    end_day = _day_number(observation_end, "observation end")
    days = purchase_days(transactions, observation_end, customer_col, date_col, amount_col)
    return _summary(days, end_day, unit_days)


def calibration_and_holdout(
    transactions: pd.DataFrame,
    calibration_end: date | datetime | str,
    observation_end: date | datetime | str,
    customer_col: str = "customer_id",
    date_col: str = "ordered_at",
    amount_col: str | None = "amount",
    time_unit: TimeUnit = "D",
) -> pd.DataFrame:
    """The RFM summary as of ``calibration_end`` plus each customer's actual holdout behaviour.

    The holdout is the days after ``calibration_end`` up to and including ``observation_end``. Only
    customers with a purchase in the calibration period appear. Adds ``frequency_holdout`` (purchase
    days in the holdout), ``spend_holdout`` (their total), ``monetary_value_holdout`` (their mean, 0
    when none) and ``duration_holdout`` (holdout length in the time unit).
    """
    unit_days = days_per_unit(time_unit)
    cal_day = _day_number(calibration_end, "calibration end")
    end_day = _day_number(observation_end, "observation end")
    if end_day <= cal_day:
        raise InvalidInput(
            f"observation end {observation_end} must be after calibration end {calibration_end}"
        )
    days = purchase_days(transactions, observation_end, customer_col, date_col, amount_col)
    split = _summary(days, cal_day, unit_days)
    n_customers = len(days.customer_ids)
    holdout = days.day > cal_day
    frequency = np.bincount(days.code[holdout], minlength=n_customers)
    spend = np.bincount(days.code[holdout], weights=days.amount[holdout], minlength=n_customers)
    calibration_codes = np.unique(days.code[~holdout])
    split["frequency_holdout"] = frequency[calibration_codes].astype(np.int64)
    split["spend_holdout"] = spend[calibration_codes]
    with np.errstate(divide="ignore", invalid="ignore"):
        split["monetary_value_holdout"] = np.where(split["frequency_holdout"] > 0,
                                                   split["spend_holdout"] / split["frequency_holdout"], 0.0)
    split["duration_holdout"] = (end_day - cal_day) / unit_days
    return split


def default_dates(transactions: pd.DataFrame, horizon_days: int,
                  calibration_end: date | str | None = None,
                  observation_end: date | str | None = None) -> tuple[str, str]:
    """Calibration and observation ends (for :func:`calibration_and_holdout`) from the orders' ``ordered_at``
    when not given.

    Observation end: the last order's day. Calibration end: the observation end minus a holdout of a
    third of the order history, at most ``horizon_days`` and at least one day.
    """
    if len(transactions) == 0:
        raise InvalidInput("orders: no orders to train on; expected at least some customers with repeat purchases")
    first = transactions["ordered_at"].min().normalize()
    end = pd.Timestamp(observation_end).normalize() if observation_end else transactions["ordered_at"].max().normalize()
    if calibration_end:
        cal = pd.Timestamp(calibration_end).normalize()
    else:
        holdout = max(1, min(horizon_days, (end - first).days // 3))
        cal = end - pd.Timedelta(days=holdout)
    if cal < first:
        raise InvalidInput(f"calibration end {cal.date()} is before the first order ({first.date()})")
    return str(cal.date()), str(end.date())


def daily_purchases(
    transactions: pd.DataFrame,
    observation_end: date | datetime | str,
    customer_col: str = "customer_id",
    date_col: str = "ordered_at",
) -> pd.DataFrame:
    """Per calendar day up to ``observation_end``: customers making their first purchase, and repeat purchases.

    Columns ``day`` (naive datetime), ``first_purchases`` and ``repeat_purchases``: the inputs of the
    cumulative repeat-transactions tracking plot (same-day purchases count once, as in the summary).
    """
    days = purchase_days(transactions, observation_end, customer_col, date_col, None)
    is_first = np.zeros(len(days.code), dtype=bool)
    is_first[_runs(days.code)] = True
    per_day = (
        pl.DataFrame({"day": days.day, "is_first": is_first})
        .group_by("day")
        .agg(
            pl.col("is_first").sum().cast(pl.Int64).alias("first_purchases"),
            (~pl.col("is_first")).sum().cast(pl.Int64).alias("repeat_purchases"),
        )
        .sort("day")
        .to_pandas()
    )
    per_day["day"] = pd.to_datetime(per_day["day"].astype("int64"), unit="D")
    return per_day
