"""POST /score_leads with activities sent as columns (``activity_columns``), over HTTP against the real server:
the same answers as activities sent as objects, and 400s naming the column and position of what is wrong."""

from __future__ import annotations

from typing import Any

import httpx
import pandas as pd
import pytest

from features.crm.schema import ACTIVITY_TYPES
from features.crm.store import connect
from features.lead_history import load_crm_frames
from tests.serving.api.test_leads import lead_payload
from tests.serving.conftest import TrainedStore

pytestmark = pytest.mark.slow  # the real server over HTTP (started once per session: seconds)

LEAD = {"lead_id": "L-col", "created_at": "2024-03-01T10:00:00Z", "source_channel": "paid_search"}
COLUMNS = {"activity_type": ["pricing_page_view", "email_open"],
           "occurred_at": ["2024-03-02T11:00:00+01:00", "2024-03-03"], "duration_seconds": [40.0, None]}
HINT = '(send "lenient": true to ignore unknown fields)'


def as_columns(lead: dict[str, Any], fields: tuple[str, ...] = ("activity_type", "occurred_at", "duration_seconds")
               ) -> dict[str, Any]:
    """``lead`` with its activities sent as columns of ``fields``."""
    rest = {k: v for k, v in lead.items() if k != "activities"}
    return rest | {"activity_columns": {f: [a.get(f) for a in lead["activities"]] for f in fields}}


def _errors(client: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = client.post("/score_leads", json=body)
    assert response.status_code == 400, response.text
    return response.json()["detail"]


def test_columns_score_exactly_as_activity_objects(client: httpx.Client, trained_store: TrainedStore) -> None:
    engine = connect(trained_store.crm_url)
    frames = load_crm_frames(engine, trained_store.as_of, open_only=True)
    engine.dispose()
    leads = frames.leads.sort_values("lead_id").head(200).reset_index(drop=True)
    activities = frames.activities[frames.activities["lead_id"].isin(leads["lead_id"])]
    rows = lead_payload(leads, activities)
    assert sum(len(lead["activities"]) for lead in rows) > 1_000
    when = trained_store.as_of.isoformat()
    as_rows = client.post("/score_leads", json={"leads": rows, "as_of": when})
    mixed = [as_columns(lead) if index % 2 else lead for index, lead in enumerate(rows)]
    for leads_sent in ([as_columns(lead) for lead in rows], mixed):
        as_cols = client.post("/score_leads", json={"leads": leads_sent, "as_of": when})
        assert as_cols.status_code == as_rows.status_code == 200, as_cols.text
        assert as_cols.json() == as_rows.json()
    assert pd.DataFrame(as_rows.json()["scores"])["lead_id"].tolist() == leads["lead_id"].tolist()


def test_columns_of_other_lengths_get_400_naming_them(client: httpx.Client) -> None:
    lead = LEAD | {"activity_columns": COLUMNS | {"duration_seconds": [40.0]}}
    assert _errors(client, {"leads": [LEAD, lead]}) == [{
        "type": "column_lengths", "loc": ["leads", 1, "activity_columns"],
        "msg": "duration_seconds has 1 values but activity_type has 2: every column needs one value per activity"}]


def test_bad_values_in_columns_get_400_naming_column_and_position(client: httpx.Client) -> None:
    bad = COLUMNS | {"duration_seconds": [40.0, -1.0], "occurred_at": ["2024-03-02", "May 1st 2024"]}
    detail = _errors(client, {"leads": [LEAD | {"activity_columns": bad}]})
    assert [(e["loc"], e["msg"]) for e in detail] == [
        (["leads", 0, "activity_columns", "duration_seconds", 1], "Input should be greater than or equal to 0")]
    late = COLUMNS | {"occurred_at": ["2024-03-02", "2024-13-45T00:00:00"]}
    (error,) = _errors(client, {"leads": [LEAD | {"activity_columns": late}], "as_of": "2024-04-01"})
    assert error["loc"] == ["leads", 0, "activity_columns", "occurred_at", 1] and error["msg"].startswith("expected")
    typo = COLUMNS | {"activity_type": ["pricing_page_view", "Email_Open"]}
    assert _errors(client, {"leads": [LEAD | {"activity_columns": typo}], "as_of": "2024-04-01"}) == [{
        "type": "invalid_input", "loc": ["leads", 0, "activity_columns", "activity_type", 1],
        "msg": f"unknown activity type 'Email_Open' (did you mean 'email_open'?); expected one of: "
               f"{', '.join(ACTIVITY_TYPES)}"}]
    missing = {k: v for k, v in COLUMNS.items() if k != "occurred_at"}
    assert [e["loc"] for e in _errors(client, {"leads": [LEAD | {"activity_columns": missing}]})] == [
        ["leads", 0, "activity_columns", "occurred_at"]]


def test_both_shapes_in_one_lead_and_unknown_columns(client: httpx.Client) -> None:
    both = LEAD | {"activity_columns": COLUMNS, "activities": []}
    assert [e["msg"] for e in _errors(client, {"leads": [both]})] == [
        "leads[0] has both activities and activity_columns: send its activities one way"]
    typo = LEAD | {"activity_columns": COLUMNS | {"duration": [1.0, 2.0]}}
    assert _errors(client, {"leads": [typo]}) == [{
        "type": "unknown_field", "loc": ["leads", 0, "activity_columns", "duration"],
        "msg": "unknown field; activity_columns has the fields activity_type, occurred_at, channel, content_id, "
               f"duration_seconds {HINT}"}]
    response = client.post("/score_leads", json={"leads": [typo], "as_of": "2024-04-01", "lenient": True})
    assert response.status_code == 200, response.text
    assert response.json()["warnings"] == [
        "unknown field 'duration' ignored in 1 activity_columns (first: leads[0].activity_columns)"]
    plain = client.post("/score_leads", json={"leads": [LEAD | {"activity_columns": COLUMNS}], "as_of": "2024-04-01"})
    assert response.json()["scores"] == plain.json()["scores"]
    no_durations = {k: v for k, v in COLUMNS.items() if k != "duration_seconds"}
    nulls = COLUMNS | {"duration_seconds": [None, None]}
    answers = [client.post("/score_leads", json={"leads": [LEAD | {"activity_columns": columns}],
                                                 "as_of": "2024-04-01"}).json() for columns in (no_durations, nulls)]
    assert answers[0] == answers[1] and answers[0]["scores"]
