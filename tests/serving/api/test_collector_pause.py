"""The cyclic garbage collector is paused while large requests are in flight, and only then (``RequestLimits``)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest

from serving.api.limits import LARGE_REQUEST_BYTES, LimitsConfig, RequestLimits


class _Recorder:
    """An ASGI app that notes whether the collector runs while it handles a request, and answers when released."""

    def __init__(self) -> None:
        self.enabled: dict[str, bool] = {}
        self.release: dict[str, asyncio.Event] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        name = scope["path"]
        await receive()
        self.enabled[name] = gc.isenabled()
        await self.release.setdefault(name, asyncio.Event()).wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def _request(limits: RequestLimits, path: str, size: int) -> Any:
    scope = {"type": "http", "path": path, "headers": [(b"content-length", str(size).encode())]}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"x" * size, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    return limits(scope, receive, send)


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if was else gc.disable)()


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0)


def test_paused_while_large_requests_are_in_flight_and_resumed_after(collector_on: None) -> None:
    async def scenario() -> None:
        app = _Recorder()
        limits = RequestLimits(app, LimitsConfig())
        first = asyncio.create_task(_request(limits, "/first", LARGE_REQUEST_BYTES))
        await _until(lambda: "/first" in app.enabled)
        second = asyncio.create_task(_request(limits, "/second", LARGE_REQUEST_BYTES))
        await _until(lambda: "/second" in app.enabled)
        collections = gc.get_stats()[0]["collections"]
        app.release["/first"].set()
        await first
        assert not gc.isenabled()  # the second is still in flight
        assert gc.get_stats()[0]["collections"] == collections + 1  # but the youngest generation was collected
        app.release["/second"].set()
        await second
        assert gc.isenabled()
        small = asyncio.create_task(_request(limits, "/small", 100))
        await _until(lambda: "/small" in app.enabled)
        app.release["/small"].set()
        await small
        assert app.enabled == {"/first": False, "/second": False, "/small": True}

    asyncio.run(scenario())


def test_a_collector_switched_off_by_the_operator_stays_off(collector_on: None) -> None:
    async def scenario() -> None:
        app = _Recorder()
        limits = RequestLimits(app, LimitsConfig())
        gc.disable()
        task = asyncio.create_task(_request(limits, "/large", LARGE_REQUEST_BYTES))
        await _until(lambda: "/large" in app.enabled)
        app.release["/large"].set()
        await task
        assert not gc.isenabled()

    asyncio.run(scenario())
