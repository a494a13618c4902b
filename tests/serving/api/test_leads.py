"""POST /score_leads over HTTP against the real server: parity with the batch job and the registry model, bad input."""

from __future__ import annotations

import dataclasses
import json
import math
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pandas as pd
import pytest

from features.crm.schema import ACTIVITY_TYPES
from features.crm.store import connect
from features.lead_features import PROFILE_FEATURES, lead_features
from features.lead_history import load_crm_frames
from serving.api.champions import load_champions
from serving.api.schemas import LEAD_FIELDS, ScoreLeadsRequest
from serving.api.service import STALE_MODEL_DAYS, lead_scores
from serving.batch.jobs import score_lead_chunk
from tests.serving.conftest import RunningServer, TrainedStore
from training.clv.predict import new_customer_value
from training.registry import champion_uri, load_registered
from training.tracking import use_tracking

pytestmark = pytest.mark.slow  # the real server over HTTP (started once per session: seconds)

LEAD = {"lead_id": "L-new", "created_at": "2024-03-01T10:00:00Z", "source_channel": "paid_search",
        "activities": [{"activity_type": "pricing_page_view", "occurred_at": "2024-03-02T11:00:00+01:00",
                        "duration_seconds": 40.0}]}


def _text(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def lead_payload(leads: pd.DataFrame, activities: pd.DataFrame) -> list[dict[str, Any]]:
    """CRM rows as the JSON a CRM webhook would send: each lead with its activities."""
    by_lead = {lead_id: group for lead_id, group in activities.groupby("lead_id")}
    payload = []
    for lead in leads.itertuples(index=False):
        events = by_lead.get(lead.lead_id, activities.iloc[:0])
        payload.append({
            "lead_id": lead.lead_id,
            "created_at": lead.created_at.isoformat(),
            **{column: _text(getattr(lead, column)) for column in PROFILE_FEATURES},
            "activities": [{"activity_type": e.activity_type, "occurred_at": e.occurred_at.isoformat(),
                            "duration_seconds": None if math.isnan(e.duration_seconds) else e.duration_seconds}
                           for e in events.itertuples(index=False)],
        })
    return payload


@pytest.fixture(scope="module")
def open_crm_leads(trained_store: TrainedStore) -> tuple[pd.DataFrame, pd.DataFrame]:
    """300 leads open at the store's as-of date, and their activities up to it."""
    engine = connect(trained_store.crm_url)
    frames = load_crm_frames(engine, trained_store.as_of, open_only=True)
    engine.dispose()
    leads = frames.leads.sort_values("lead_id").head(300).reset_index(drop=True)
    return leads, frames.activities[frames.activities["lead_id"].isin(leads["lead_id"])]


def test_service_scores_equal_batch_job_and_registry_scores(client: httpx.Client, trained_store: TrainedStore,
                                                            open_crm_leads: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    leads, activities = open_crm_leads
    as_of = trained_store.as_of
    response = client.post("/score_leads", json={"leads": lead_payload(leads, activities),
                                                 "as_of": as_of.isoformat()})
    assert response.status_code == 200, response.text
    got = pd.DataFrame(response.json()["scores"])

    served = load_champions(trained_store.tracking_uri)
    model, clv = served.get("lead-scoring"), served.get("clv")
    batch = score_lead_chunk(model.model, clv.model, leads, activities, as_of)
    use_tracking(trained_store.tracking_uri)
    pyfunc = load_registered(champion_uri("lead-scoring")).predict(lead_features(leads, activities, as_of))
    for expected in (batch, pyfunc):
        assert got["lead_id"].tolist() == expected["lead_id"].tolist() == leads["lead_id"].tolist()
        for column in ("score", "probability", "band"):
            assert got[column].tolist() == expected[column].tolist(), column
        assert got["reasons"].tolist() == [json.loads(r) for r in expected["reasons"]]
    assert got["expected_value"].tolist() == batch["expected_value"].tolist()
    value = [p * new_customer_value(clv.model, c)
             for p, c in zip(batch["probability"], leads["source_channel"], strict=True)]
    assert got["expected_value"].tolist() == value
    assert set(got["model_version"]) == {model.version}
    assert got["score"].between(0, 100).all() and set(got["band"]) <= {"A", "B", "C", "D"}


def test_unknown_categories_are_scored(client: httpx.Client) -> None:
    lead = LEAD | {"source_channel": "carrier_pigeon", "industry": "time_travel", "company_size": "huge"}
    response = client.post("/score_leads", json={"leads": [lead], "as_of": "2024-04-01"})
    assert response.status_code == 200, response.text
    (score,) = response.json()["scores"]
    assert score["lead_id"] == "L-new" and 0 <= score["score"] <= 100
    assert set(score["reasons"]) == {"up", "down"}
    assert score["expected_value"] >= 0
    assert response.json()["warnings"] == []


@pytest.mark.parametrize(("kind", "hint"), [("Demo_Request", " (did you mean 'demo_request'?)"),
                                            ("demo_requested", " (did you mean 'demo_request'?)"),
                                            ("hologram_call", "")])
def test_unknown_activity_types_get_400_naming_the_activity_the_value_and_the_allowed_ones(
        client: httpx.Client, kind: str, hint: str) -> None:
    lead = LEAD | {"lead_id": "L-typo", "activities": [ACTIVITY, ACTIVITY | {"activity_type": kind}]}
    for lenient in (False, True):
        response = client.post("/score_leads", json={"leads": [LEAD, lead], "as_of": "2024-04-01",
                                                     "lenient": lenient})
        assert response.status_code == 400, response.text
        assert response.json() == {"error": "1 validation error for score_leads", "detail": [{
            "type": "invalid_input", "loc": ["leads", 1, "activities", 1, "activity_type"],
            "msg": f"unknown activity type {kind!r}{hint}; expected one of: {', '.join(ACTIVITY_TYPES)}"}]}


def test_unknown_fields_get_400_naming_where_and_the_fields_expected_there(client: httpx.Client) -> None:
    hint = '(send "lenient": true to ignore unknown fields)'
    cases = [
        ({"leads": [LEAD, LEAD | {"lead_id": "L2", "industy": "software"}]}, ["leads", 1, "industy"],
         f"unknown field; a lead has the fields {', '.join(LEAD_FIELDS)} {hint}"),
        ({"leads": [LEAD | {"activities": [ACTIVITY | {"duration": 40}]}]}, ["leads", 0, "activities", 0, "duration"],
         "unknown field; an activity has the fields activity_type, occurred_at, channel, content_id, "
         f"duration_seconds {hint}"),
        ({"leads": [LEAD], "asof": "2024-04-01"}, ["asof"],
         f"unknown field; the request has the fields lenient, leads, as_of {hint}"),
    ]
    for body, location, message in cases:
        response = client.post("/score_leads", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["detail"] == [{"type": "unknown_field", "loc": location, "msg": message}]


def test_a_lenient_request_ignores_unknown_fields_and_lists_them_in_warnings(client: httpx.Client) -> None:
    strict = client.post("/score_leads", json={"leads": [LEAD], "as_of": "2024-04-01"}).json()
    typos = [LEAD | {"lead_id": f"L{i}", "industy": "software", "activities": [ACTIVITY | {"duration": 40}] * 2}
             for i in range(3)]
    response = client.post("/score_leads", json={"leads": [LEAD, *typos], "as_of": "2024-04-01", "asof": "x",
                                                 "lenient": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["warnings"] == ["unknown field 'asof' of the request ignored",
                                "unknown field 'industy' ignored in 3 leads (first: leads[1])",
                                "unknown field 'duration' ignored in 6 activities (first: leads[1].activities[0])"]
    assert body["scores"][0] == strict["scores"][0]
    assert client.post("/score_leads", json={"leads": typos}).status_code == 400, "leniency is per request"


def test_as_of_defaults_to_now_and_lead_without_activities_is_scored(client: httpx.Client,
                                                                     trained_store: TrainedStore) -> None:
    asked = datetime.now(UTC).replace(tzinfo=None)
    body = client.post("/score_leads", json={"leads": [LEAD | {"activities": []}]}).json()
    assert abs(datetime.fromisoformat(body["as_of"]).replace(tzinfo=None) - asked) < timedelta(minutes=5)
    assert len(body["scores"]) == 1
    data_end = load_champions(trained_store.tracking_uri).get("lead-scoring").data_end
    assert bool(body["warnings"]) == (asked - data_end > timedelta(days=STALE_MODEL_DAYS)), body["warnings"]


def test_an_as_of_long_after_the_training_data_gets_a_warning(client: httpx.Client,
                                                             trained_store: TrainedStore) -> None:
    model = load_champions(trained_store.tracking_uri).get("lead-scoring")
    assert model.data_end is not None, "the champion records where its training data ends"
    for days, warned in ((STALE_MODEL_DAYS - 1, False), (STALE_MODEL_DAYS + 30, True)):
        as_of = model.data_end + timedelta(days=days)
        body = client.post("/score_leads", json={"leads": [LEAD], "as_of": as_of.isoformat()}).json()
        assert bool(body["warnings"]) == warned, body
    (warning,) = body["warnings"]
    assert warning == (f"stale model: as_of ({as_of:%Y-%m-%d %H:%M}) is {STALE_MODEL_DAYS + 30} days after the end "
                       f"of the data lead-scoring v{model.version} was trained on ({model.data_end:%Y-%m-%d %H:%M}); "
                       "leads and what makes them convert may have changed since, so read the scores with care "
                       "and retrain the model (leadval train leads) on recent data")


def test_models_without_a_recorded_data_end_get_no_staleness_warning(trained_store: TrainedStore) -> None:
    served = load_champions(trained_store.tracking_uri)
    model = served.get("lead-scoring")
    request = ScoreLeadsRequest.model_validate({"leads": [LEAD], "as_of": "2199-01-01"})
    unknown = dataclasses.replace(served, loaded=served.loaded | {"lead-scoring": dataclasses.replace(model,
                                                                                                     data_end=None)})
    assert lead_scores(unknown, request).warnings == []
    old = dataclasses.replace(served, loaded=served.loaded | {"lead-scoring": dataclasses.replace(
        model, data_end=datetime(2025, 12, 31))})
    (warning,) = lead_scores(old, request).warnings
    assert warning.startswith("stale model: as_of (2199-01-01 00:00) is ")


def test_the_openapi_document_describes_warnings_lenient_and_activity_types(client: httpx.Client) -> None:
    schemas = client.get("/docs.json").json()["components"]["schemas"]
    for response in ("ScoreLeadsResponseIODescriptor", "PredictCLVResponseIODescriptor"):
        warnings = schemas[response]["properties"]["warnings"]
        assert (warnings["type"], warnings["items"]) == ("array", {"type": "string"}), response
    for request in ("ScoreLeadsRequestIODescriptor", "PredictCLVRequestIODescriptor"):
        assert schemas[request]["properties"]["lenient"] | {"description": ""} == {
            "default": False, "description": "", "title": "Lenient", "type": "boolean"}, request
    assert schemas["Activity"]["properties"]["activity_type"]["enum"] == list(ACTIVITY_TYPES)
    assert all(schemas[name]["additionalProperties"] is False for name in ("Activity", "Lead", "Customer", "Order"))


def _problems(response: httpx.Response) -> list[tuple[list, str]]:
    assert response.status_code == 400, response.text
    return [(item["loc"], item["msg"]) for item in response.json()["detail"]]


ACTIVITY = LEAD["activities"][0]


@pytest.mark.parametrize(
    ("lead", "location", "says"),
    [
        ({k: v for k, v in LEAD.items() if k != "created_at"}, ["created_at"], "Field required"),
        ({k: v for k, v in LEAD.items() if k != "lead_id"}, ["lead_id"], "Field required"),
        (LEAD | {"lead_id": 42}, ["lead_id"], "valid string"),
        (LEAD | {"source_channel": None}, ["source_channel"], "valid string"),
        (LEAD | {"created_at": "31/12/2024"}, ["created_at"], "ISO 8601"),
        (LEAD | {"created_at": "2024"}, ["created_at"], "at least 10 characters"),
        (LEAD | {"created_at": 1_700_000_000}, ["created_at"], "valid string"),
        (LEAD | {"created_at": "2024-02-30T10:00:00"}, ["created_at"], "ISO 8601"),
        (LEAD | {"created_at": "0001-01-01T00:00:00"}, ["created_at"], "between 1970-01-01 and 2200-01-01"),
        (LEAD | {"activities": {"activity_type": "page_view"}}, ["activities"], "valid array"),
        (LEAD | {"activities": [ACTIVITY | {"occurred_at": "yesterday, 5 pm"}]}, ["activities", 0, "occurred_at"],
         "ISO 8601"),
        (LEAD | {"activities": [ACTIVITY, ACTIVITY | {"occurred_at": "2024-03-02T25:00:00"}]},
         ["activities", 1, "occurred_at"], "ISO 8601"),
        (LEAD | {"activities": [ACTIVITY | {"duration_seconds": -3.0}]}, ["activities", 0, "duration_seconds"],
         "greater than or equal to 0"),
        (LEAD | {"activities": [ACTIVITY | {"duration_seconds": "40"}]}, ["activities", 0, "duration_seconds"],
         "valid number"),
        (LEAD | {"activities": [{k: v for k, v in ACTIVITY.items() if k != "activity_type"}]},
         ["activities", 0, "activity_type"], "Field required"),
    ],
)
def test_bad_leads_get_400_naming_field_and_index(client: httpx.Client, lead: dict, location: list,
                                                  says: str) -> None:
    problems = _problems(client.post("/score_leads", json={"leads": [LEAD | {"lead_id": "ok"}, lead],
                                                           "as_of": "2024-06-01"}))
    assert any(loc == ["leads", 1, *location] and says in msg for loc, msg in problems), problems


def test_request_level_lead_problems(client: httpx.Client) -> None:
    raw = json.dumps({"leads": [LEAD | {"activities": [ACTIVITY | {"duration_seconds": "@"}]}]}).replace('"@"', "NaN")
    problems = _problems(client.post("/score_leads", content=raw, headers={"content-type": "application/json"}))
    assert problems == [(["leads", 0, "activities", 0, "duration_seconds"], "Input should be a finite number")]
    assert _problems(client.post("/score_leads", json={"leads": []}))[0][0] == ["leads"]
    many = [LEAD | {"lead_id": f"L{i}", "activities": []} for i in range(10_001)]
    assert "at most 10000" in _problems(client.post("/score_leads", json={"leads": many}))[0][1]
    repeated = _problems(client.post("/score_leads", json={"leads": [LEAD, LEAD]}))
    assert "leads[1].lead_id repeats leads[0]" in repeated[0][1]
    early = _problems(client.post("/score_leads", json={"leads": [LEAD], "as_of": "2024-02-01"}))
    assert "leads[0].created_at is after as_of" in early[0][1]
    assert _problems(client.post("/score_leads", json={"leads": [LEAD], "as_of": "soon"}))[0][0] == ["as_of"]
    assert client.post("/score_leads", content=b"[1, 2", headers={"content-type": "application/json"}
                       ).status_code == 400


def test_parallel_clients_get_no_errors_and_stable_scores(server: RunningServer) -> None:
    def one_client(index: int) -> list[tuple[int, int | None]]:
        results = []
        with server.client() as http:
            for round_ in range(8):
                lead = LEAD | {"lead_id": f"L{index}-{round_}"}
                good = http.post("/score_leads", json={"leads": [lead], "as_of": "2024-04-01"})
                bad = http.post("/score_leads", json={"leads": [lead | {"created_at": "never"}]})
                results += [(good.status_code, good.json()["scores"][0]["score"]), (bad.status_code, None)]
        return results

    with ThreadPoolExecutor(max_workers=24) as pool:
        results = [r for batch in pool.map(one_client, range(24)) for r in batch]
    assert sorted({status for status, _ in results}) == [200, 400]
    assert len({score for status, score in results if status == 200}) == 1
