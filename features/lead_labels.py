"""Labels and stacked point-in-time training snapshots for lead scoring.

A lead is *eligible* at ``as_of`` when it was created at or before it and had not converted by then;
its label is whether it converted within ``horizon_days`` after ``as_of``
(``as_of < converted_at <= as_of + horizon``). A training set stacks several snapshots, each with
:func:`features.lead_features.lead_features` as of that date, so a lead appears once per snapshot it
was open in. :func:`snapshot_plan` picks the dates so that the validation and test snapshots start only
after every earlier label window has closed: no label of one split is known inside another's window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pandas as pd

from features.errors import InvalidInput
from features.lead_features import NS_PER_DAY, as_of_timestamp, lead_features, timestamps_ns

LABEL_COLUMN = "converted"
SNAPSHOT_COLUMN = "as_of"
DEFAULT_HORIZON_DAYS = 90


def open_leads(leads: pd.DataFrame, as_of: str | date | datetime | pd.Timestamp) -> pd.DataFrame:
    """Leads created at or before ``as_of`` that had not converted by then (the ones worth scoring)."""
    at = as_of_timestamp(as_of).value
    created = timestamps_ns(leads["created_at"], "leads.created_at")
    return leads.loc[(created <= at) & ~_converted_by(leads, at)]


def conversion_labels(
    leads: pd.DataFrame,
    as_of: str | date | datetime | pd.Timestamp,
    horizon_days: int = DEFAULT_HORIZON_DAYS,
) -> pd.DataFrame:
    """``lead_id`` and ``converted`` (0/1 within the horizon) for every lead open at ``as_of``."""
    if horizon_days < 1:
        raise InvalidInput(f"horizon_days: must be >= 1, got {horizon_days}")
    eligible = open_leads(leads, as_of)
    return pd.DataFrame({"lead_id": eligible["lead_id"].astype("str").to_numpy(),
                         LABEL_COLUMN: _labels(eligible, as_of_timestamp(as_of), horizon_days)})


def training_snapshots(
    leads: pd.DataFrame,
    activities: pd.DataFrame,
    as_ofs: Sequence[str | date | datetime | pd.Timestamp],
    horizon_days: int = DEFAULT_HORIZON_DAYS,
) -> pd.DataFrame:
    """Features of the open leads at each ``as_of``, with ``as_of`` and the ``converted`` label, stacked.

    ``leads`` needs ``converted_at`` up to the last ``as_of + horizon_days``; a conversion after that
    must not be in the frame (load the CRM as of that date), or labels would use the future.
    """
    if horizon_days < 1:
        raise InvalidInput(f"horizon_days: must be >= 1, got {horizon_days}")
    parts = []
    for as_of in sorted(as_of_timestamp(a) for a in as_ofs):
        eligible = open_leads(leads, as_of)
        part = lead_features(eligible, activities, as_of)
        part[SNAPSHOT_COLUMN] = as_of
        part[LABEL_COLUMN] = _labels(eligible, as_of, horizon_days)
        parts.append(part)
    if not parts:
        raise InvalidInput("as_ofs: at least one snapshot date is needed")
    return pd.concat(parts, ignore_index=True)


@dataclass(frozen=True)
class SnapshotPlan:
    """Snapshot dates of the three time-ordered splits, each list oldest first."""

    train: tuple[pd.Timestamp, ...]
    valid: tuple[pd.Timestamp, ...]
    test: tuple[pd.Timestamp, ...]


def snapshot_plan(
    data_start: str | date | datetime | pd.Timestamp,
    cutoff: str | date | datetime | pd.Timestamp,
    horizon_days: int = DEFAULT_HORIZON_DAYS,
    every_days: int = 30,
    valid_snapshots: int = 2,
    test_snapshots: int = 1,
    max_train_snapshots: int = 24,
) -> SnapshotPlan:
    """Train, validation and test snapshot dates between ``data_start`` and ``cutoff``.

    The test snapshots end at ``cutoff - horizon`` (the latest date whose label window is complete);
    the validation snapshots end one horizon before the first test snapshot, and the training snapshots
    one horizon before the first validation snapshot, ``every_days`` apart and at least ``every_days``
    after ``data_start``. Raises ``InvalidInput`` when the history is too short for one of each.
    """
    start, end = as_of_timestamp(data_start), as_of_timestamp(cutoff)
    for name, value in (("horizon_days", horizon_days), ("every_days", every_days),
                        ("valid_snapshots", valid_snapshots), ("test_snapshots", test_snapshots),
                        ("max_train_snapshots", max_train_snapshots)):
        if value < 1:
            raise InvalidInput(f"{name}: must be >= 1, got {value}")
    step, horizon = pd.Timedelta(days=every_days), pd.Timedelta(days=horizon_days)
    earliest = start + step

    def backwards(last: pd.Timestamp, count: int) -> tuple[pd.Timestamp, ...]:
        dates = [last - k * step for k in range(count)]
        return tuple(sorted(d for d in dates if d >= earliest))

    test = backwards(end - horizon, test_snapshots)
    valid = backwards(test[0] - horizon, valid_snapshots) if test else ()
    train = backwards(valid[0] - horizon, max_train_snapshots) if valid else ()
    if not train:
        days = (end - start).days
        needed = every_days + 3 * horizon_days + (valid_snapshots + test_snapshots - 2) * every_days
        raise InvalidInput(
            f"history: the CRM covers {start:%Y-%m-%d} to {end:%Y-%m-%d} ({days} days); a {horizon_days}-day "
            f"horizon needs at least {needed} days for training, validation and test snapshots"
        )
    return SnapshotPlan(train=train, valid=valid, test=test)


def _converted_by(leads: pd.DataFrame, at: int) -> np.ndarray:
    if "converted_at" not in leads.columns:
        raise InvalidInput("leads: missing column converted_at; labels need it")
    return _optional_ns(leads["converted_at"]) <= at


def _labels(eligible: pd.DataFrame, as_of: pd.Timestamp, horizon_days: int) -> np.ndarray:
    converted = _optional_ns(eligible["converted_at"])
    return ((converted > as_of.value) & (converted <= as_of.value + horizon_days * NS_PER_DAY)).astype("int8")


def _optional_ns(values: pd.Series) -> np.ndarray:
    """Nanoseconds since the epoch, with missing (never converted) as the largest int64."""
    missing = values.isna().to_numpy()
    stamps = np.full(len(values), np.iinfo("int64").max)
    if not missing.all():
        stamps[~missing] = timestamps_ns(values[~missing], "leads.converted_at")
    return stamps
