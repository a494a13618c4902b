"""Small holes: overflowing numbers are a 400 naming the field and its limit, a bad request logs one line (no
traceback), and `leadval serve` beyond loopback without an API key warns and says where it listens.

The schema bounds, the log filter and the serve messages are checked in-process (fast); the real server over HTTP
(slow) shows the same on the wire, in its log and from the `leadval serve` command.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from bentoml.exceptions import BadInput
from pydantic import ValidationError

from features.crm.rules import MAX_AMOUNT as IMPORT_MAX_AMOUNT
from serving.api.activities import MAX_DURATION_SECONDS
from serving.api.error_log import BENTOML_ERROR_LOGGER, ConciseClientErrors
from serving.api.schemas import (
    MAX_AMOUNT,
    MAX_DAYS,
    MAX_FREQUENCY,
    PredictCLVRequest,
    ScoreLeadsRequest,
)
from serving.cli.serve import exposure_warning, is_loopback, listening_line, server_environment
from tests.conftest import REPO_ROOT
from tests.serving.conftest import RunningServer, TrainedStore, free_port

SUMMARY = {"customer_id": "c", "frequency": 1, "recency_days": 5.0, "age_days": 9.0, "monetary_value": 10.0}
BOUNDS = [("frequency", MAX_FREQUENCY), ("recency_days", MAX_DAYS), ("age_days", MAX_DAYS),
          ("monetary_value", MAX_AMOUNT)]


def _customers(**fields: object) -> str:
    customer = SUMMARY | fields
    if customer["recency_days"] > customer["age_days"]:  # keep recency <= age, the rule under test is the bound
        customer["age_days"] = customer["recency_days"]
    return json.dumps({"customers": [customer]})


def _lead(duration: object) -> str:
    return json.dumps({"leads": [{"lead_id": "l", "created_at": "2024-01-01", "source_channel": "web", "activities": [
        {"activity_type": "page_view", "occurred_at": "2024-01-02T10:00:00Z", "duration_seconds": duration}]}]})


def _orders(amount: object) -> str:
    return json.dumps({"customers": [{"customer_id": "c", "orders": [{"ordered_at": "2024-01-01", "amount": amount}]}],
                       "as_of": "2024-02-01"})


def _first_problem(error: ValidationError) -> tuple[tuple, str]:
    first = error.errors(include_input=False)[0]
    return first["loc"], first["msg"]


@pytest.mark.parametrize(("field", "limit"), BOUNDS)
def test_summary_numbers_up_to_their_bound_pass_and_beyond_it_are_refused_naming_field_and_limit(
        field: str, limit: float) -> None:
    PredictCLVRequest.model_validate_json(_customers(**{field: limit}))
    over = [limit + 1, 2**63, 10**30] if field == "frequency" else [limit * 1.001, 2.0**63, 1e308]
    for value in over:
        with pytest.raises(ValidationError) as error:
            PredictCLVRequest.model_validate_json(_customers(**{field: value}))
        assert _first_problem(error.value) == (("customers", 0, field), f"Input should be less than or equal to "
                                                                        f"{limit:.0f}")


def test_order_amounts_and_activity_durations_are_bounded_too() -> None:
    PredictCLVRequest.model_validate_json(_orders(MAX_AMOUNT))
    ScoreLeadsRequest.model_validate_json(_lead(MAX_DURATION_SECONDS))
    for make, value, loc, limit in ((_orders, MAX_AMOUNT * 2, ("customers", 0, "orders", 0, "amount"), MAX_AMOUNT),
                                    (_lead, 2**63, ("leads", 0, "activities", 0, "duration_seconds"),
                                     MAX_DURATION_SECONDS)):
        model = PredictCLVRequest if make is _orders else ScoreLeadsRequest
        with pytest.raises(ValidationError) as error:
            model.model_validate_json(make(value))
        assert _first_problem(error.value) == (loc, f"Input should be less than or equal to {limit:.0f}")


def test_the_bounds_are_in_the_published_schema_and_the_amount_is_the_imports() -> None:
    assert MAX_AMOUNT == IMPORT_MAX_AMOUNT
    customer = PredictCLVRequest.model_json_schema()["$defs"]["Customer"]["properties"]
    maxima = {name: next(option["maximum"] for option in customer[name]["anyOf"] if "maximum" in option)
              for name, _ in BOUNDS}
    assert maxima == dict(BOUNDS)


def _record(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:  # noqa: BLE001 - the record needs a real exc_info
        return logging.getLogger(BENTOML_ERROR_LOGGER).makeRecord(
            BENTOML_ERROR_LOGGER, logging.ERROR, __file__, 1, "Exception on %s [%s]", ("/predict_clv", "POST"),
            sys.exc_info())


def test_client_errors_become_one_line_and_server_errors_keep_their_traceback() -> None:
    with pytest.raises(ValidationError) as bad:
        PredictCLVRequest.model_validate_json(_customers(frequency=2**63, monetary_value=-1.0))
    record = _record(bad.value)
    assert ConciseClientErrors().filter(record)
    assert (record.getMessage(), record.levelname, record.exc_info) == (
        "400 POST /predict_clv: customers.0.frequency: Input should be less than or equal to 1000000 (and 1 more)",
        "WARNING", None)
    record = _record(BadInput("the body is not JSON"))
    assert ConciseClientErrors().filter(record)
    assert record.getMessage() == "400 POST /predict_clv: the body is not JSON" and record.exc_info is None
    record = _record(OverflowError("Python int too large to convert to C long"))
    assert ConciseClientErrors().filter(record)
    assert record.levelno == logging.ERROR and record.exc_info[0] is OverflowError
    assert record.getMessage() == "Exception on /predict_clv [POST]"


def test_only_a_loopback_host_without_an_api_key_goes_unwarned() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert is_loopback(host) and exposure_warning(host, None) is None
    for host in ("0.0.0.0", "::", "10.1.2.3"):
        assert not is_loopback(host) and exposure_warning(host, "a-key") is None
        warning = exposure_warning(host, None)
        assert warning.startswith(f"warning: --host {host} ") and "\n" not in warning
        assert "set LEADVAL_API_KEY" in warning and "--host 127.0.0.1" in warning
    assert listening_line("localhost", 3000) == "the scoring API listens on http://127.0.0.1:3000"
    assert listening_line("::1", 3000) == "the scoring API listens on http://[::1]:3000"
    assert listening_line("0.0.0.0", 3000).startswith("the scoring API listens on http://0.0.0.0:3000 (every "
                                                      "interface: http://127.0.0.1:3000")


def _problem(response: httpx.Response) -> tuple[list, str]:
    assert response.status_code == 400, response.text
    first = response.json()["detail"][0]
    return first["loc"], first["msg"]


@pytest.mark.slow  # the real server over HTTP (the session's)
def test_overflowing_numbers_are_a_400_over_http_and_values_at_the_bounds_stay_finite(client: httpx.Client) -> None:
    for body, loc, limit in (
            (_customers(frequency=2**63), ["customers", 0, "frequency"], MAX_FREQUENCY),
            (_customers(frequency=10**18), ["customers", 0, "frequency"], MAX_FREQUENCY),
            (_customers(age_days=1e300), ["customers", 0, "age_days"], MAX_DAYS),
            (_customers(monetary_value=1e300), ["customers", 0, "monetary_value"], MAX_AMOUNT),
            (_orders(1e300), ["customers", 0, "orders", 0, "amount"], MAX_AMOUNT)):
        response = client.post("/predict_clv", content=body, headers={"content-type": "application/json"})
        assert _problem(response) == (loc, f"Input should be less than or equal to {limit:.0f}")
    response = client.post("/score_leads", content=_lead(2**63), headers={"content-type": "application/json"})
    assert _problem(response) == (["leads", 0, "activities", 0, "duration_seconds"],
                                  f"Input should be less than or equal to {MAX_DURATION_SECONDS}")
    corners = [{"customer_id": f"c{i}", "frequency": f, "recency_days": r, "age_days": a, "monetary_value": m}
               for i, (f, r, a, m) in enumerate([(MAX_FREQUENCY, MAX_DAYS, MAX_DAYS, MAX_AMOUNT),
                                                  (MAX_FREQUENCY, 0.0, MAX_DAYS, MAX_AMOUNT),
                                                  (MAX_FREQUENCY, 0.0, 0.0, MAX_AMOUNT), (0, 0.0, MAX_DAYS, 0.0),
                                                  (1, 1.0, MAX_DAYS, MAX_AMOUNT)])]
    response = client.post("/predict_clv", json={"customers": corners, "horizon_days": 3650, "discount_rate": 0})
    assert response.status_code == 200, response.text
    for value in response.json()["customers"]:
        for field in ("expected_purchases", "p_alive", "expected_order_value", "clv"):
            number = value[field]
            assert math.isfinite(number) and number >= 0 and math.copysign(1, number) == 1, (value, field)


@pytest.mark.slow  # the real server over HTTP (the session's)
def test_a_bad_body_adds_one_log_line_without_traceback(server: RunningServer, client: httpx.Client) -> None:
    def lines() -> list[str]:
        return server.log.read_text(errors="replace").splitlines()

    def settled_after(count: int) -> list[str]:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            new = lines()[count:]
            if any("status=400" in line for line in new):  # BentoML's access line, written after the response
                return new
            time.sleep(0.05)
        pytest.fail(f"no access line for the bad request in the server log:\n{server.log_tail()}")

    for path, body, problem in (("/predict_clv", b"{}", "customers: Field required"),
                                ("/score_leads", b"[", "Invalid JSON"),
                                ("/predict_clv", _customers(frequency=2**63).encode(),
                                 "customers.0.frequency: Input should be less than or equal to 1000000")):
        before = len(lines())
        assert client.post(path, content=body, headers={"content-type": "application/json"}).status_code == 400
        new = [line for line in settled_after(before) if "(scheme=http," not in line]  # not BentoML's access log
        assert len(new) == 1, new
        assert "[WARNING]" in new[0] and f"400 POST {path}: {problem}" in new[0], new
        assert "Traceback" not in "\n".join(lines()[before:])


@pytest.mark.slow  # `leadval serve` as a process with a server of its own
def test_serve_beyond_loopback_without_a_key_warns_and_prints_where_it_listens(trained_store: TrainedStore,
                                                                              tmp_path: Path) -> None:
    port = free_port()
    env = server_environment(trained_store.tracking_uri, 1)
    env.pop("LEADVAL_API_KEY", None)
    leadval = Path(sys.executable).parent / "leadval"
    log = tmp_path / "serve.log"
    said: list[str] = []
    with log.open("wb") as sink:
        process = subprocess.Popen([str(leadval), "serve", "--host", "0.0.0.0", "--port", str(port),
                                    "--tracking-uri", trained_store.tracking_uri], env=env, cwd=REPO_ROOT,
                                   stdout=sink, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=lambda: said.extend(line.strip() for line in process.stderr), daemon=True).start()
        try:
            deadline = time.monotonic() + 90
            while (time.monotonic() < deadline and process.poll() is None
                   and not any("listens on" in line for line in said)):
                time.sleep(0.1)
            assert any("listens on" in line for line in said), (said, log.read_text(errors="replace")[-3000:])
            while time.monotonic() < deadline:  # the port accepts connections before the worker answers
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            else:
                pytest.fail(f"no answer on port {port}:\n{log.read_text(errors='replace')[-3000:]}")
        finally:
            children = psutil.Process(process.pid).children(recursive=True)
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            for child in psutil.wait_procs(children, timeout=10)[1]:
                child.kill()
    warnings = [line for line in said if "LEADVAL_API_KEY is not set" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: --host 0.0.0.0 exposes the scoring API"), said
    listening = [line for line in said if "listens on" in line]
    assert listening and listening[0].startswith(f"the scoring API listens on http://0.0.0.0:{port} (every "
                                                 f"interface: http://127.0.0.1:{port}"), said
