"""Serving fixtures: one simulated CRM and MLflow store with both champions, and the real server over HTTP.

The server is started by ``leadval serve`` as a subprocess on a free port of 127.0.0.1 (its workers take the
champions it hands over), or as BentoML alone with ``leadval serve``'s command line and environment (its workers
load the champions from the registry, as in a container), with an API key and a small body limit; the fixture
waits for ``/readyz`` and stops the server and its workers afterwards.
Starting a server costs seconds, so there is one per session (plus one for the start-up tests).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import psutil
import pytest

from features.crm.store import connect, create_schema
from features.lead_history import crm_period
from features.simulate.config import SimulationConfig
from features.simulate.generate import generate_crm
from serving.cli.serve import server_command, server_environment
from tests.conftest import REPO_ROOT
from tests.mlflow_stores import empty_tracking_uri
from training.clv.job import train_from_crm
from training.leads.data.splits import CrmTrainingConfig, crm_splits
from training.leads.job import train_and_register

API_KEY = "test-key-5b1f0c"
MAX_BODY_BYTES = 8 * 1024 * 1024
READY_TIMEOUT_S = 120.0
SIMULATION = SimulationConfig(n_leads=1_500, n_customers=400, seed=11, end=datetime(2025, 12, 31))
"""The session's CRM: a fixed end, so every test day sees the same data (the demo's CRM ends now instead)."""


@dataclass(frozen=True)
class TrainedStore:
    """A simulated CRM and the MLflow store its models were trained into."""

    crm_url: str
    tracking_uri: str
    artifact_root: str
    as_of: datetime
    """The CRM's latest event: the point in time the tests score at."""


@dataclass(frozen=True)
class RunningServer:
    """A server subprocess and how to reach it."""

    url: str
    process: subprocess.Popen
    log: Path
    api_key: str | None

    def client(self, authorised: bool = True, timeout: float = 30.0) -> httpx.Client:
        """An HTTP client for the server, sending the API key unless ``authorised`` is False."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if authorised and self.api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the server printed."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    """A TCP port nobody listens on at 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(tracking_uri: str, workdir: Path, api_key: str | None = API_KEY,
                 extra_env: dict[str, str] | None = None, bentoml_alone: bool = False) -> RunningServer:
    """Start the service with ``leadval serve`` (or ``bentoml_alone``: its server command without it) and wait until
    ``/readyz`` answers 200."""
    port = free_port()
    env = server_environment(tracking_uri, workers=1)
    env.pop("LEADVAL_API_KEY", None)
    env.update({"LEADVAL_MAX_BODY_BYTES": str(MAX_BODY_BYTES), **(extra_env or {})})
    if api_key:
        env["LEADVAL_API_KEY"] = api_key
    log = workdir / f"server-{port}.log"
    with log.open("wb") as sink:
        command = server_command("127.0.0.1", port) if bentoml_alone else [
            str(Path(sys.executable).parent / "leadval"), "serve", "--port", str(port), "--tracking-uri", tracking_uri]
        process = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=sink, stderr=subprocess.STDOUT)
    server = RunningServer(f"http://127.0.0.1:{port}", process, log, api_key)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop_server(server)
    pytest.fail(f"the server was not ready after {READY_TIMEOUT_S:.0f} s:\n{server.log_tail()}")


def stop_server(server: RunningServer) -> None:
    """Stop the server: SIGTERM to ``leadval serve`` or the BentoML arbiter, which stop the workers (they run in
    process groups of their own); whatever of ours is still alive after 20 s is killed by pid."""
    if server.process.poll() is not None:
        return
    ours = psutil.Process(server.process.pid).children(recursive=True)
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    _, alive = psutil.wait_procs(ours, timeout=10)
    for process in alive:
        process.kill()


def simulated_crm(url: str, config: SimulationConfig) -> str:
    """Write a simulated CRM at ``url``; returns its last day (YYYY-MM-DD), the as-of the batch tests score at."""
    engine = connect(url)
    create_schema(engine)
    generate_crm(engine, config)
    as_of = f"{crm_period(engine)[1]:%Y-%m-%d}"
    engine.dispose()
    return as_of


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory: pytest.TempPathFactory) -> TrainedStore:
    """A small simulated CRM with the lead-scoring and CLV champions trained on it."""
    root = tmp_path_factory.mktemp("serving_store")
    crm_url = f"sqlite:///{root / 'crm.db'}"
    engine = connect(crm_url)
    generate_crm(engine, SIMULATION)
    engine.dispose()
    tracking_uri = empty_tracking_uri(root)
    artifact_root = str(root / "artifacts")
    config = CrmTrainingConfig()
    engine = connect(crm_url)
    splits = crm_splits(engine, config)
    _, end = crm_period(engine)
    engine.dispose()
    train_and_register(splits, config, tracking_uri, artifact_root)
    train_from_crm(crm_url, tracking_uri, artifact_root)
    return TrainedStore(crm_url, tracking_uri, artifact_root, end.to_pydatetime())


@pytest.fixture(scope="session")
def server(trained_store: TrainedStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The service on both champions, with an API key; one per test session."""
    running = start_server(trained_store.tracking_uri, tmp_path_factory.mktemp("server"))
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def spark_for_session() -> Iterator[None]:
    """Stops the session's Spark, if one is running, when the test session ends."""
    yield
    from pyspark.sql import SparkSession

    running = SparkSession.getActiveSession()
    if running is not None:
        running.stop()


@pytest.fixture
def spark(spark_for_session: None) -> object:
    """The test session's local Spark (local[2]): started once, on first use, and shared by every test.

    A JVM and a Spark context take seconds to start, so they are not started per test or per module. A
    command that stops its session when done (``leadval score --engine spark``) leaves the next test a fresh
    session on the running JVM.
    """
    from serving.batch.spark_source import load_spark_settings, spark_session

    return spark_session(load_spark_settings(master="local[2]"))


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    """An authorised HTTP client of the session's server."""
    with server.client() as http:
        yield http
