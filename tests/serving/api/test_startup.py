"""Start-up with models missing or unservable: none servable is a clear error naming both; one missing leaves the
other serving; a champion the service cannot serve (a lead model trained on a flat file) is missing with why, and
`leadval serve` never loops on a worker that cannot start."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import typer
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from features.errors import InvalidInput
from serving.api.champions import NothingToServe, load_champions, missing_champions, unservable_champions
from serving.api.limits import MAX_BODY_ENV
from serving.cli.serve import check_models, serve, server_environment
from tests.conftest import REPO_ROOT
from tests.mlflow_stores import empty_tracking_uri
from tests.serving.conftest import RunningServer, TrainedStore, free_port, start_server, stop_server
from tests.training.leads.data.test_table import tiny_table
from training.leads.data.splits import TableTrainingConfig, read_lead_table, table_splits
from training.leads.job import train_and_register
from training.registry import CLV_MODEL_NAME, LEAD_MODEL_NAME, champion_uri

FLAT_FILE_PROBLEM = "it was trained on a flat file (train leads --table), not on CRM leads"


def test_no_store_is_an_error_naming_both_models_and_creates_nothing(tmp_path: Path) -> None:
    store = tmp_path / "nowhere" / "mlflow.db"
    uri = f"sqlite:///{store}"
    assert set(missing_champions(uri)) == {LEAD_MODEL_NAME, CLV_MODEL_NAME}
    for attempt in (lambda: check_models(uri), lambda: load_champions(uri)):
        with pytest.raises(NothingToServe) as error:
            attempt()
        assert champion_uri(LEAD_MODEL_NAME) in str(error.value) and champion_uri(CLV_MODEL_NAME) in str(error.value)
        assert "no MLflow store" in str(error.value)
    assert not store.parent.exists()


def test_serve_command_stops_with_the_error_when_nothing_can_be_served(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(serve)
    port = free_port()
    result = CliRunner().invoke(app, ["--port", str(port), "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"])
    assert isinstance(result.exception, NothingToServe)
    assert champion_uri(LEAD_MODEL_NAME) in str(result.exception)


@pytest.fixture(scope="module")
def clv_only_server(trained_store: TrainedStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server on a registry that holds the CLV champion only (no API key)."""
    source = MlflowClient(trained_store.tracking_uri, trained_store.tracking_uri)
    champion = source.get_model_version_by_alias(CLV_MODEL_NAME, "champion")
    root = tmp_path_factory.mktemp("clv_only")
    uri = empty_tracking_uri(root)
    target = MlflowClient(uri, uri)
    target.create_registered_model(CLV_MODEL_NAME)
    version = target.create_model_version(CLV_MODEL_NAME, source.get_model_version_download_uri(
        CLV_MODEL_NAME, champion.version))
    target.set_registered_model_alias(CLV_MODEL_NAME, "champion", version.version)
    assert check_models(uri) == [f"warning: {champion_uri(LEAD_MODEL_NAME)} is missing (Registered Model with "
                                 f"name={LEAD_MODEL_NAME} not found); its endpoint answers 503"]
    running = start_server(uri, root, api_key=None, bentoml_alone=True)  # its worker loads the CLV model itself
    yield running
    stop_server(running)


@pytest.mark.slow  # a real server of its own over HTTP
def test_with_one_model_missing_the_other_serves_and_readyz_says_what_is_missing(
        clv_only_server: RunningServer) -> None:
    with clv_only_server.client() as http:
        ready = http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["serving"] == [CLV_MODEL_NAME]
        assert champion_uri(LEAD_MODEL_NAME) in ready.json()["missing"]
        leads = http.post("/score_leads", json={"leads": [{"lead_id": "a", "created_at": "2024-01-01",
                                                           "source_channel": "organic"}]})
        assert leads.status_code == 503 and champion_uri(LEAD_MODEL_NAME) in leads.json()["error"]
        customers = http.post("/predict_clv", json={"customers": [{"customer_id": "c", "frequency": 1,
                                                                   "recency_days": 3.0, "age_days": 9.0,
                                                                   "monetary_value": 20.0}]})
        assert customers.status_code == 200, customers.text
        models = http.get("/models").json()
        assert [m["name"] for m in models["models"]] == [CLV_MODEL_NAME]
        assert [m["name"] for m in models["missing"]] == [LEAD_MODEL_NAME]


def _registry_with(uri: str, champions: dict[str, str]) -> None:
    """A registry at ``uri`` whose champion of each name is a version made from the given model source."""
    client = MlflowClient(uri, uri)
    for name, source in champions.items():
        client.create_registered_model(name)
        version = client.create_model_version(name, source)
        client.set_registered_model_alias(name, "champion", version.version)


