"""The OpenAPI document at ``/docs.json``: BentoML's, corrected to say what the service does.

BentoML 1.4 writes the document from the endpoints' pydantic models (``_bentoml_sdk.service.openapi``), and on
its own it says less than the service does, or other:

- it cuts each top-level request field's ``anyOf`` to its first branch, so ``as_of``, ``horizon_days`` and
  ``discount_rate`` looked non-nullable; the service reads ``null`` as "left out" (``as_of``: when the request
  arrives; the others: the model's own), and the document says so;
- it documents every error with its generic ``{"error", "detail": string}``, where a 400 of the service carries a
  ``detail`` list of problems (location, message, kind); it leaves out the 401 (API key), 408 (slow body), 413
  (body and row limits) and 503 (model not loaded, or busy) the service answers, and lists a 404 it never answers;
- it writes pydantic's JSON Schema nulls (``{"type": "null"}``) into a document declared OpenAPI 3.0, which
  spells them ``nullable``; the request body is optional and ``GET /models`` (a mounted app) is missing.

Pydantic cannot state what the validators check across fields. :func:`corrected` adds what a schema can: times as
the ISO 8601 text accepted (:data:`TIME_PATTERN`, not RFC 3339 ``date-time``, which needs a time and an offset), a
customer as either an RFM summary or its orders (``oneOf``) with ``recency_days`` 0 when ``frequency`` is, and
unknown fields anywhere in a request that says ``"lenient": true`` (its ``Lenient*`` objects). What no schema can
state is in the descriptions: each id once, no lead or order after ``as_of``, ``recency_days <= age_days``, times
in range once converted to UTC. :class:`OpenAPIDocument` serves the result.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from serving.api.limits import (
    BODY_TIMEOUT_ENV,
    LARGE_REQUEST_BYTES,
    MAX_ACTIVITIES_ENV,
    MAX_BODY_ENV,
    MAX_CONCURRENT_ENV,
    MAX_ORDERS_ENV,
    ASGIApp,
    LimitsConfig,
    Message,
    Receive,
    Scope,
    Send,
)
from serving.api.schemas import ModelsResponse, PredictCLVRequest, ScoreLeadsRequest

DOCUMENT_PATH = "/docs.json"
REF = "#/components/schemas/{model}"
YEAR = "(19[7-9][0-9]|2[01][0-9][0-9])"
LEAP_YEAR = "(19(7[26]|8[048]|9[26])|20([02468][048]|[13579][26])|21(0[48]|[2468][048]|[13579][26]))"
DAY = (f"{YEAR}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|{YEAR}-(0[13-9]|1[0-2])-(29|30)"
       f"|{YEAR}-(0[13578]|1[02])-31|{LEAP_YEAR}-02-29")
CLOCK = "[T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\\.[0-9]{1,6})?)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?"
TIME_PATTERN = f"^({DAY})({CLOCK})?$"
"""A time in a request: an ISO 8601 date of 1970-2199, alone (midnight) or with a time of day (seconds and up to
six decimals optional) and ``Z`` or an offset (none: UTC). Digits are ASCII: ``[0-9]``, not ``\\d``."""
TIME_DESCRIPTION = ("ISO 8601 date or date and time, e.g. 2024-05-01 or 2024-05-01T09:30:00Z; offsets are "
                    "converted to UTC, times without one taken as UTC; between 1970-01-01 and 2200-01-01 in UTC.")
STRICT_OBJECTS = ("Lead", "Activity", "ActivityColumns", "Customer", "Order")
"""Request objects refusing unknown fields; each has a ``Lenient*`` copy taking them, used in lenient requests."""
SUMMARY = ("frequency", "recency_days", "age_days", "monetary_value")
NULL = {"nullable": True, "enum": [None]}
"""Null only (OpenAPI 3.0's spelling): a field that must be left out or null."""
DESCRIPTIONS = {
    "ScoreLeadsRequest": (
        "Leads to score as of as_of. Each lead_id once, no lead created after as_of; activities after it are "
        "ignored. Unknown fields are a 400 unless lenient is true (then ignored, and listed in warnings)."),
    "PredictCLVRequest": (
        "Customers to value over horizon_days at the annual discount_rate (null or left out: the model's own). "
        "Each customer_id once, no order after as_of. Unknown fields are a 400 unless lenient is true (then "
        "ignored, and listed in warnings)."),
    "Customer": (
        "A customer as an RFM summary in days (frequency: repeat purchase days; recency_days: first to last "
        "purchase, at most age_days and 0 when frequency is 0; age_days: first purchase to as_of; monetary_value: "
        "mean value of the repeat purchases), or as its orders, with the summary fields left out or null."),
}
AS_OF = {
    "ScoreLeadsRequest": "Point in time to score at; null or left out: when the request arrives.",
    "PredictCLVRequest": ("End of the observation of the customers sent as orders; null or left out: when the "
                          "request arrives."),
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _error(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


ERROR_SCHEMAS: dict[str, dict[str, Any]] = {
    "Problem": {
        "type": "object", "title": "Problem", "required": ["type", "loc", "msg"],
        "description": "One problem of a bad request.",
        "properties": {
            "type": {"type": "string", "description": "Kind of problem, e.g. missing, int_type, unknown_field."},
            "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                    "description": 'Where, from the top of the body: field names and item indexes, e.g. '
                                   '["leads", 3, "created_at"].'},
            "msg": {"type": "string", "description": "What is wrong; request values are never quoted, except an "
                                                     "unknown activity type."},
            "url": {"type": "string", "description": "Pydantic's page about this kind of problem, if any."},
        },
    },
    "InvalidArgument": {
        "type": "object", "title": "InvalidArgument", "required": ["error"], "description": "Bad Request",
        "properties": {
            "error": {"type": "string", "title": "Message"},
            "detail": {"type": "array", "items": _ref("Problem"),
                       "description": "The problems, each with its location (left out when the body was not read)."},
        },
    },
    "ErrorMessage": {
        "type": "object", "title": "ErrorMessage", "required": ["error"],
        "properties": {"error": {"type": "string", "title": "Message"}},
    },
}


def _openapi_3_0(node: Any) -> Any:
    """``node`` with JSON Schema's null (pydantic's ``anyOf: [X, {"type": "null"}]``) spelt ``nullable: true``."""
    if isinstance(node, list):
        return [_openapi_3_0(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _openapi_3_0(value) for key, value in node.items()}
    options = node.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [option for option in options if option != {"type": "null"}]
        del node["anyOf"]
        base = rest[0] if len(rest) == 1 and "$ref" not in rest[0] else {"anyOf": rest}
        node = {**base, **node, "nullable": True}
    return node


def _times_as_text(node: Any) -> None:
    """Every ``date-time`` string of a request schema becomes :data:`TIME_PATTERN` text, in place."""
    if isinstance(node, list):
        for item in node:
            _times_as_text(item)
    elif isinstance(node, dict):
        if node.get("format") == "date-time":
            del node["format"]
            node.update(pattern=TIME_PATTERN, description=TIME_DESCRIPTION)
        for value in node.values():
            _times_as_text(value)


def _lenient_refs(node: Any) -> None:
    """References to a strict request object point at its ``Lenient*`` copy instead, in place."""
    if isinstance(node, list):
        for item in node:
            _lenient_refs(item)
    elif isinstance(node, dict):
        for name in STRICT_OBJECTS:
            if node.get("$ref") == REF.format(model=name):
                node["$ref"] = REF.format(model=f"Lenient{name}")
        for value in node.values():
            _lenient_refs(value)


def _summary_or_orders(customer: dict[str, Any]) -> None:
    """The customer rule of :class:`serving.api.schemas.Customer`: an RFM summary or orders, never both."""
    customer["description"] = DESCRIPTIONS["Customer"]
    types = {name: {"type": next(option["type"] for option in customer["properties"][name]["anyOf"]
                                 if option["type"] != "null")} for name in SUMMARY}
    customer["oneOf"] = [
        {"title": "RFM summary", "required": list(SUMMARY), "properties": {**types, "orders": NULL},
         "anyOf": [{"properties": {"frequency": {"minimum": 1}}}, {"properties": {"recency_days": {"maximum": 0}}}]},
        {"title": "orders", "required": ["orders"],
         "properties": {"orders": {"type": "array"}, **{name: NULL for name in SUMMARY}}},
    ]


def _request(schemas: dict[str, Any], model: type, items: tuple[str, str]) -> dict[str, Any]:
    """The request body's schema: pydantic's fields (nulls included), strict unless ``lenient`` is true."""
    name = model.__name__
    schema = schemas[f"{name}IODescriptor"]
    properties = model.model_json_schema(ref_template=REF)["properties"]
    field, item = items
    del properties[field]["items"]  # each variant below says which
    properties["as_of"]["description"] = AS_OF[name]
    schema.pop("additionalProperties", None)
    schema.update(properties=properties, description=DESCRIPTIONS[name], oneOf=[
        {"title": "strict", "description": "lenient false or left out: an unknown field anywhere is a 400.",
         "properties": {**{key: {} for key in properties}, "lenient": {"enum": [False]}, field: {"items": _ref(item)}},
         "additionalProperties": False},
        {"title": "lenient", "description": "lenient true: unknown fields anywhere are ignored (see warnings).",
         "required": ["lenient"], "properties": {"lenient": {"enum": [True]}, field: {"items": _ref(f"Lenient{item}")}}},
    ])
    return _ref(f"{name}IODescriptor")


def _responses(ok: dict[str, Any], config: LimitsConfig, rows: tuple[str, int, str] | None,
               model: bool) -> dict[str, Any]:
    """An operation's responses: ``ok``, and the errors the service answers it with; ``rows`` (what a request
    holds, its limit and the variable setting it) for an operation with a body."""
    responses: dict[str, Any] = {"200": ok}
    if rows is not None:
        name, limit, variable = rows
        responses["400"] = _error("Bad request: the body is not JSON or breaks a rule of its schema; detail "
                                  "names each problem.", "InvalidArgument")
        responses["408"] = _error(f"The body did not arrive within {config.body_timeout_s} s "
                                  f"({BODY_TIMEOUT_ENV}); the connection is closed.", "ErrorMessage")
        responses["413"] = _error(f"The body is over {config.max_body_bytes:,} bytes ({MAX_BODY_ENV}), answered "
                                  f"before it is read, or the request has more than {limit:,} {name} in all "
                                  f"({variable}).", "ErrorMessage")
    if config.api_key:
        responses["401"] = {**_error("Missing or wrong API key.", "ErrorMessage"),
                            "headers": {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}}
    if model:
        responses["503"] = {
            **_error(f"The endpoint's model is not loaded (GET /readyz says why), or this worker is busy with "
                     f"{config.max_concurrent_requests} large requests (bodies of {LARGE_REQUEST_BYTES:,} bytes or "
                     f"more, {MAX_CONCURRENT_ENV}): retry after Retry-After seconds.", "ErrorMessage"),
            "headers": {"Retry-After": {"description": "Seconds to wait (busy only).", "schema": {"type": "integer"}}},
        }
        responses["500"] = _error("Internal Server Error", "InternalServerError")
    return responses


def corrected(document: dict[str, Any], config: LimitsConfig) -> dict[str, Any]:
    """BentoML's ``document``, corrected (see the module docstring) for a service run with ``config``."""
    document = copy.deepcopy(document)
    schemas = document["components"]["schemas"]
    models = ModelsResponse.model_json_schema(ref_template=REF)
    schemas.update(models.pop("$defs"), ModelsResponse=models, **ERROR_SCHEMAS)
    schemas.pop("NotFound", None)
    _summary_or_orders(schemas["Customer"])
    for name in STRICT_OBJECTS:
        lenient = copy.deepcopy(schemas[name])
        del lenient["additionalProperties"]
        lenient["title"] = f"Lenient{name}"
        _lenient_refs(lenient)
        schemas[f"Lenient{name}"] = lenient
    security = [{"apiKey": []}] if config.api_key else []
    if config.api_key:
        document["components"]["securitySchemes"] = {"apiKey": {
            "type": "http", "scheme": "bearer", "description": "The server's LEADVAL_API_KEY."}}
    limits = {"/score_leads": ("activities", config.max_request_activities, MAX_ACTIVITIES_ENV),
              "/predict_clv": ("orders", config.max_request_orders, MAX_ORDERS_ENV)}
    for path, model, items in (("/score_leads", ScoreLeadsRequest, ("leads", "Lead")),
                               ("/predict_clv", PredictCLVRequest, ("customers", "Customer"))):
        operation = document["paths"][path]["post"]
        operation["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": _request(schemas, model, items)}}}
        operation["responses"] = _responses(operation["responses"]["200"], config, limits[path], model=True)
        operation["security"] = security
    document["paths"]["/models"] = {"get": {
        "tags": ["Service APIs"], "operationId": "leadval__models", "security": security,
        "description": "Name, version, run id, training time and headline metrics of each loaded model, and the "
                       "models that could not be loaded, with why.",
        "responses": _responses({"description": "Successful Response",
                                 "content": {"application/json": {"schema": _ref("ModelsResponse")}}},
                                config, None, model=False),
    }}
    for name in (*STRICT_OBJECTS, *(f"Lenient{name}" for name in STRICT_OBJECTS),
                 "ScoreLeadsRequestIODescriptor", "PredictCLVRequestIODescriptor"):
        _times_as_text(schemas[name])
    return _openapi_3_0(document)


class OpenAPIDocument:
    """ASGI middleware: ``GET /docs.json`` answers BentoML's document :func:`corrected` (built once per worker).

    Other requests, and answers other than 200 (a 401 without the API key), pass unchanged.
    """

    def __init__(self, app: ASGIApp, config: LimitsConfig | None = None) -> None:
        self.app = app
        self.config = config or LimitsConfig.from_environment()
        self.document: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != DOCUMENT_PATH or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        start: Message = {}
        chunks: list[bytes] = []

        async def kept(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, kept)
        body = b"".join(chunks)
        if start.get("status") == 200:
            if self.document is None:
                self.document = json.dumps(corrected(json.loads(body), self.config)).encode()
            body = self.document
            headers = [(k, v) for k, v in start.get("headers", ()) if k.lower() != b"content-length"]
            start["headers"] = [*headers, (b"content-length", str(len(body)).encode())]
        await send(start)
        await send({"type": "http.response.body", "body": body})
