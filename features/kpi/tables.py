"""The tables the KPIs are computed from, checked and typed, and the reporting window and its periods.

:func:`kpi_tables` takes the CRM and score tables as DataFrames (from the database or built by hand) and
checks and types them by the schema's column rules; a table not given is an empty one (a CRM made before
``experiment_assignments`` existed simply has no experiments). :class:`Window` is the report's
``[start, end)`` and :func:`period_starts` its weeks, months or quarters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.crm import schema
from features.crm.rows import conform_frame
from features.crm.schema import ACTIVITY_TYPES, table
from features.crm.store import missing_tables, read_frame
from features.errors import InvalidInput
from features.kpi.definitions import GRAINS

if TYPE_CHECKING:
    from sqlalchemy import Engine

_NEEDED: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "leads": ("lead_id", "created_at", "source_channel", "converted_at"),
        "activities": ("lead_id", "occurred_at", "activity_type"),
        "customers": ("customer_id", "created_at"),
        "orders": ("customer_id", "ordered_at", "amount"),
        "marketing_spend": ("date", "channel", "spend"),
        "lead_scores": ("lead_id", "score", "probability", "band"),
        "customer_scores": ("customer_id", "p_alive", "clv", "segment"),
        "customer_score_history": ("customer_id", "p_alive", "clv", "segment"),
        "experiment_assignments": ("experiment", "variant", "lead_id", "assigned_at"),
    }
)
"""The columns each table must have for the KPIs; the others the schema gives the table are optional."""


@dataclass(frozen=True)
class KpiTables:
    """The CRM and score tables as DataFrames, checked and typed by :func:`kpi_tables`."""

    leads: pd.DataFrame
    activities: pd.DataFrame
    customers: pd.DataFrame
    orders: pd.DataFrame
    marketing_spend: pd.DataFrame
    lead_scores: pd.DataFrame
    customer_scores: pd.DataFrame
    customer_score_history: pd.DataFrame
    experiment_assignments: pd.DataFrame
    """Which lead saw which variant of which A/B test (``features.kpi.experiments``); empty in a CRM without any."""

    @cached_property
    def activity_lead_rows(self) -> np.ndarray:
        """Row in ``leads`` of each activity's lead (-1 for a lead not in the table)."""
        return pd.Index(self.leads["lead_id"]).get_indexer(self.activities["lead_id"])

    @cached_property
    def activity_type_codes(self) -> np.ndarray:
        """Each activity's type as its position in ``ACTIVITY_TYPES``."""
        return pd.Categorical(self.activities["activity_type"], categories=ACTIVITY_TYPES).codes.astype("int64")

    @cached_property
    def customer_lead_rows(self) -> np.ndarray:
        """Row in ``leads`` of each customer's lead (-1 for none)."""
        return pd.Index(self.leads["lead_id"]).get_indexer(self.customers["lead_id"])

    @cached_property
    def order_customer_rows(self) -> np.ndarray:
        """Row in ``customers`` of each order's customer (-1 for one not in the table)."""
        return pd.Index(self.customers["customer_id"]).get_indexer(self.orders["customer_id"])


def kpi_tables(
    leads: pd.DataFrame,
    activities: pd.DataFrame | None = None,
    customers: pd.DataFrame | None = None,
    orders: pd.DataFrame | None = None,
    marketing_spend: pd.DataFrame | None = None,
    lead_scores: pd.DataFrame | None = None,
    customer_scores: pd.DataFrame | None = None,
    customer_score_history: pd.DataFrame | None = None,
    experiment_assignments: pd.DataFrame | None = None,
) -> KpiTables:
    """Check and type the tables the KPIs need by the schema's rules; a missing table is an empty one.

    Each frame goes through ``features.crm.rows.conform_frame``: the columns of ``_NEEDED`` must be there,
    the table's other columns are filled with typed nulls where missing, and values must satisfy the
    column rules (types, allowed values, ranges) and the primary key be unique. Raises ``InvalidInput``
    naming the table, the column and the rows.
    """
    given = {
        "leads": leads,
        "activities": activities,
        "customers": customers,
        "orders": orders,
        "marketing_spend": marketing_spend,
        "lead_scores": lead_scores,
        "customer_scores": customer_scores,
        "customer_score_history": customer_score_history,
        "experiment_assignments": experiment_assignments,
    }
    return KpiTables(**{name: _conformed(name, frame) for name, frame in given.items()})


