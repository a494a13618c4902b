"""What the HTTP layer refuses before any scoring code runs: missing API keys (401), oversized bodies (413),
large requests past the concurrency limit (503), bodies that arrive too slowly (408).

BentoML reads a whole request body into memory and has no size limit of its own, so
:class:`RequestLimits` checks ``Content-Length`` before the body is read and counts the bytes of
bodies sent without one (chunked), answering 413 as soon as the limit is passed. When an API key is
configured, every request except the health and metrics endpoints needs
``Authorization: Bearer <key>``. Nothing here logs or echoes a request body.

A large request (a body of :data:`LARGE_REQUEST_BYTES` or more, or of unknown length) takes seconds of CPU and
hundreds of MB while it is validated and scored. At most ``LEADVAL_MAX_CONCURRENT_REQUESTS`` of them are in
flight per worker; the next one gets a 503 with ``Retry-After`` at once, instead of waiting in a queue (holding its
body) until it times out; its body (within the body limit) is then read and dropped, so the answer is not lost to
a reset. Small requests (a single lead is ~5 KB) never count
and are never refused, so they keep flowing during a burst of large ones. When the last large request in flight
has been answered for :data:`GIVE_BACK_AFTER_S` with no other arriving, the memory they freed is handed back to
the operating system (:func:`give_back`); while any is in flight, the cyclic garbage collector rests
(:meth:`RequestLimits._pause_collector`).
Every body must arrive within ``LEADVAL_BODY_TIMEOUT_S`` seconds: a client sending it slower gets a 408 and its
connection is closed; a connection that has not sent a whole request head by then is closed
(:func:`close_silent_connections`).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import hmac
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from features.errors import InvalidInput

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@cache
def _malloc_trim() -> ctypes._CFuncPtr | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return getattr(libc, "malloc_trim", None)


def give_back() -> None:
    """Return the allocator's free memory to the operating system; call it from a thread (it takes ~10-100 ms and
    releases the interpreter lock while it runs).

    A 30 MB request body becomes hundreds of MB of Python objects while it is validated and scored. Python frees them
    when the answer has gone, but glibc's allocator keeps freed memory in its heaps (one per thread that allocated,
    up to 8 per core) for reuse, so a worker's resident size only ever grew: 0.7 GB at start, ~1.9 GB after one burst
    of forty 30 MB requests, ~3 GB after six. ``malloc_trim(0)`` returns the free pages of every heap; ``leadval
    serve`` also caps the heaps at two (``MALLOC_ARENA_MAX``, :func:`serving.cli.serve.server_environment`).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
"""32 MiB: room for 10,000 leads with a few dozen activities each."""
LARGE_REQUEST_BYTES = 1024 * 1024
"""A body of 1 MiB or more (~200 leads with their activities) makes a large request: it counts towards
``LEADVAL_MAX_CONCURRENT_REQUESTS`` (the largest are also computed off the event loop:
:mod:`serving.api.large_requests`)."""
DEFAULT_MAX_CONCURRENT_REQUESTS = 2
"""Large requests in flight per worker. Scoring is CPU-bound under one interpreter lock, so a second one overlaps
its upload and validation with the first one's scoring; a third would add only memory and waiting."""
DEFAULT_MAX_REQUEST_ACTIVITIES = 300_000
"""Most activities (over all leads) in one ``/score_leads`` request: ~30 MB of JSON, ~1.5 s of CPU."""
DEFAULT_MAX_REQUEST_ORDERS = 200_000
"""Most orders (over all customers) in one ``/predict_clv`` request: ~11 MB of JSON, ~1.5 s of CPU (an order
costs about twice what an activity does to validate)."""
DEFAULT_BODY_TIMEOUT_S = 10
"""Seconds a request body has to arrive: under BentoML's 15 s request timeout, so a slow sender gets a 408 and a
closed connection, where the timeout alone answers 504 and leaves the connection open for as long as it trickles."""
RETRY_AFTER_S = 2
GIVE_BACK_AFTER_S = 1.0
"""Seconds without a large request in flight before freed memory is given back: a steady stream of them keeps its
memory (giving it back takes ~10-100 ms and holds the allocator's locks, +35 ms on each of back-to-back
1,000-lead requests when done after every one)."""
"""What a 503 for a busy worker tells the client to wait: about what a large request takes to score."""
OPEN_PATHS: frozenset[str] = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})
"""Paths that never need the API key: orchestrators and Prometheus probe them without credentials."""


