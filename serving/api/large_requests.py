"""Large requests: validated and scored in a worker thread, off the event loop, and held to per-request row limits.

BentoML validates a request body and runs an ``async`` endpoint on its event loop, the one thread that also
answers ``/livez`` and ``/readyz`` and reads every other request: a 30 MB body took ~0.6 s (leads) to ~3.7 s
(customers' orders) to validate and ~0.6 s to score, and the probes waited as long (9 s in a burst). Here a body
of :data:`OFF_THE_LOOP_BYTES` or more (about 0.2 s of validation) is read in a worker thread
(:func:`parse_request_bodies`; by msgspec where it takes the body as sent, :mod:`serving.api.fast_decoding`), and a
request of :data:`OFF_THE_LOOP_ROWS` rows or more is scored in one (:func:`off_the_loop`); both hold
:data:`ONE_AT_A_TIME`, so at most one large request computes at once and the loop gets the interpreter lock between
two of them. Smaller requests stay on the loop: validating in a thread made a 4.6 MB 1,000-lead request 11% slower
(118 -> 131 ms, paired runs), and at most ``LEADVAL_MAX_CONCURRENT_REQUESTS`` of them wait for each other there.

A request is limited to ``LEADVAL_MAX_REQUEST_ACTIVITIES`` activities over all its leads and
``LEADVAL_MAX_REQUEST_ORDERS`` orders over all its customers (:class:`serving.api.limits.LimitsConfig`); over
that it gets a 413 naming the limit and the count (:func:`too_many_activities`, :func:`too_many_orders`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from itertools import repeat
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread
from starlette.responses import JSONResponse

from serving.api.activities import NO_ACTIVITIES
from serving.api.fast_decoding import NotDecoded, decode_score_leads
from serving.api.limits import MAX_ACTIVITIES_ENV, MAX_ORDERS_ENV, LimitsConfig

if TYPE_CHECKING:
    from starlette.requests import Request

    from serving.api.schemas import PredictCLVRequest, ScoreLeadsRequest

Result = TypeVar("Result")

OFF_THE_LOOP_BYTES = {"/score_leads": 8 * 1024 * 1024, "/predict_clv": 2 * 1024 * 1024}
"""Bodies from which an endpoint's request is validated in a worker thread: ~0.2 s of validation either way (an
order costs about four times what an activity does per byte)."""
OFF_THE_LOOP_ROWS = 200_000
"""Leads and activities (or customers and orders) from which a request is scored in a worker thread: ~20 MB of
JSON, ~0.25 s of work."""
FAST_DECODERS = {"/score_leads": decode_score_leads}
"""Endpoints whose bodies msgspec decodes when it takes them as they are (:mod:`serving.api.fast_decoding`)."""
ONE_AT_A_TIME = anyio.CapacityLimiter(1)
"""Held while a large body is validated or a large request scored: one at a time."""


def activity_count(request: ScoreLeadsRequest) -> int:
    """The activities of all the request's leads."""
    return sum(map(len, map(dict.get, request.leads, repeat("activities"), repeat(NO_ACTIVITIES))))


def order_count(request: PredictCLVRequest) -> int:
    """The orders of all the request's customers (those sent as orders)."""
    return sum(len(customer.orders) for customer in request.customers if customer.orders is not None)


def _over_the_limit(count: int, limit: int, rows: str, variable: str) -> JSONResponse | None:
    """413 when ``count`` ``rows`` (activities, orders) are more than ``limit``, naming both; None within it."""
    if count <= limit:
        return None
    return JSONResponse({"error": f"the request has {count:,} {rows}; the limit is {limit:,} {rows} per request "
                                  f"({variable}): send them in smaller batches"}, status_code=413)


def too_many_activities(request: ScoreLeadsRequest, limits: LimitsConfig) -> JSONResponse | None:
    """413 when the request's leads have more activities in all than ``LEADVAL_MAX_REQUEST_ACTIVITIES``."""
    return _over_the_limit(activity_count(request), limits.max_request_activities, "activities", MAX_ACTIVITIES_ENV)


def too_many_orders(request: PredictCLVRequest, limits: LimitsConfig) -> JSONResponse | None:
    """413 when the request's customers have more orders in all than ``LEADVAL_MAX_REQUEST_ORDERS``."""
    return _over_the_limit(order_count(request), limits.max_request_orders, "orders", MAX_ORDERS_ENV)


async def off_the_loop(rows: int, work: Callable[..., Result], *args: Any) -> Result:
    """``work(*args)`` in a worker thread (one at a time) when ``rows`` make a large request, else here."""
    if rows < OFF_THE_LOOP_ROWS:
        return work(*args)
    return await anyio.to_thread.run_sync(partial(work, *args), limiter=ONE_AT_A_TIME)


def read_body(request_type: Any, body: bytes, decode: Callable[[bytes, Any], Any] | None) -> Any:
    """The endpoint's request in ``body``: by ``decode`` (msgspec, :mod:`serving.api.fast_decoding`) where it takes
    the body as is, else validated by pydantic, which words any 400."""
    if decode is not None:
        try:
            return decode(body, request_type)
        except NotDecoded:
            pass
    return request_type.model_validate_json(body)


def parse_request_bodies(service: Any) -> None:
    """Have ``service``'s endpoints read their JSON bodies by :func:`read_body`: here when small, in a worker thread
    from :data:`OFF_THE_LOOP_BYTES`.

    This replaces, for each endpoint, BentoML's own parsing (``model_validate_json`` of the endpoint's input model on
    the event loop, ``_bentoml_impl.serde.JSONSerde``); an empty body, or one that is not JSON, keeps it.
    """
    for api in service.apis.values():
        spec = api.input_spec
        own_parsing = spec.from_http_request
        threshold, decode = OFF_THE_LOOP_BYTES[api.route], FAST_DECODERS.get(api.route)

        async def from_http_request(cls: Any, request: Request, serde: Any, own_parsing: Any = own_parsing,
                                    threshold: int = threshold, decode: Any = decode) -> Any:
            body = await request.body()
            if not body or getattr(serde, "media_type", None) != "application/json":
                return await own_parsing(request, serde)
            if len(body) < threshold:
                return read_body(cls, body, decode)
            return await anyio.to_thread.run_sync(read_body, cls, body, decode, limiter=ONE_AT_A_TIME)

        spec.from_http_request = classmethod(from_http_request)