def _conformed(name: str, frame: pd.DataFrame | None) -> pd.DataFrame:
    if frame is None:
        return conform_frame(table(name), pd.DataFrame())
    return conform_frame(table(name), frame, _NEEDED[name])


@dataclass(frozen=True)
class Window:
    """The reporting window ``[start, end)`` in naive UTC; ``end`` is exclusive."""

    start: pd.Timestamp
    end: pd.Timestamp

    def contains(self, times: pd.Series) -> pd.Series:
        """Whether each timestamp falls inside the window (missing ones do not)."""
        return (times >= self.start) & (times < self.end)

    @property
    def last_day(self) -> date:
        """The last calendar day the window covers."""
        return (self.end - pd.Timedelta(nanoseconds=1)).date()

    @property
    def label(self) -> str:
        """The window as people write it: first day to last day, both included."""
        return f"{self.start.date().isoformat()} to {self.last_day.isoformat()}"


def report_window(crm: KpiTables, start: date | None = None, end: date | None = None) -> Window:
    """The window from ``start`` to ``end`` (both days included); open ends default to the data's first and last day.

    Raises ``InvalidInput`` for an empty CRM or an end before the start.
    """
    stamps = [
        crm.leads["created_at"], crm.leads["converted_at"], crm.activities["occurred_at"],
        crm.customers["created_at"], crm.orders["ordered_at"], crm.marketing_spend["date"],
    ]
    present = pd.concat([s.dropna() for s in stamps if not s.dropna().empty] or [pd.Series(dtype="datetime64[ns]")])
    if present.empty and (start is None or end is None):
        raise InvalidInput("the CRM has no leads, activities, customers, orders or spend yet; run `leadval generate` "
                           "or `leadval import` first")
    first = pd.Timestamp(start) if start is not None else present.min().normalize()
    last = pd.Timestamp(end) if end is not None else present.max().normalize()
    if last < first:
        raise InvalidInput(f"--to {last.date()} is before --from {first.date()}; expected an end on or after the start")
    return Window(first, last + pd.Timedelta(days=1))


def default_grain(window: Window) -> str:
    """Weeks for windows up to about three months, months beyond."""
    return "week" if (window.end - window.start) <= pd.Timedelta(days=92) else "month"


def period_starts(window: Window, grain: str) -> pd.DatetimeIndex:
    """Start of every period of length ``grain`` that overlaps the window."""
    periods = pd.period_range(window.start, window.end - pd.Timedelta(nanoseconds=1), freq=grain_code(grain))
    return pd.DatetimeIndex(periods.start_time)


def grain_code(grain: str) -> str:
    """The pandas period code of ``grain``; an unknown grain is an ``InvalidInput`` naming the known ones."""
    try:
        return GRAINS[grain]
    except KeyError:
        raise InvalidInput(f"grain {grain!r} is unknown; expected one of {', '.join(GRAINS)}") from None


def read_kpi_tables(engine: Engine) -> KpiTables:
    """The CRM and score tables of the database at ``engine``, with only the columns the KPIs use, checked and typed.

    A table the database lacks reads as an empty one (a CRM created before ``experiment_assignments`` existed has no
    experiments).
    """
    columns = {
        schema.leads: ["lead_id", "created_at", "source_channel", "campaign", "converted_at", "customer_id"],
        schema.activities: ["lead_id", "occurred_at", "activity_type", "channel", "content_id", "duration_seconds"],
        schema.customers: ["customer_id", "lead_id", "created_at", "acquisition_channel"],
        schema.orders: ["customer_id", "ordered_at", "amount"],
        schema.marketing_spend: ["date", "channel", "campaign", "spend", "impressions", "clicks"],
        schema.lead_scores: ["lead_id", "score", "probability", "band", "reasons", "expected_value", "as_of",
                             "scored_at"],
        schema.customer_scores: ["customer_id", "expected_purchases", "p_alive", "expected_order_value", "clv",
                                 "segment", "model_name", "model_version", "run_id", "scoring_run_id", "as_of",
                                 "scored_at"],
        schema.customer_score_history: ["customer_id", "p_alive", "clv", "segment", "scoring_run_id", "as_of",
                                        "scored_at"],
        schema.experiment_assignments: ["experiment", "variant", "lead_id", "assigned_at"],
    }
    absent = set(missing_tables(engine))
    return kpi_tables(**{frame.name: read_frame(engine, frame, cols) for frame, cols in columns.items()
                         if frame.name not in absent})
