"""Point-in-time lead features: what the CRM knew about each lead at an ``as_of`` instant.

One row per lead created at or before ``as_of``: the profile as categoricals (channel, campaign,
country, industry, company size, seniority, email domain) and behaviour up to ``as_of`` only: counts per
activity type over the last 7/30/90 days, days since the last event of each type, engagement time,
email open and click rates, active days, days since creation and since the last activity.

Nothing after ``as_of`` is read: later activities, later leads and conversion dates are ignored, so
training snapshots, the nightly batch job and the scoring API see exactly what a salesperson could
have seen then. ``as_of`` is an instant (naive UTC; a date means its midnight); an event counts when
``occurred_at <= as_of``, and "in the last 7 days" means ``as_of - 7 days < occurred_at <= as_of``.

Everything is vectorised with numpy (``bincount`` and ``minimum.at`` over a lead x activity-type
index): no Python loop over leads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from itertools import repeat

import numpy as np
import pandas as pd

from features.crm.schema import ACTIVITY_TYPES
from features.errors import InvalidInput

WINDOWS_DAYS: tuple[int, ...] = (7, 30, 90)
"""Look-back windows of the per-type activity counts and the engagement time."""

ACTIVE_DAYS_WINDOW = 30
OUTBOUND_TYPES: tuple[str, ...] = ("email_sent",)
"""Activities the marketer did to the lead, not the lead's own behaviour: excluded from last activity and
active days."""

PROFILE_FEATURES: tuple[str, ...] = (
    "source_channel",
    "campaign",
    "country",
    "industry",
    "company_size",
    "job_seniority",
    "email_domain_type",
)
"""Lead profile columns, used as categorical features."""

ACTIVITY_COUNT_FEATURES: tuple[str, ...] = tuple(f"{t}_{w}d" for t in ACTIVITY_TYPES for w in WINDOWS_DAYS)
"""``{activity_type}_{window}d``: number of such events in the last ``window`` days."""

ACTIVITY_RECENCY_FEATURES: tuple[str, ...] = tuple(f"days_since_last_{t}" for t in ACTIVITY_TYPES)
"""``days_since_last_{activity_type}``: days since the lead's latest such event (missing: never)."""

BEHAVIOUR_FEATURES: tuple[str, ...] = (
    "days_since_created",
    "days_since_last_activity",
    f"active_days_{ACTIVE_DAYS_WINDOW}d",
    *(f"engagement_minutes_{w}d" for w in WINDOWS_DAYS),
    "email_open_rate",
    "email_click_rate",
    *ACTIVITY_COUNT_FEATURES,
    *ACTIVITY_RECENCY_FEATURES,
)
"""Numeric features, all float64 (missing where undefined, e.g. open rate without any email sent)."""

LEAD_FEATURE_COLUMNS: tuple[str, ...] = ("lead_id", *PROFILE_FEATURES, *BEHAVIOUR_FEATURES)
"""Columns of :func:`lead_features`, in order."""

LEAD_INPUT_COLUMNS: tuple[str, ...] = ("lead_id", "created_at", *PROFILE_FEATURES)
ACTIVITY_INPUT_COLUMNS: tuple[str, ...] = ("lead_id", "occurred_at", "activity_type", "duration_seconds")

NS_PER_DAY = 86_400 * 10**9
SMALL_LOOKUP = 512
_TYPE_INDEX = pd.Index(ACTIVITY_TYPES, dtype=object)
_COLUMNS = pd.Index(LEAD_FEATURE_COLUMNS, dtype=object)
"""The column labels as an ``object`` Index: pandas 3 otherwise infers an arrow-backed ``str`` Index, and every
column lookup, selection and insertion on the frame then goes through pyarrow (a sixth of scoring one lead)."""
_TYPE_POSITION = {name: position for position, name in enumerate(ACTIVITY_TYPES)}
_OUTBOUND = np.isin(np.array(ACTIVITY_TYPES), OUTBOUND_TYPES)


def as_of_timestamp(value: str | date | datetime | pd.Timestamp) -> pd.Timestamp:
    """``value`` as a naive UTC timestamp (time-zone aware values are converted to UTC first)."""
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"as_of: {value!r} is not a date or timestamp; expected e.g. 2025-06-30") from None
    if stamp is pd.NaT:
        raise InvalidInput("as_of: missing; expected a date or timestamp")
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    if not pd.Timestamp.min <= stamp <= pd.Timestamp.max:
        raise InvalidInput(f"as_of: {value!s} is outside the dates leadval can compute with "
                           f"({pd.Timestamp.min:%Y-%m-%d} to {pd.Timestamp.max:%Y-%m-%d}); expected e.g. 2025-06-30")
    return stamp.as_unit("ns")


