"""Invariants of the API's input handling and outputs: time parsing in-process, value ranges over HTTP."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from types import SimpleNamespace

import httpx
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from features.errors import InvalidInput
from serving.api.activities import MAX_DURATION_SECONDS
from serving.api.champions import training_data_end
from serving.api.limits import MAX_BODY_ENV, LimitsConfig
from serving.api.request_times import utc_times
from serving.api.schemas import ScoreLeadsRequest
from serving.api.service import request_features

MOMENTS = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2199, 12, 30))
OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
HTTP_SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(HealthCheck))


@given(moment=MOMENTS, offset=OFFSETS, with_offset=st.booleans())
@settings(max_examples=200, deadline=None, derandomize=True, database=None)
def test_times_with_any_offset_read_as_the_same_utc_instant(moment: datetime, offset: timezone,
                                                             with_offset: bool) -> None:
    local = moment.replace(tzinfo=timezone.utc).astimezone(offset)
    text = local.isoformat() if with_offset else moment.isoformat()
    stamps, bad = utc_times([text])
    assert bad is None
    assert stamps[0] == np.datetime64(moment, "ns")


def test_times_without_offsets_read_exactly_as_pandas_reads_them() -> None:
    texts = ["2024-01-01", "2024-01-01T10:00", "2024-01-01 10:00:05", "2024-02-29T23:59:59.5",
             "2024-01-01T10:00:00.123456789", "1970-01-01T00:00:00", "2199-12-31T23:59:59.999"]
    stamps, bad = utc_times(texts)
    expected = pd.to_datetime(texts, utc=True, format="ISO8601").tz_localize(None).to_numpy()
    assert bad is None and (stamps == expected).all()
    mixed, bad = utc_times([*texts, "2024-01-01T12:00:00+02:00", "2024-01-01T10:00:00Z"])
    assert bad is None and (mixed[: len(texts)] == expected).all()
    assert mixed[-2] == mixed[-1] == np.datetime64("2024-01-01T10:00:00", "ns")


@pytest.mark.parametrize("text", ["2024-02-30", "1969-12-31T23:59:59Z", "2200-01-01", "9999-01-01", "2604-06-01T10:00",
                                  "1435-06-01", "20240-01-01", "2604-06-01T10:00:00.123456789",
                                  "2024-01-01T10:00:00 and more", "31/12/2024 10:00"])
def test_unreadable_or_out_of_range_times_are_pointed_at(text: str) -> None:
    assert utc_times(["2024-01-01", text])[1] == 1


ACTIVITY_ITEMS = st.fixed_dictionaries(
    {"activity_type": st.sampled_from(["page_view", "demo_request", "webinar_attend"]),
     "occurred_at": st.dates().map(date.isoformat)},
    optional={"duration_seconds": st.none() | st.floats(min_value=0, max_value=MAX_DURATION_SECONDS), "channel": st.none()},
)


@given(activities=st.lists(ACTIVITY_ITEMS, max_size=8))
@settings(max_examples=100, deadline=None, derandomize=True, database=None)
def test_activities_become_columns_in_the_order_sent(activities: list[dict]) -> None:
    lead = {"lead_id": "L1", "created_at": "2024-01-01", "source_channel": "email", "activities": activities}
    request = ScoreLeadsRequest.model_validate_json(json.dumps({"leads": [lead]}))
    columns = request.leads[0]["activities"]
    assert len(columns) == len(activities)
    assert columns.activity_type == [a["activity_type"] for a in activities]
    assert columns.occurred_at == [a["occurred_at"] for a in activities]
    assert columns.duration_seconds == [a.get("duration_seconds") for a in activities]
    assert ScoreLeadsRequest.model_validate_json(request.model_dump_json()).leads[0]["activities"] == columns


def test_leniency_is_read_first_and_lasts_one_request() -> None:
    lead = {"lead_id": "L1", "created_at": "2024-01-01", "source_channel": "email", "industy": "software",
            "activities": [{"activity_type": "page_view", "occurred_at": "2024-01-02", "duration": 4}]}
    lenient_last = '{"leads": [' + json.dumps(lead) + '], "lenient": true}'  # the flag after the leads it covers
    request = ScoreLeadsRequest.model_validate_json(lenient_last)
    assert request.ignored_fields == ["unknown field 'industy' ignored in 1 lead (first: leads[0])",
                                      "unknown field 'duration' ignored in 1 activity (first: leads[0].activities[0])"]
    assert "industy" not in request.leads[0]
    assert request.leads[0]["activities"].ignored == (("activities[0]", "duration"),)
    with pytest.raises(ValidationError) as strict:
        ScoreLeadsRequest.model_validate_json(json.dumps({"leads": [lead]}))
    assert sorted(e["loc"] for e in strict.value.errors()) == [("leads", 0, "activities", 0, "duration"),
                                                               ("leads", 0, "industy")]
    assert ScoreLeadsRequest.model_validate({"leads": [lead], "lenient": True}).lenient


def test_unknown_activity_types_are_refused_when_the_request_is_scored() -> None:
    leads = [{"lead_id": f"L{i}", "created_at": "2024-01-01", "source_channel": "email",
              "activities": [{"activity_type": kind, "occurred_at": "2024-01-02"} for kind in kinds]}
             for i, kinds in enumerate([["page_view"], [], ["demo_request", "email_open", "Email_Open"]])]
    request = ScoreLeadsRequest.model_validate({"leads": leads, "as_of": "2024-02-01"})
    with pytest.raises(ValidationError) as refused:
        request_features(request)
    (error,) = refused.value.errors()
    assert error["loc"] == ("leads", 2, "activities", 2, "activity_type")
    assert error["msg"].startswith("unknown activity type 'Email_Open' (did you mean 'email_open'?); expected one of: "
                                   "web_session, page_view,")
    long = ScoreLeadsRequest.model_validate({"leads": [leads[0] | {"activities": [
        {"activity_type": "x" * 32, "occurred_at": "2024-01-02"}]}], "as_of": "2024-02-01"})
    with pytest.raises(ValidationError, match="unknown activity type 'x{32}'; expected"):
        request_features(long)


def test_training_data_end_comes_from_the_scorer_or_the_run() -> None:
    scorer = SimpleNamespace(info={"data_end": "2025-12-30T23:58:01"})
    assert training_data_end(scorer, {}) == datetime(2025, 12, 30, 23, 58, 1)
    assert training_data_end(object(), {"data_end": "2025-12-31T01:00:00+01:00"}) == datetime(2025, 12, 31)
    assert training_data_end(SimpleNamespace(info={}), {"data_end": "soon"}) is None
    assert training_data_end(object(), {}) is None


def test_body_limit_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_BODY_ENV, "lots")
    with pytest.raises(InvalidInput, match=MAX_BODY_ENV):
        LimitsConfig.from_environment()
    monkeypatch.setenv(MAX_BODY_ENV, "1024")
    assert LimitsConfig.from_environment().max_body_bytes == 1024


@st.composite
def rfm_summaries(draw: st.DrawFn) -> dict:
    frequency = draw(st.integers(min_value=0, max_value=60))
    age = draw(st.floats(min_value=0, max_value=3_000, allow_nan=False))
    recency = 0.0 if frequency == 0 else draw(st.floats(min_value=0, max_value=age, allow_nan=False))
    value = draw(st.floats(min_value=0, max_value=10_000, allow_nan=False))
    return {"frequency": frequency, "recency_days": recency, "age_days": age, "monetary_value": value}


@pytest.mark.slow  # the real server over HTTP (started once per session: seconds)
@given(customers=st.lists(rfm_summaries(), min_size=1, max_size=20),
       horizon=st.floats(min_value=1, max_value=3_650), rate=st.floats(min_value=0, max_value=1))
@HTTP_SETTINGS
def test_any_valid_customers_get_values_in_range(client: httpx.Client, customers: list[dict], horizon: float,
                                                  rate: float) -> None:
    body = {"customers": [c | {"customer_id": f"c{i}"} for i, c in enumerate(customers)],
            "horizon_days": horizon, "discount_rate": rate}
    response = client.post("/predict_clv", json=body)
    assert response.status_code == 200, response.text
    for value in response.json()["customers"]:
        assert 0 <= value["p_alive"] <= 1
        assert value["expected_purchases"] >= 0
        assert value["clv"] is None or value["clv"] >= 0


ACTIVITY_TYPES = st.sampled_from(["page_view", "pricing_page_view", "email_sent", "email_open", "email_click",
                                  "demo_request", "webinar_attend", "social_engagement"])


@st.composite
def leads(draw: st.DrawFn) -> dict:
    created = draw(st.datetimes(min_value=datetime(2023, 1, 1), max_value=datetime(2024, 5, 31)))
    events = draw(st.lists(st.tuples(ACTIVITY_TYPES, st.integers(min_value=0, max_value=400 * 24 * 60),
                                     st.none() | st.floats(min_value=0, max_value=7_200)), max_size=30))
    return {"created_at": created.isoformat(),
            "source_channel": draw(st.sampled_from(["paid_search", "organic", "referral", "unheard_of"])),
            "email_domain_type": draw(st.none() | st.sampled_from(["business", "free", "edu"])),
            "activities": [{"activity_type": kind, "occurred_at": (created + timedelta(minutes=m)).isoformat(),
                            "duration_seconds": seconds} for kind, m, seconds in events]}


@pytest.mark.slow  # the real server over HTTP (started once per session: seconds)
@given(batch=st.lists(leads(), min_size=1, max_size=10))
@HTTP_SETTINGS
def test_any_valid_leads_get_consistent_scores(client: httpx.Client, batch: list[dict]) -> None:
    body = {"leads": [lead | {"lead_id": f"L{i}"} for i, lead in enumerate(batch)], "as_of": "2024-06-01"}
    response = client.post("/score_leads", json=body)
    assert response.status_code == 200, response.text
    scores = response.json()["scores"]
    assert [s["lead_id"] for s in scores] == [f"L{i}" for i in range(len(batch))]
    for score in scores:
        assert 0 <= score["probability"] <= 1
        assert 1 <= score["score"] <= 99
        assert score["band"] in {"A", "B", "C", "D"}
        assert score["expected_value"] >= 0
    ranked = sorted(scores, key=lambda s: s["probability"])
    assert [s["score"] for s in ranked] == sorted(s["score"] for s in ranked)  # monotone in probability
    assert [s["band"] for s in sorted(scores, key=lambda s: s["score"])] == sorted(
        (s["band"] for s in scores), reverse=True)  # bands are score ranges, D lowest
