"""The service under load, against the real server over HTTP: past the limit of large requests in flight the next
gets a 503 with Retry-After at once while single leads and the probes keep flowing; slow bodies get a 408 and a
closed connection, silent connections are closed; requests over the activity or order limit a 413; and a burst of forty 30 MB requests gets
only 200, 413 or 503, never stalls ``/livez`` and leaves the server's memory near where it started.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from serving.api.limits import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_MAX_REQUEST_ACTIVITIES,
    DEFAULT_MAX_REQUEST_ORDERS,
    LARGE_REQUEST_BYTES,
)
from tests.serving.conftest import RunningServer, TrainedStore, start_server, stop_server

pytestmark = pytest.mark.slow  # a real server of its own over HTTP (seconds to start)

BODY_TIMEOUT_S = DEFAULT_BODY_TIMEOUT_S
"""The default: a shorter one would turn the burst's slowest uploads (a loaded machine) into 408s."""
BURST_BODY_BYTES = 30_000_000
LEAD = {"lead_id": "L-1", "created_at": "2024-03-01T10:00:00Z", "source_channel": "paid_search",
        "activities": [{"activity_type": "pricing_page_view", "occurred_at": "2024-03-02T11:00:00Z",
                        "duration_seconds": 40.0}]}
ORDER = {"ordered_at": "2024-05-01T10:00:00", "amount": 42.5}


@pytest.fixture(scope="module")
def loaded_server(trained_store: TrainedStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The service with the default limits (32 MiB bodies, two large requests in flight, 10 s for a body)."""
    running = start_server(trained_store.tracking_uri, tmp_path_factory.mktemp("load"), api_key=None,
                           extra_env={"LEADVAL_MAX_BODY_BYTES": str(32 * 1024 * 1024)})
    yield running
    stop_server(running)


def _started(server: RunningServer, length: int) -> socket.socket:
    """A connection that sent the head of a ``/score_leads`` request announcing ``length`` bytes, and one byte."""
    address = urlsplit(server.url)
    connection = socket.create_connection((address.hostname, address.port), timeout=BODY_TIMEOUT_S + 10)
    connection.sendall(f"POST /score_leads HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {length}\r\n\r\n{{".encode())
    return connection


def _until_closed(connection: socket.socket) -> bytes:
    """Everything the server sends on ``connection`` until it closes it."""
    received = b""
    while chunk := connection.recv(65_536):
        received += chunk
    return received


def _answer(connection: socket.socket) -> bytes:
    """The whole answer the server sends on ``connection`` (its headers and ``Content-Length`` bytes of body)."""
    received = b""
    while b"\r\n\r\n" not in received or len(received.split(b"\r\n\r\n", 1)[1]) < int(
            received.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0]):
        received += connection.recv(65_536)
    return received


def _rss_mb(pid: int) -> float:
    """Resident memory (MB) of the server process and its workers."""
    root = psutil.Process(pid)
    return sum(process.memory_info().rss for process in (root, *root.children(recursive=True))) / 1e6


def test_past_the_limit_a_large_request_gets_503_at_once_and_single_leads_and_probes_flow(
        loaded_server: RunningServer) -> None:
    held = [_started(loaded_server, 2 * LARGE_REQUEST_BYTES) for _ in range(2)]
    time.sleep(0.5)
    started = time.monotonic()
    with _started(loaded_server, 2 * LARGE_REQUEST_BYTES) as third:
        busy = _answer(third)
        assert time.monotonic() - started < 1
        third.sendall(b" " * (2 * LARGE_REQUEST_BYTES - 1))  # the body, read and dropped: then the server closes
        assert _until_closed(third) == b""
    assert busy.startswith(b"HTTP/1.1 503"), busy[:200]
    assert b"\r\nretry-after: 2\r\n" in busy.lower()
    assert b"LEADVAL_MAX_CONCURRENT_REQUESTS=2" in busy
    with loaded_server.client() as http:
        assert http.post("/score_leads", json={"leads": [LEAD]}).status_code == 200
        assert http.get("/livez").status_code == 200
    for connection in held:
        with connection:
            reply = _until_closed(connection)
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert f"within {BODY_TIMEOUT_S} s".encode() in reply
    leads = [{**LEAD, "lead_id": f"L-{i}", "activities": LEAD["activities"] * 20} for i in range(800)]
    body = json.dumps({"leads": leads}).encode()
    assert len(body) >= LARGE_REQUEST_BYTES
    with loaded_server.client() as http:
        response = http.post("/score_leads", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["scores"]) == 800


def test_a_connection_without_a_whole_request_head_is_closed_after_the_body_timeout(
        loaded_server: RunningServer) -> None:
    address = urlsplit(loaded_server.url)

    def seconds_until_closed(sent: bytes) -> float:
        started = time.monotonic()
        with socket.create_connection((address.hostname, address.port), timeout=BODY_TIMEOUT_S + 10) as silent:
            silent.sendall(sent)
            assert _until_closed(silent) == b""
        return time.monotonic() - started

    with ThreadPoolExecutor(2) as both:
        waited = list(both.map(seconds_until_closed, (b"", b"POST /score_leads HTTP/1.1\r\nHost: x\r\n")))
    assert all(BODY_TIMEOUT_S - 0.5 < seconds < BODY_TIMEOUT_S + 3 for seconds in waited), waited


def test_more_activities_or_orders_than_the_limit_get_413_naming_count_and_limit(
        loaded_server: RunningServer) -> None:
    orders = DEFAULT_MAX_REQUEST_ORDERS + 1
    customers = [{"customer_id": f"c{i}", "orders": [ORDER] * 10_000} for i in range(orders // 10_000)]
    customers.append({"customer_id": "last", "orders": [ORDER] * (orders % 10_000)})
    with loaded_server.client() as http:
        response = http.post("/predict_clv", json={"customers": customers, "as_of": "2025-01-01"})
        assert response.status_code == 413, response.text[:500]
        assert response.json()["error"] == (
            f"the request has {orders:,} orders; the limit is {DEFAULT_MAX_REQUEST_ORDERS:,} orders per request "
            "(LEADVAL_MAX_REQUEST_ORDERS): send them in smaller batches")
        document = http.get("/docs.json").json()
    for path, limit in (("/score_leads", DEFAULT_MAX_REQUEST_ACTIVITIES), ("/predict_clv", DEFAULT_MAX_REQUEST_ORDERS)):
        responses = document["paths"][path]["post"]["responses"]
        assert f"{limit:,}" in responses["413"]["description"]
        assert "Retry-After" in responses["503"]["headers"]
        assert "408" in responses


class _Answer(asyncio.Protocol):
    """What the server sends on one connection, kept as it comes: a 503 sent before the body was read, then a
    reset, still counts."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.received += data

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def _post(port: int, path: str, body: bytes) -> int:
    """POST ``body`` on a connection of its own; the status the server answered (0: none)."""
    transport, answer = await asyncio.get_running_loop().create_connection(_Answer, "127.0.0.1", port)
    transport.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
                    f"{len(body)}\r\nConnection: close\r\n\r\n".encode())
    transport.write(body)
    await asyncio.wait_for(answer.closed, 120)
    status_line = bytes(answer.received).split(b"\r\n", 1)[0].split()
    return int(status_line[1]) if len(status_line) > 1 else 0