def lead_features(
    leads: pd.DataFrame,
    activities: pd.DataFrame,
    as_of: str | date | datetime | pd.Timestamp,
) -> pd.DataFrame:
    """Features of every lead created at or before ``as_of``, from events at or before ``as_of``.

    Parameters
    ----------
    leads
        CRM leads: ``lead_id``, ``created_at`` and the profile columns (values may be missing);
        other columns (``converted_at``...) are ignored.
    activities
        CRM activities: ``lead_id``, ``occurred_at``, ``activity_type`` and optionally
        ``duration_seconds``. Events of unknown leads or unknown types are ignored.
    as_of
        The instant the features describe.

    Returns
    -------
    DataFrame
        :data:`LEAD_FEATURE_COLUMNS`, one row per lead in the order of ``leads``: ``lead_id`` and the
        profile columns as strings (missing stays missing), behaviour columns as float64.
    """
    return lead_feature_arrays(leads, activities, as_of).frame()


def lead_feature_arrays(
    leads: pd.DataFrame,
    activities: pd.DataFrame,
    as_of: str | date | datetime | pd.Timestamp,
) -> LeadFeatureArrays:
    """:func:`lead_features` as arrays (the scorer reads these without building the DataFrame)."""
    at = as_of_timestamp(as_of).value
    _require(leads, LEAD_INPUT_COLUMNS, "leads")
    _require(activities, ACTIVITY_INPUT_COLUMNS[:3], "activities")
    created = timestamps_ns(leads["created_at"], "leads.created_at")
    known = created <= at
    ids = _text(leads["lead_id"])[known]
    index = pd.Index(ids, dtype=object)
    if not index.is_unique:
        duplicated = index[index.duplicated()].unique()[:5].tolist()
        raise InvalidInput(f"leads.lead_id: duplicated ids {duplicated}; expected one row per lead")

    occurred = timestamps_ns(activities["occurred_at"], "activities.occurred_at")
    duration = (activities["duration_seconds"].to_numpy(dtype="float64", na_value=np.nan)
                if "duration_seconds" in activities else np.zeros(len(activities)))
    return LeadFeatureArrays(
        lead_ids=ids,
        profile=np.column_stack([_text(leads[name])[known] for name in PROFILE_FEATURES]).astype(object),
        behaviour=behaviour_features(at, created[known], positions_in(activities["lead_id"], index),
                                     positions_in(activities["activity_type"], _TYPE_INDEX), occurred, duration),
    )


@dataclass(frozen=True)
class LeadFeatureArrays:
    """:func:`lead_features` output as arrays, before it becomes a DataFrame (a few leads score faster so).

    ``lead_ids`` (object), ``profile`` (leads x :data:`PROFILE_FEATURES`, text or None) and ``behaviour``
    (leads x :data:`BEHAVIOUR_FEATURES`, float64).
    """

    lead_ids: np.ndarray
    profile: np.ndarray
    behaviour: np.ndarray

    def frame(self) -> pd.DataFrame:
        """The :data:`LEAD_FEATURE_COLUMNS` frame: text columns as ``object``, behaviour as float64."""
        text = np.column_stack([self.lead_ids, self.profile]).astype(object)
        frame = pd.concat([pd.DataFrame(text, columns=_COLUMNS[: text.shape[1]], dtype=object),
                           pd.DataFrame(self.behaviour, columns=_COLUMNS[text.shape[1]:])], axis=1)
        frame.columns = _COLUMNS
        return frame


def activity_type_positions(types: list[str]) -> np.ndarray:
    """Position of each activity type in :data:`~features.crm.schema.ACTIVITY_TYPES` (-1: unknown, ignored)."""
    return np.fromiter(map(_TYPE_POSITION.get, types, repeat(-1)), dtype="int64", count=len(types))


def behaviour_features(at: int, created: np.ndarray, lead_row: np.ndarray, activity_type: np.ndarray,
                       occurred: np.ndarray, duration: np.ndarray) -> np.ndarray:
    """The behaviour matrix (leads x :data:`BEHAVIOUR_FEATURES`) as of ``at`` (ns since the epoch, naive UTC).

    ``created``: each lead's creation time in ns (created at or before ``at``). Events as parallel arrays:
    the lead's row (-1: not one of these leads), the type's position (:func:`activity_type_positions`),
    the time in ns and the duration in seconds (NaN: none). Events after ``at``, of other leads or of
    unknown types are ignored.
    """
    past = occurred <= at
    row, kind = lead_row[past], activity_type[past]
    age = (at - occurred[past]) / NS_PER_DAY
    valid = (row >= 0) & (kind >= 0)
    return _behaviour(len(created), row[valid], kind[valid], age[valid], duration[past][valid],
                      (at - created) / NS_PER_DAY)


