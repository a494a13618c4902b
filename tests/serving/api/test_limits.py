"""The HTTP guards against the real server: API key (401), body size (413, before the body is read), load."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest

from tests.serving.conftest import MAX_BODY_BYTES, RunningServer

pytestmark = pytest.mark.slow  # the real server over HTTP (started once per session: seconds)

CUSTOMER = {"customer_id": "c1", "frequency": 2, "recency_days": 40.0, "age_days": 90.0, "monetary_value": 55.0}


def test_requests_without_the_right_key_get_401(server: RunningServer) -> None:
    body = {"customers": [CUSTOMER]}
    with server.client(authorised=False) as anonymous:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {server.api_key}"}):
            for method, path in (("POST", "/predict_clv"), ("POST", "/score_leads"), ("GET", "/models"),
                                 ("GET", "/docs.json")):
                response = anonymous.request(method, path, json=body, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert response.headers["www-authenticate"] == "Bearer"
        keyed = anonymous.post("/predict_clv", json=body, headers={"Authorization": f"Bearer {server.api_key}"})
        assert keyed.status_code == 200


def test_bodies_over_the_limit_get_413(client: httpx.Client) -> None:
    padding = "x" * (MAX_BODY_BYTES + 1)
    response = client.post("/predict_clv", content=padding, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert f"{MAX_BODY_BYTES:,}" in response.json()["error"]

    def chunked():
        for _ in range(MAX_BODY_BYTES // 65_536 + 2):
            yield b"x" * 65_536

    response = client.post("/predict_clv", content=chunked(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert client.post("/predict_clv", json={"customers": [CUSTOMER]}).status_code == 200


def test_413_comes_before_the_body_is_sent(server: RunningServer) -> None:
    """Only the headers are sent: the answer cannot have waited for the (announced 1 GB) body."""
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as raw:
        raw.sendall(b"POST /predict_clv HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Authorization: Bearer " + server.api_key.encode() + b"\r\n"
                    b"Content-Length: 1000000000\r\n\r\n{")
        started = time.monotonic()
        reply = raw.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert time.monotonic() - started < 5


def test_many_parallel_clients_get_no_errors(server: RunningServer) -> None:
    def one_client(index: int) -> list[int]:
        statuses = []
        with server.client() as http:
            for round_ in range(10):
                customer = CUSTOMER | {"customer_id": f"c{index}-{round_}"}
                statuses.append(http.post("/predict_clv", json={"customers": [customer]}).status_code)
                statuses.append(http.post("/predict_clv", json={"customers": [customer | {"frequency": -1}]}
                                          ).status_code)
        return statuses

    with ThreadPoolExecutor(max_workers=32) as pool:
        statuses = [s for result in pool.map(one_client, range(32)) for s in result]
    assert statuses.count(200) == statuses.count(400) == 320
    with server.client() as http:
        assert http.get("/readyz").status_code == 200
