"""What the HTTP layer refuses before any scoring code runs: oversized bodies (413) and missing API keys (401).

BentoML reads a whole request body into memory and has no size limit of its own, so
:class:`RequestLimits` checks ``Content-Length`` before the body is read and counts the bytes of
bodies sent without one (chunked), answering 413 as soon as the limit is passed. When an API key is
configured, every request except the health and metrics endpoints needs
``Authorization: Bearer <key>``. Nothing here logs or echoes a request body.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from features.errors import InvalidInput

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
"""32 MiB: room for 10,000 leads with a few dozen activities each."""
OPEN_PATHS: frozenset[str] = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})
"""Paths that never need the API key: orchestrators and Prometheus probe them without credentials."""


API_KEY_ENV = "LEADVAL_API_KEY"
MAX_BODY_ENV = "LEADVAL_MAX_BODY_BYTES"


@dataclass(frozen=True)
class LimitsConfig:
    """The request body limit in bytes, and the API key (None: no key needed)."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    api_key: str | None = None

    @classmethod
    def from_environment(cls) -> LimitsConfig:
        """``LEADVAL_API_KEY`` (unset or empty: no key) and ``LEADVAL_MAX_BODY_BYTES`` (default 32 MiB)."""
        raw_limit = os.environ.get(MAX_BODY_ENV, "").strip()
        if raw_limit and not (raw_limit.isdigit() and int(raw_limit) > 0):
            raise InvalidInput(f"{MAX_BODY_ENV} must be a whole number of bytes > 0, not {raw_limit!r}")
        return cls(max_body_bytes=int(raw_limit) if raw_limit else DEFAULT_MAX_BODY_BYTES,
                   api_key=os.environ.get(API_KEY_ENV) or None)


async def _reply(send: Send, status: int, error: str, headers: dict[str, str] | None = None) -> None:
    """A JSON ``{"error": ...}`` response with ``Connection: close`` (the unread body is not drained)."""
    body = json.dumps({"error": error}).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


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
    """ASGI middleware: 401 without the API key (when one is set), 413 for bodies over the limit.

    ``config`` defaults to :meth:`LimitsConfig.from_environment`, read when the server builds its
    middleware stack (in the worker process, not at import).
    """

    def __init__(self, app: ASGIApp, config: LimitsConfig | None = None) -> None:
        self.app = app
        self.config = config or LimitsConfig.from_environment()

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
        if declared is not None and not declared.strip().isdigit():
            await _reply(send, 400, "Content-Length must be a whole number of bytes")
        elif declared is not None and int(declared) > limit:
            await _reply(send, 413, f"request body is {int(declared):,} bytes; the limit is {limit:,} bytes")
        elif declared is None and _header(scope, b"transfer-encoding") is not None:
            await self._counted(scope, receive, send, limit)
        else:
            await self.app(scope, receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """A body without Content-Length (chunked): read it up to the limit, then hand it on."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                await _reply(send, 413, f"request body is over the limit of {limit:,} bytes")
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed() -> Message:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)
