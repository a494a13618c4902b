"""POST /predict_clv and GET /models over HTTP against the real server, and the bad input it refuses."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pandas as pd
import pytest

from features.crm.schema import orders
from features.crm.store import connect, read_frame
from features.rfm import rfm_summary
from serving.api.champions import load_champions
from tests.serving.conftest import RunningServer, TrainedStore
from training.clv.predict import predict_clv, rfm_in_days

pytestmark = pytest.mark.slow  # the real server over HTTP (started once per session: seconds)

SUMMARY = {"customer_id": "c1", "frequency": 3, "recency_days": 120.0, "age_days": 300.0, "monetary_value": 80.0}


def _problems(response: httpx.Response) -> list[tuple[list, str]]:
    assert response.status_code == 400, response.text
    return [(item["loc"], item["msg"]) for item in response.json()["detail"]]


def test_summary_and_orders_give_the_in_process_values(client: httpx.Client, trained_store: TrainedStore) -> None:
    engine = connect(trained_store.crm_url)
    crm_orders = read_frame(engine, orders)
    engine.dispose()
    as_of = trained_store.as_of
    some = sorted(crm_orders["customer_id"].unique())[:25]
    picked = crm_orders[crm_orders["customer_id"].isin(some) & (crm_orders["ordered_at"] <= as_of)]
    customers = [
        {"customer_id": cid, "orders": [{"ordered_at": t.isoformat(), "amount": a}
                                        for t, a in zip(group["ordered_at"], group["amount"], strict=True)]}
        for cid, group in picked.groupby("customer_id")
    ] + [SUMMARY]
    response = client.post("/predict_clv", json={"customers": customers, "as_of": as_of.isoformat(),
                                                 "horizon_days": 180, "discount_rate": 0.05})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [c["customer_id"] for c in body["customers"]] == [c["customer_id"] for c in customers]

    model = load_champions(trained_store.tracking_uri).get("clv")
    expected_input = pd.concat([rfm_in_days(rfm_summary(picked, as_of, time_unit="D"), "D"),
                                pd.DataFrame([SUMMARY])], ignore_index=True)
    expected = predict_clv(model.model, expected_input, 180, 0.05)
    got = pd.DataFrame(body["customers"])
    for column in ("expected_purchases", "p_alive", "expected_order_value", "clv"):
        assert got[column].tolist() == expected[column].tolist(), column
    assert got["segment"].tolist() == expected["segment"].tolist()
    assert set(got["model_version"]) == {model.version}
    assert (body["horizon_days"], body["discount_rate"]) == (180, 0.05)


def test_horizon_and_rate_default_to_the_model(client: httpx.Client) -> None:
    body = client.post("/predict_clv", json={"customers": [SUMMARY]}).json()
    assert (body["horizon_days"], body["discount_rate"]) == (365, 0.1)
    assert 0 <= body["customers"][0]["p_alive"] <= 1 and body["customers"][0]["clv"] >= 0


def test_models_lists_both_champions_with_their_facts(client: httpx.Client) -> None:
    body = client.get("/models").json()
    assert body["missing"] == []
    by_name = {m["name"]: m for m in body["models"]}
    assert set(by_name) == {"lead-scoring", "clv"}
    for facts in by_name.values():
        assert facts["uri"] == f"models:/{facts['name']}@champion"
        assert facts["version"] and facts["run_id"] and facts["trained_at"]
        assert facts["metrics"]
    assert "holdout_mae" in by_name["clv"]["metrics"]


def test_probes_answer_without_the_key(server: RunningServer) -> None:
    with server.client(authorised=False) as anonymous:
        for path in ("/livez", "/readyz", "/metrics"):
            assert anonymous.get(path).status_code == 200, path


@pytest.mark.parametrize(
    ("customer", "location", "says"),
    [
        ({"customer_id": "c", "frequency": 2, "recency_days": 10.0, "age_days": 30.0}, ["customers", 0],
         "monetary_value"),
        ({**SUMMARY, "frequency": "3"}, ["customers", 0, "frequency"], "integer"),
        ({**SUMMARY, "frequency": 2.5}, ["customers", 0, "frequency"], "integer"),
        ({**SUMMARY, "frequency": -1}, ["customers", 0, "frequency"], "greater than or equal to 0"),
        ({**SUMMARY, "monetary_value": -5.0}, ["customers", 0, "monetary_value"], "greater than or equal to 0"),
        ({**SUMMARY, "recency_days": 400.0}, ["customers", 0], "recency_days"),
        ({**SUMMARY, "frequency": 0}, ["customers", 0], "recency_days must be 0"),
        ({"customer_id": "c", "orders": []}, ["customers", 0, "orders"], "at least 1"),
        ({"customer_id": "c", "orders": [{"ordered_at": "yesterday", "amount": 5.0}]},
         ["customers", 0, "orders", 0, "ordered_at"], "ISO 8601"),
        ({"customer_id": "c", "orders": [{"ordered_at": "2024-02-30", "amount": 5.0}]},
         ["customers", 0, "orders", 0, "ordered_at"], "datetime"),
        ({"customer_id": "c", "orders": [{"ordered_at": "2024-02-01", "amount": -1.0}]},
         ["customers", 0, "orders", 0, "amount"], "greater than or equal to 0"),
        ({**SUMMARY, "orders": [{"ordered_at": "2024-02-01", "amount": 1.0}]}, ["customers", 0], "not both"),
        ({**SUMMARY, "customer_id": ""}, ["customers", 0, "customer_id"], "at least 1 character"),
    ],
)
def test_bad_customers_get_400_naming_field_and_index(client: httpx.Client, customer: dict, location: list,
                                                      says: str) -> None:
    problems = _problems(client.post("/predict_clv", json={"customers": [SUMMARY | {"customer_id": "ok"}, customer]}))
    location = [location[0], 1, *location[2:]]
    assert any(loc == location and says in msg for loc, msg in problems), problems


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_infinity_are_refused(client: httpx.Client, literal: str) -> None:
    raw = ('{"customers": [{"customer_id": "c", "frequency": 1, "recency_days": 5, "age_days": 9, '
           f'"monetary_value": {literal}}}]}}')
    problems = _problems(client.post("/predict_clv", content=raw, headers={"content-type": "application/json"}))
    assert problems == [(["customers", 0, "monetary_value"], "Input should be a finite number")]


def test_request_level_problems_are_refused(client: httpx.Client) -> None:
    assert _problems(client.post("/predict_clv", json={"customers": []}))[0][0] == ["customers"]
    assert _problems(client.post("/predict_clv", json={}))[0] == (["customers"], "Field required")
    many = [SUMMARY | {"customer_id": f"c{i}"} for i in range(10_001)]
    assert "at most 10000" in _problems(client.post("/predict_clv", json={"customers": many}))[0][1]
    repeated = _problems(client.post("/predict_clv", json={"customers": [SUMMARY, SUMMARY]}))
    assert "customers[1].customer_id repeats customers[0]" in repeated[0][1]
    for field, value in (("horizon_days", 0), ("horizon_days", 100_000), ("discount_rate", -0.5)):
        problems = _problems(client.post("/predict_clv", json={"customers": [SUMMARY], field: value}))
        assert problems[0][0] == [field]
    future = (datetime.now() + timedelta(days=3)).date().isoformat()
    late = _problems(client.post("/predict_clv", json={
        "customers": [{"customer_id": "c", "orders": [{"ordered_at": future, "amount": 3.0}]}]}))
    assert "customers[0].orders[0].ordered_at is after as_of" in late[0][1]
    assert client.post("/predict_clv", content=b"{not json", headers={"content-type": "application/json"}
                       ).status_code == 400


def test_bad_requests_are_neither_echoed_nor_logged(client: httpx.Client, server: RunningServer) -> None:
    secret = "jane.doe@example.com"
    response = client.post("/predict_clv", json={"customers": [SUMMARY | {"customer_id": secret, "frequency": secret}]})
    assert response.status_code == 400
    assert secret not in response.text
    assert client.get("/livez").status_code == 200
    assert secret not in server.log.read_text(errors="replace")