def _behaviour(
    n: int, row: np.ndarray, kind: np.ndarray, age: np.ndarray, duration: np.ndarray, lead_age: np.ndarray
) -> np.ndarray:
    """The behaviour matrix (leads x :data:`BEHAVIOUR_FEATURES`) from events as (lead row, type, age in days)."""
    n_types, n_buckets = len(ACTIVITY_TYPES), len(WINDOWS_DAYS) + 1
    bucket = np.searchsorted(np.asarray(WINDOWS_DAYS, dtype="float64"), age, side="right")
    cell = row * n_types + kind
    counts = np.bincount(cell * n_buckets + bucket, minlength=n * n_types * n_buckets)
    counts = counts.reshape(n, n_types, n_buckets).cumsum(axis=2).astype("float64")

    last = np.full(n * n_types, np.inf)
    np.minimum.at(last, cell, age)
    last = last.reshape(n, n_types)
    last_activity = last[:, ~_OUTBOUND].min(axis=1)

    own = ~_OUTBOUND[kind]
    recent = own & (age < ACTIVE_DAYS_WINDOW)
    day = row[recent] * ACTIVE_DAYS_WINDOW + np.floor(age[recent]).astype("int64")
    active = np.zeros(n * ACTIVE_DAYS_WINDOW, dtype=bool)
    active[day] = True
    active_days = active.reshape(n, ACTIVE_DAYS_WINDOW).sum(axis=1)

    seconds = np.bincount(row * n_buckets + bucket, weights=np.nan_to_num(duration), minlength=n * n_buckets)
    minutes = seconds.reshape(n, n_buckets).cumsum(axis=1)[:, :-1] / 60.0

    sent, opened, clicked = (counts[:, ACTIVITY_TYPES.index(t), -1] for t in ("email_sent", "email_open",
                                                                             "email_click"))
    with np.errstate(divide="ignore", invalid="ignore"):
        open_rate = np.where(sent > 0, opened / sent, np.nan)
        click_rate = np.where(sent > 0, clicked / sent, np.nan)

    recency = np.where(np.isinf(last), np.nan, last)
    return np.column_stack([
        lead_age,
        np.where(np.isinf(last_activity), np.nan, last_activity),
        active_days,
        minutes,
        open_rate,
        click_rate,
        counts[:, :, :-1].reshape(n, -1),
        recency,
    ]).astype("float64", copy=False)


def positions_in(values: pd.Series, index: pd.Index) -> np.ndarray:
    """Position of each value in ``index`` (-1: missing or not in it), hashing each distinct value once.

    A few values are looked up in a dict: pandas' per-call overhead would dominate (same results)."""
    if len(values) <= SMALL_LOOKUP and len(index) <= SMALL_LOOKUP:
        lookup = {value: position for position, value in enumerate(index.tolist())}
        return np.array([lookup.get(v, -1) if isinstance(v, str) else -1 for v in values.tolist()], dtype="int64")
    codes, distinct = pd.factorize(values)
    if len(distinct) == 0:
        return np.full(len(values), -1, dtype="int64")
    found = index.get_indexer(np.asarray(distinct, dtype=object))
    return np.where(codes < 0, -1, found[codes])


def _text(values: pd.Series) -> np.ndarray:
    """A column as Python strings with missing as None (numbers and the like are cast to text first)."""
    if values.dtype == object:
        array = values.to_numpy()
        missing = pd.isna(array)
        return np.where(missing, None, array) if missing.any() else array
    if not isinstance(values.dtype, (pd.StringDtype, pd.CategoricalDtype)):
        values = values.astype("str")
    return values.to_numpy(dtype=object, na_value=None)


def _require(frame: pd.DataFrame, columns: tuple[str, ...], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InvalidInput(f"{name}: missing columns {missing}; expected {list(columns)}")


def timestamps_ns(values: pd.Series, field: str) -> np.ndarray:
    """Timestamps as int64 nanoseconds since the epoch (naive UTC); unparseable or missing is an error."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    elif not pd.api.types.is_datetime64_dtype(values.dtype):
        parsed = pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")
        bad = parsed.isna() & values.notna()
        if bad.any():
            rows = np.flatnonzero(bad.to_numpy())[:5].tolist()
            raise InvalidInput(f"{field}: rows {rows} are not timestamps (e.g. {values.iloc[rows[0]]!r}); "
                               "expected ISO 8601 like 2025-06-30T14:00:00")
        values = parsed.dt.tz_localize(None)
    stamps = values.to_numpy(dtype="datetime64[ns]")
    missing = np.isnat(stamps)
    if missing.any():
        rows = np.flatnonzero(missing)[:5].tolist()
        raise InvalidInput(f"{field}: rows {rows} are missing; expected a timestamp on every row")
    return stamps.view("int64")
