"""Leads and activities from the CRM database as they were at an ``as_of`` instant.

"As they were": leads created after ``as_of`` and activities after it are not read, and a conversion
after ``as_of`` is blanked (``converted_at`` and ``customer_id`` empty), so nothing downstream can
see the future. Only the columns lead features and labels need are read, filtered in SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import pandas as pd
from sqlalchemy import Engine, and_, func, or_, select

from features.crm import schema
from features.crm.store import read_frame
from features.errors import InvalidInput
from features.lead_features import ACTIVITY_INPUT_COLUMNS, LEAD_INPUT_COLUMNS, as_of_timestamp

LEAD_COLUMNS: tuple[str, ...] = (*LEAD_INPUT_COLUMNS, "converted_at", "customer_id")


@dataclass(frozen=True)
class CrmFrames:
    """The CRM's leads and activities as of ``as_of`` (None: everything in the database)."""

    leads: pd.DataFrame
    activities: pd.DataFrame
    as_of: pd.Timestamp | None


def load_crm_frames(
    engine: Engine,
    as_of: str | date | datetime | pd.Timestamp | None = None,
    open_only: bool = False,
) -> CrmFrames:
    """Leads (:data:`LEAD_COLUMNS`) and activities (lead_id, occurred_at, activity_type, duration_seconds).

    Parameters
    ----------
    engine
        The CRM database.
    as_of
        Read the CRM as it was at this instant; None reads everything.
    open_only
        Only leads not converted by ``as_of`` (the ones a scoring run scores) and their activities.
    """
    at = None if as_of is None else as_of_timestamp(as_of).to_pydatetime()
    leads_t, activities_t = schema.leads, schema.activities
    lead_filter = [] if at is None else [leads_t.c.created_at <= at]
    if open_only:
        lead_filter.append(leads_t.c.converted_at.is_(None) if at is None
                           else or_(leads_t.c.converted_at.is_(None), leads_t.c.converted_at > at))
    leads = read_frame(engine, leads_t, LEAD_COLUMNS, and_(*lead_filter) if lead_filter else None)
    activity_filter = [] if at is None else [activities_t.c.occurred_at <= at]
    if open_only:
        chosen = select(leads_t.c.lead_id).where(and_(*lead_filter))
        activity_filter.append(activities_t.c.lead_id.in_(chosen))
    activities = read_frame(engine, activities_t, ACTIVITY_INPUT_COLUMNS,
                            and_(*activity_filter) if activity_filter else None)
    if at is not None:
        later = leads["converted_at"] > pd.Timestamp(at)
        leads.loc[later, ["converted_at", "customer_id"]] = None
    return CrmFrames(leads=leads, activities=activities, as_of=None if at is None else pd.Timestamp(at))


def crm_period(engine: Engine) -> tuple[pd.Timestamp, pd.Timestamp]:
    """When the CRM starts (first lead created) and ends (latest lead, activity or conversion)."""
    leads_t, activities_t = schema.leads, schema.activities
    with engine.connect() as conn:
        first, last_lead, last_conversion = conn.execute(select(
            func.min(leads_t.c.created_at), func.max(leads_t.c.created_at), func.max(leads_t.c.converted_at)
        )).one()
        last_activity = conn.execute(select(func.max(activities_t.c.occurred_at))).scalar()
    if first is None:
        raise InvalidInput("leads: the CRM has no leads; import or generate some first")
    ends = [pd.Timestamp(v) for v in (last_lead, last_conversion, last_activity) if v is not None]
    return pd.Timestamp(first), max(ends)
