"""Schemathesis against the real server, from its own OpenAPI document: the service does what the document says.

Valid and invalid requests (wrong types, missing or unknown fields, out-of-range numbers, odd strings, bodies
that are not JSON) are drawn from the document the server publishes at ``/docs.json``, with a fixed seed and
a bounded number of examples, and every answer goes through all of schemathesis's default checks: no 5xx
(``not_a_server_error``), only documented status codes, content types and headers, bodies matching their
documented schema (200s and errors alike), invalid requests refused (``negative_data_rejection``), valid ones
accepted (``positive_data_acceptance``), other methods answered 405 with ``Allow``, and a request without the
API key refused (``ignored_auth``). The server must still be alive afterwards.

Valid requests also follow the rules the document states in words only, as no schema can: each id once, no
lead or order after ``as_of``, ``recency_days <= age_days``, times in range once converted to UTC
(:func:`within_the_rules_in_words`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from serving.api.activities import ACTIVITY_FIELDS
from serving.api.schemas import EARLIEST, LATEST
from tests.serving.conftest import RunningServer

pytestmark = pytest.mark.slow  # the real server over HTTP (started once per session: seconds)

EXAMPLES = 60
OPERATIONS = [("POST", "/score_leads"), ("POST", "/predict_clv"), ("GET", "/models")]
IN_RANGE = "2000-01-01T00:00:00Z"
"""What a time outside 1970-01-01..2200-01-01 in UTC (an offset at either end of the pattern's years) becomes."""


def _utc(text: str) -> datetime:
    """A request time as the service reads it: naive UTC (an offset converted, none taken as UTC)."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is None else value.astimezone(timezone.utc).replace(tzinfo=None)


def _in_range(text: Any) -> Any:
    return text if not isinstance(text, str) or EARLIEST <= _utc(text) < LATEST else IN_RANGE


def _not_after(text: str, as_of: str | None) -> str:
    """``text``, or ``as_of`` (default: a time before now) when ``text`` is later."""
    limit = as_of or IN_RANGE
    return text if _utc(text) <= (_utc(as_of) if as_of else datetime.now()) else limit


def within_the_rules_in_words(case: schemathesis.Case) -> schemathesis.Case:
    """A valid ``case`` made to follow the rules its document states in words: each id once (the item's index
    put in front), times in range in UTC, leads and orders not after ``as_of``, ``recency_days <= age_days``, a lead's
    activities sent one way, as objects or as columns of one length."""
    body = case.body
    if not isinstance(body, dict):
        return case
    as_of = _in_range(body.get("as_of"))
    if "as_of" in body:
        body["as_of"] = as_of
    for index, lead in enumerate(body.get("leads", ())):
        lead["lead_id"] = f"{index}:{lead['lead_id']}"[:64]
        lead["created_at"] = _not_after(_in_range(lead["created_at"]), as_of)
        for activity in lead.get("activities", ()):
            activity["occurred_at"] = _in_range(activity["occurred_at"])
        columns = lead.get("activity_columns")
        if isinstance(columns, dict):
            lead.pop("activities", None)
            sent = [name for name in ACTIVITY_FIELDS if isinstance(columns.get(name), list)]
            count = min(len(columns[name]) for name in sent)
            columns.update({name: columns[name][:count] for name in sent})
            columns["occurred_at"] = [_in_range(text) for text in columns["occurred_at"]]
    for index, customer in enumerate(body.get("customers", ())):
        customer["customer_id"] = f"{index}:{customer['customer_id']}"[:64]
        for order in customer.get("orders") or ():
            order["ordered_at"] = _not_after(_in_range(order["ordered_at"]), as_of)
        if customer.get("orders") is None and customer["recency_days"] > customer["age_days"]:
            customer["recency_days"], customer["age_days"] = customer["age_days"], customer["recency_days"]
    return case


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_the_service_does_what_its_openapi_document_says(server: RunningServer, method: str, path: str) -> None:
    with server.client() as http:
        document = http.get("/docs.json").json()
    operation = schemathesis.openapi.from_dict(document)[path][method]
    auth = {"Authorization": f"Bearer {server.api_key}"}
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE).map(within_the_rules_in_words),
                      operation.as_strategy(GenerationMode.NEGATIVE))

    @given(case=cases)
    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def one_case(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=server.url, headers=auth, timeout=30)

    one_case()
    with server.client() as http:
        assert http.get("/livez").status_code == 200