def _champion_source(tracking_uri: str, name: str) -> str:
    client = MlflowClient(tracking_uri, tracking_uri)
    return client.get_model_version_download_uri(name, client.get_model_version_by_alias(name, "champion").version)


@pytest.fixture(scope="module")
def flat_file_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The source of a lead model trained on a flat file (registered under its own name, as training does)."""
    root = tmp_path_factory.mktemp("flat_file_model")
    path = root / "leads.csv"
    tiny_table().to_csv(path, index=False)
    config = TableTrainingConfig(str(path), "won", positive="Won", id_column="lead")
    uri = empty_tracking_uri(root)
    result = train_and_register(table_splits(read_lead_table(path, id_column="lead"), config), config, uri,
                                str(root / "artifacts"))
    assert result.model_name == "lead-scoring-leads"
    return _champion_source(uri, result.model_name)


@pytest.fixture(scope="module")
def legacy_store(trained_store: TrainedStore, flat_file_model: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A registry where a flat-file model became the lead-scoring champion (as before file models had names of
    their own), beside a real CLV champion."""
    uri = empty_tracking_uri(tmp_path_factory.mktemp('legacy'))
    _registry_with(uri, {LEAD_MODEL_NAME: flat_file_model,
                         CLV_MODEL_NAME: _champion_source(trained_store.tracking_uri, CLV_MODEL_NAME)})
    return uri


def test_a_flat_file_lead_champion_is_not_served_and_says_why(legacy_store: str, flat_file_model: str,
                                                                tmp_path: Path) -> None:
    assert missing_champions(legacy_store) == {}
    assert FLAT_FILE_PROBLEM in unservable_champions(legacy_store)[LEAD_MODEL_NAME]
    warnings = check_models(legacy_store)
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {champion_uri(LEAD_MODEL_NAME)} is not served "
                                                         "(version 1 cannot be served: it was trained on a flat file")
    assert warnings[0].endswith("its endpoint answers 503")
    served = load_champions(legacy_store)
    assert list(served.loaded) == [CLV_MODEL_NAME]
    assert served.missing[LEAD_MODEL_NAME].startswith(f"version 1 cannot be served: {FLAT_FILE_PROBLEM}")
    alone = empty_tracking_uri(tmp_path)
    _registry_with(alone, {LEAD_MODEL_NAME: flat_file_model})
    for attempt in (lambda: check_models(alone), lambda: load_champions(alone)):
        with pytest.raises(NothingToServe, match="trained on a flat file") as error:
            attempt()
        assert champion_uri(CLV_MODEL_NAME) in str(error.value)


@pytest.mark.slow  # a real server of its own over HTTP
def test_with_a_flat_file_lead_champion_the_clv_api_serves_and_leads_answer_503(
        legacy_store: str, tmp_path: Path) -> None:
    running = start_server(legacy_store, tmp_path, api_key=None)
    try:
        with running.client() as http:
            ready = http.get("/readyz")
            assert ready.status_code == 200 and ready.json()["serving"] == [CLV_MODEL_NAME]
            leads = http.post("/score_leads", json={"leads": [{"lead_id": "a", "created_at": "2024-01-01",
                                                               "source_channel": "organic"}]})
            assert leads.status_code == 503 and FLAT_FILE_PROBLEM in leads.json()["error"]
        assert "Application startup failed" not in running.log.read_text(errors="replace")
    finally:
        stop_server(running)


def test_a_champion_of_the_other_kind_is_named_before_the_server_starts(trained_store: TrainedStore,
                                                                        tmp_path: Path) -> None:
    uri = empty_tracking_uri(tmp_path)
    _registry_with(uri, {LEAD_MODEL_NAME: _champion_source(trained_store.tracking_uri, CLV_MODEL_NAME),
                         CLV_MODEL_NAME: _champion_source(trained_store.tracking_uri, LEAD_MODEL_NAME)})
    assert unservable_champions(uri) == {
        LEAD_MODEL_NAME: "version 1 cannot be served: it is a CLV model, not a lead-scoring model",
        CLV_MODEL_NAME: "version 1 cannot be served: it is a lead-scoring model, not a CLV model"}
    with pytest.raises(NothingToServe, match="it is a CLV model, not a lead-scoring model"):
        check_models(uri)


