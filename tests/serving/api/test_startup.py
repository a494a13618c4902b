"""Start-up with models missing: none is a clear error naming both; one missing leaves the other serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from serving.api.champions import NothingToServe, load_champions, missing_champions
from serving.cli.serve import check_models, serve
from tests.serving.conftest import RunningServer, TrainedStore, free_port, start_server, stop_server
from training.registry import CLV_MODEL_NAME, LEAD_MODEL_NAME, champion_uri


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
    uri = f"sqlite:///{root / 'mlflow.db'}"
    target = MlflowClient(uri, uri)
    target.create_registered_model(CLV_MODEL_NAME)
    version = target.create_model_version(CLV_MODEL_NAME, source.get_model_version_download_uri(
        CLV_MODEL_NAME, champion.version))
    target.set_registered_model_alias(CLV_MODEL_NAME, "champion", version.version)
    assert check_models(uri) == [f"warning: {champion_uri(LEAD_MODEL_NAME)} is missing (Registered Model with "
                                 f"name={LEAD_MODEL_NAME} not found); its endpoint answers 503"]
    running = start_server(uri, root, api_key=None)
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
