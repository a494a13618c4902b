"""Schemathesis fuzzing of the real server from its own OpenAPI document: no input makes it fail or stop.

Valid and invalid bodies (wrong types, missing fields, out-of-range numbers, odd strings) are drawn
from the schema the server publishes at ``/docs.json``, with a fixed seed and a bounded number of
examples. Every answer must be a 2xx or 4xx (never 5xx); 200 bodies must match the documented
schema, and 4xx bodies carry an ``error``. The server must still be alive afterwards.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.serving.conftest import RunningServer

pytestmark = pytest.mark.slow  # the real server over HTTP (started once per session: seconds)

EXAMPLES = 60


@pytest.mark.parametrize("path", ["/score_leads", "/predict_clv"])
def test_fuzzed_requests_never_cause_a_server_error(server: RunningServer, path: str) -> None:
    with server.client() as http:
        document = http.get("/docs.json").json()
    operation = schemathesis.openapi.from_dict(document)[path]["POST"]
    auth = {"Authorization": f"Bearer {server.api_key}"}
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

    @given(case=cases)
    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def one_case(case: schemathesis.Case) -> None:
        response = case.call(base_url=server.url, headers=auth, timeout=30)
        assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
        if response.status_code == 200:
            case.validate_response(response, checks=[response_schema_conformance])
        else:
            assert "error" in response.json()

    one_case()
    with server.client() as http:
        assert http.get("/livez").status_code == 200