def _serve_until_it_stops(uri: str, tmp_path: Path, extra_env: dict[str, str] | None = None
                          ) -> tuple[int, list[str], float, int]:
    """Run `leadval serve` on ``uri`` until it exits (fails the test after 90 s): its exit code, its stderr lines,
    the seconds it ran and how many times a worker failed to initialise the service."""
    leadval = Path(sys.executable).parent / "leadval"
    log = tmp_path / "serve.log"
    started = time.monotonic()
    with log.open("wb") as sink:
        process = subprocess.Popen([str(leadval), "serve", "--port", str(free_port()), "--tracking-uri", uri],
                                   env={**server_environment(uri, 1), **(extra_env or {})}, cwd=REPO_ROOT,
                                   stdout=sink, stderr=subprocess.PIPE)
        try:
            _, stderr = process.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            for child in psutil.Process(process.pid).children(recursive=True):
                child.kill()
            process.kill()
            pytest.fail(f"leadval serve was still running after 90 s:\n{log.read_text(errors='replace')[-3000:]}")
    took = time.monotonic() - started
    text = stderr.decode(errors="replace")
    starts = log.read_text(errors="replace").count("Initializing service error") + text.count(
        "Initializing service error")
    return process.returncode, text.strip().splitlines(), took, starts


@pytest.mark.slow  # `leadval serve` as a process, with champions it cannot load
def test_serve_stops_with_one_line_and_code_1_when_no_champion_can_be_loaded(
        trained_store: TrainedStore, tmp_path: Path) -> None:
    """The registry check passes (the CLV name holds a CLV model), but its files are gone: `leadval serve`, which
    loads the champions for its workers, must stop the server and exit 1 in seconds, before any worker fails."""
    uri = empty_tracking_uri(tmp_path)
    files = tmp_path / "clv_model"
    shutil.copytree(_champion_source(trained_store.tracking_uri, CLV_MODEL_NAME).removeprefix("file://"), files)
    _registry_with(uri, {CLV_MODEL_NAME: str(files)})
    shutil.rmtree(files)
    assert check_models(uri) == [f"warning: {champion_uri(LEAD_MODEL_NAME)} is missing (Registered Model with "
                                 f"name={LEAD_MODEL_NAME} not found); its endpoint answers 503"]
    code, said, took, starts = _serve_until_it_stops(uri, tmp_path)
    assert code == 1, said
    assert said[-1].startswith("error: no model to serve from"), said
    assert "models:/clv@champion: cannot load version 1" in said[-1]
    assert not any("listens on" in line for line in said)
    assert took < 45  # ~10 s on a busy 2-core machine: imports, the registry, the stop
    assert starts <= 1  # the waiting worker, told that nothing comes, stops once


@pytest.mark.slow  # `leadval serve` as a process, with a worker that fails at start-up
def test_serve_stops_with_one_line_and_code_1_when_the_worker_cannot_start(
        trained_store: TrainedStore, tmp_path: Path) -> None:
    """The lead champion loads but cannot score (its calibration has no steps), and there is no CLV champion: the
    worker fails its warm-up and cannot start; `leadval serve` must stop the server and exit 1 in seconds, not let
    BentoML restart the worker for ever."""
    uri = empty_tracking_uri(tmp_path)
    files = tmp_path / "lead_model"
    shutil.copytree(_champion_source(trained_store.tracking_uri, LEAD_MODEL_NAME).removeprefix("file://"), files)
    (saved,) = files.glob("**/scorer.json")
    scorer = json.loads(saved.read_text())
    saved.write_text(json.dumps(scorer | {"calibrator": scorer["calibrator"] | {"method": "isotonic", "x": [],
                                                                                 "y": []}}))
    _registry_with(uri, {LEAD_MODEL_NAME: str(files)})
    code, said, took, starts = _serve_until_it_stops(uri, tmp_path)
    assert code == 1, said
    assert said[-1].startswith("error: the scoring API could not start, so it was stopped: no model to serve: "), said
    assert said[-1].endswith("models:/lead-scoring@champion: version 1 failed its warm-up scoring: array of sample "
                             "points is empty")
    assert took < 45
    assert starts <= 2  # the worker may have been restarted once before the stop, never in a loop


def test_serve_refuses_a_limit_that_is_no_number_before_starting(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A server with a limit variable it cannot read would answer 500 to everything (its middleware reads them):
    `leadval serve` says which one, and starts nothing."""
    monkeypatch.setenv(MAX_BODY_ENV, "lots")
    app = typer.Typer()
    app.command()(serve)
    ran = CliRunner().invoke(app, ["--tracking-uri", empty_tracking_uri(tmp_path)])
    assert ran.exit_code == 1
    assert isinstance(ran.exception, InvalidInput)
    assert str(ran.exception) == "LEADVAL_MAX_BODY_BYTES must be a whole number of bytes > 0, not 'lots'"