API_KEY_ENV = "LEADVAL_API_KEY"
MAX_BODY_ENV = "LEADVAL_MAX_BODY_BYTES"
MAX_CONCURRENT_ENV = "LEADVAL_MAX_CONCURRENT_REQUESTS"
MAX_ACTIVITIES_ENV = "LEADVAL_MAX_REQUEST_ACTIVITIES"
MAX_ORDERS_ENV = "LEADVAL_MAX_REQUEST_ORDERS"
BODY_TIMEOUT_ENV = "LEADVAL_BODY_TIMEOUT_S"


def _whole_number(name: str, default: int, unit: str) -> int:
    """The environment variable ``name`` as a whole number > 0 (``default`` when unset or empty)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not (raw.isdigit() and int(raw) > 0):
        raise InvalidInput(f"{name} must be a whole number of {unit} > 0, not {raw!r}")
    return int(raw)


@dataclass(frozen=True)
class LimitsConfig:
    """The request limits (body bytes, large requests in flight, activities and orders per request, seconds for a
    body to arrive) and the API key (None: no key needed)."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    api_key: str | None = None
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS
    max_request_activities: int = DEFAULT_MAX_REQUEST_ACTIVITIES
    max_request_orders: int = DEFAULT_MAX_REQUEST_ORDERS
    body_timeout_s: int = DEFAULT_BODY_TIMEOUT_S

    @classmethod
    def from_environment(cls) -> LimitsConfig:
        """``LEADVAL_API_KEY`` (unset or empty: no key) and the limits' variables (unset: the defaults above)."""
        return cls(max_body_bytes=_whole_number(MAX_BODY_ENV, DEFAULT_MAX_BODY_BYTES, "bytes"),
                   api_key=os.environ.get(API_KEY_ENV) or None,
                   max_concurrent_requests=_whole_number(MAX_CONCURRENT_ENV, DEFAULT_MAX_CONCURRENT_REQUESTS,
                                                         "requests"),
                   max_request_activities=_whole_number(MAX_ACTIVITIES_ENV, DEFAULT_MAX_REQUEST_ACTIVITIES,
                                                        "activities"),
                   max_request_orders=_whole_number(MAX_ORDERS_ENV, DEFAULT_MAX_REQUEST_ORDERS, "orders"),
                   body_timeout_s=_whole_number(BODY_TIMEOUT_ENV, DEFAULT_BODY_TIMEOUT_S, "seconds"))


async def _reply(send: Send, status: int, error: str, headers: dict[str, str] | None = None,
                 drain: Receive | None = None, seconds: float = DEFAULT_BODY_TIMEOUT_S) -> None:
    """A JSON ``{"error": ...}`` response with ``Connection: close``. With ``drain``, the rest of the request body
    is then read and dropped (for up to ``seconds``) before the connection closes: closing on unread bytes resets
    the connection, and a client still sending would lose the answer (the body is not read otherwise)."""
    body = json.dumps({"error": error}).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body, "more_body": drain is not None})
    if drain is None:
        return
    try:
        async with asyncio.timeout(seconds):
            while (await drain()).get("more_body", False):
                pass
    except TimeoutError:
        pass
    await send({"type": "http.response.body", "body": b""})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


def _has_key(scope: Scope, api_key: str) -> bool:
    given = _header(scope, b"authorization") or b""
    scheme, _, token = given.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), api_key.encode())