def test_a_burst_of_forty_30_mb_requests_gets_only_200_413_or_503_and_memory_returns(
        loaded_server: RunningServer) -> None:
    lead = {**LEAD, "activities": LEAD["activities"] * 45}
    per_lead = len(json.dumps(lead)) + 2
    leads = [{**lead, "lead_id": f"L-{i}"} for i in range(BURST_BODY_BYTES // per_lead)]
    lead_body = json.dumps({"leads": leads, "as_of": "2024-06-01"}).encode()
    per_customer = len(json.dumps([ORDER] * 8_000))
    customers = [{"customer_id": f"c{i}", "orders": [ORDER] * 8_000} for i in range(BURST_BODY_BYTES // per_customer)]
    clv_body = json.dumps({"customers": customers, "as_of": "2025-01-01"}).encode()
    bodies = [("/predict_clv", clv_body) if i % 4 == 3 else ("/score_leads", lead_body) for i in range(40)]
    port = urlsplit(loaded_server.url).port
    start_mb = _rss_mb(loaded_server.process.pid)
    probes: list[float] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            started = time.monotonic()
            try:
                httpx.get(f"{loaded_server.url}/livez", timeout=5).raise_for_status()
                probes.append(time.monotonic() - started)
            except httpx.HTTPError:
                probes.append(float("inf"))
            done.wait(0.1)

    prober = threading.Thread(target=probe)
    prober.start()

    async def burst() -> list[int]:
        return list(await asyncio.gather(*(_post(port, path, body) for path, body in bodies)))

    try:
        statuses = asyncio.run(burst())
    finally:
        done.set()
        prober.join()
    assert set(statuses) <= {200, 413, 503}, statuses
    assert 200 in statuses and 503 in statuses
    assert max(probes) < 1.0, f"/livez took {max(probes):.2f} s"
    time.sleep(2)
    assert _rss_mb(loaded_server.process.pid) - start_mb < 300
