"""Loading the CRM as it was at an as-of date, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import pandas as pd
import pytest

from features.crm import schema
from features.crm.store import connect, create_schema, insert_frame
from features.errors import InvalidInput
from features.lead_history import crm_period, load_crm_frames

AS_OF = pd.Timestamp("2025-03-01")


def _fill(url: str) -> None:
    engine = connect(url)
    create_schema(engine)
    leads = pd.DataFrame({
        "lead_id": ["L1", "L2", "L3", "L4"],
        "created_at": pd.to_datetime(["2025-01-01", "2025-01-05", "2025-02-01", "2025-04-01"]),
        "source_channel": ["email", "referral", "events", "direct"],
        "campaign": ["c1", None, None, None],
        "converted_at": pd.to_datetime(["2025-02-01", "2025-03-15", None, None]),
        "customer_id": ["C1", "C2", None, None],
    })
    customers = pd.DataFrame({"customer_id": ["C1", "C2"], "lead_id": ["L1", "L2"],
                              "created_at": pd.to_datetime(["2025-02-01", "2025-03-15"])})
    activities = pd.DataFrame({
        "activity_id": ["A1", "A2", "A3", "A4"],
        "lead_id": ["L1", "L2", "L2", "L3"],
        "occurred_at": pd.to_datetime(["2025-01-02", "2025-02-27", "2025-03-02", "2025-02-02"]),
        "activity_type": ["web_session", "demo_request", "pricing_page_view", "email_open"],
        "duration_seconds": [30.0, None, 12.0, None],
    })
    with engine.begin() as conn:
        insert_frame(conn, schema.leads, leads)
        insert_frame(conn, schema.customers, customers)
        insert_frame(conn, schema.activities, activities)
    engine.dispose()


def test_crm_as_it_was(db_url: str) -> None:
    _fill(db_url)
    engine = connect(db_url)
    crm = load_crm_frames(engine, AS_OF)
    leads = crm.leads.set_index("lead_id")
    assert list(leads.index) == ["L1", "L2", "L3"]
    assert leads.loc["L1", "converted_at"] == pd.Timestamp("2025-02-01") and leads.loc["L1", "customer_id"] == "C1"
    assert pd.isna(leads.loc["L2", "converted_at"]) and pd.isna(leads.loc["L2", "customer_id"])  # converted later
    assert sorted(crm.activities["occurred_at"]) == list(pd.to_datetime(["2025-01-02", "2025-02-02", "2025-02-27"]))
    opened = load_crm_frames(engine, AS_OF, open_only=True)
    assert list(opened.leads["lead_id"]) == ["L2", "L3"]
    assert set(opened.activities["lead_id"]) == {"L2", "L3"} and len(opened.activities) == 2
    everything = load_crm_frames(engine)
    assert len(everything.leads) == 4 and len(everything.activities) == 4 and everything.as_of is None
    assert crm_period(engine) == (pd.Timestamp("2025-01-01"), pd.Timestamp("2025-04-01"))
    engine.dispose()


def test_empty_crm_has_no_period(sqlite_url: str) -> None:
    engine = connect(sqlite_url)
    create_schema(engine)
    with pytest.raises(InvalidInput, match="no leads"):
        crm_period(engine)