class RequestLimits:
    """ASGI middleware: 401 without the API key (when one is set), 413 for bodies over the limit, 503 for a large
    request while the limit of them is in flight, 408 for a body that does not arrive in time; the garbage
    collector rests while large requests are in flight.

    ``config`` defaults to :meth:`LimitsConfig.from_environment`, read when the server builds its
    middleware stack (in the worker process, not at import).
    """

    def __init__(self, app: ASGIApp, config: LimitsConfig | None = None) -> None:
        self.app = app
        self.config = config or LimitsConfig.from_environment()
        self.large_in_flight = 0
        self.collector_paused = False
        self.give_back_later: asyncio.TimerHandle | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.config.max_body_bytes
        if self.config.api_key and scope["path"] not in OPEN_PATHS and not _has_key(scope, self.config.api_key):
            await _reply(send, 401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                         {"www-authenticate": "Bearer"})
            return
        declared = _header(scope, b"content-length")
        chunked = declared is None and _header(scope, b"transfer-encoding") is not None
        if declared is not None and not declared.strip().isdigit():
            await _reply(send, 400, "Content-Length must be a whole number of bytes")
        elif declared is not None and int(declared) > limit:
            await _reply(send, 413, f"request body is {int(declared):,} bytes; the limit is {limit:,} bytes")
        elif chunked or (declared is not None and int(declared) >= LARGE_REQUEST_BYTES):
            await self._large(scope, receive, send)
        elif declared is not None and int(declared) > 0:
            await self._with_body(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _large(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A large request: 503 while the limit of them is in flight, else handled with the cyclic garbage collector
        paused (:meth:`_pause_collector`), then freed memory given back."""
        most = self.config.max_concurrent_requests
        if self.large_in_flight >= most:
            await _reply(send, 503, f"busy: {self.large_in_flight} large requests (bodies of 1 MiB or more) are being "
                                    f"scored, the most this worker takes at once ({MAX_CONCURRENT_ENV}={most}); "
                                    f"retry after {RETRY_AFTER_S} s or send smaller batches",
                         {"retry-after": str(RETRY_AFTER_S)}, drain=receive, seconds=self.config.body_timeout_s)
            return
        if self.give_back_later is not None:
            self.give_back_later.cancel()
        if not self.large_in_flight:
            self._pause_collector()
        self.large_in_flight += 1
        try:
            await self._with_body(scope, receive, send)
        finally:
            self.large_in_flight -= 1
            if not self.large_in_flight:
                self._resume_collector()
                loop = asyncio.get_running_loop()
                self.give_back_later = loop.call_later(GIVE_BACK_AFTER_S, loop.run_in_executor, None, give_back)
            elif self.collector_paused:
                gc.collect(0)

    def _pause_collector(self) -> None:
        """Pause the cyclic garbage collector while large requests are in flight (unless it is off already).

        A 1,000-lead request builds ~20,000 containers (lists of activity values, score objects) that live until its
        answer has gone and are then freed by reference counting, as ever. Left running, the collector scanned them
        ~26 times per request (every 700 allocations) and a full collection every fifth request: the in-process path
        took p50 63 / p99 85 ms, paused p50 60 / p99 65 ms. Cycles made meanwhile wait for the end of the request
        (one that ends while another is in flight collects the youngest generation, so a steady stream of large
        requests never stops collection).
        """
        self.collector_paused = gc.isenabled()
        gc.disable()

    def _resume_collector(self) -> None:
        if self.collector_paused:
            gc.enable()
        self.collector_paused = False

    async def _with_body(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the whole body (up to the limit, within the body timeout), then hand the request on with it."""
        limit, seconds = self.config.max_body_bytes, self.config.body_timeout_s
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(seconds):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return  # the client went away
                    size += len(message.get("body", b""))
                    if size > limit:
                        await _reply(send, 413, f"request body is over the limit of {limit:,} bytes")
                        return
                    chunks.append(message.get("body", b""))
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await _reply(send, 408, f"the request body did not arrive within {seconds} s ({BODY_TIMEOUT_ENV}); "
                                    f"{size:,} bytes came")
            return
        replay = [{"type": "http.request", "body": chunks[0] if len(chunks) == 1 else b"".join(chunks),
                   "more_body": False}]
        del chunks

        async def replayed() -> Message:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)


def close_silent_connections(seconds: int) -> None:
    """Have uvicorn close a connection whose first request head has not arrived ``seconds`` after it opened.

    Uvicorn times out idle connections only after a response (keep-alive): one that connects and sends nothing,
    or trickles its headers, stayed open for good, holding a socket and a file descriptor. Its HTTP protocols
    are patched here (idempotent), in the worker, before it accepts connections.
    """
    from uvicorn.protocols.http import h11_impl, httptools_impl

    for protocol in (h11_impl.H11Protocol, httptools_impl.HttpToolsProtocol):
        opened = getattr(protocol.connection_made, "__wrapped__", protocol.connection_made)

        def connection_made(self: Any, transport: Any, opened: Callable[..., None] = opened) -> None:
            opened(self, transport)

            def close_if_silent() -> None:
                if self.cycle is None and not transport.is_closing():
                    transport.close()

            self.loop.call_later(seconds, close_if_silent)

        connection_made.__wrapped__ = opened  # type: ignore[attr-defined]
        protocol.connection_made = connection_made
