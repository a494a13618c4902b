"""``leadval serve``: start the scoring API (the BentoML service in :mod:`serving.api.service`) until Ctrl+C.

It never loops on a champion it cannot serve. While the server starts, the registry is checked: a champion
that is missing or cannot be served (a lead model trained on a flat file) is a warning and its endpoint
answers 503; with neither servable it stops with one line and exit code 1. A worker that fails at start-up
anyway writes why to a file this command watches (:data:`serving.api.champions.STARTUP_FAILURE_ENV`): the
server is then stopped, the reason printed as one line, and the exit code is 1, where BentoML alone would
restart the worker for ever.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Annotated

import typer

from features.errors import LeadvalError
from features.settings import load_settings
from serving.api.champions import (
    SERVED_MODEL_NAMES,
    STARTUP_FAILURE_ENV,
    NothingToServe,
    missing_champions,
    unservable_champions,
)
from training.registry import champion_uri

SERVICE = "serving.api.service:LeadvalService"
SERVICE_NAME = "leadval"
STOP_GRACE_S = 10.0
"""How long a server being stopped gets to exit before it is killed."""


class ServerFailed(LeadvalError):
    """The server could not start: a worker failed at start-up (the message says why)."""


def server_command(host: str, port: int) -> list[str]:
    """The ``bentoml serve`` command line for the service."""
    return [sys.executable, "-m", "bentoml", "serve", SERVICE, "--host", host, "--port", str(port)]


def server_environment(tracking_uri: str, workers: int) -> dict[str, str]:
    """This process's environment plus the tracking URI, the worker count, one BLAS/OpenMP thread per
    worker and no BentoML usage telemetry."""
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env["BENTOML_CONFIG_OVERRIDES"] = json.dumps({"services": {SERVICE_NAME: {"workers": workers}}})
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("BENTOML_DO_NOT_TRACK", "True")
    return env


def check_models(tracking_uri: str) -> list[str]:
    """Warnings for models the registry lacks or cannot serve; raises ``NothingToServe`` when it has none it
    can serve."""
    missing = missing_champions(tracking_uri)
    unservable = unservable_champions(tracking_uri, skip=tuple(missing))
    if len(missing) + len(unservable) == len(SERVED_MODEL_NAMES):
        details = "; ".join(f"{champion_uri(n)}: {r}" for n, r in {**missing, **unservable}.items())
        from features.crm.store import safe_url

        advice = "Train them first: leadval train leads --db URL / leadval train clv"
        raise NothingToServe(f"no model to serve from {safe_url(tracking_uri)}: {details}. {advice}")
    return ([f"warning: {champion_uri(n)} is missing ({r}); its endpoint answers 503" for n, r in missing.items()]
            + [f"warning: {champion_uri(n)} is not served ({r}); its endpoint answers 503"
               for n, r in unservable.items()])


def serve(
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; 0.0.0.0 exposes the API to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 3000,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Server processes, each with its own models.")] = 1,
    tracking_uri: Annotated[
        str | None,
        typer.Option("--tracking-uri", help="MLflow tracking/registry URI (env MLFLOW_TRACKING_URI; default "
                                            "sqlite:///models/mlflow.db)."),
    ] = None,
) -> None:
    """Serve lead scores and customer value over HTTP from the MLflow champions (POST /score_leads, /predict_clv).

    Set LEADVAL_API_KEY to require 'Authorization: Bearer <key>'. With no model in the registry it stops.
    """
    settings = load_settings(tracking_uri=tracking_uri)
    with tempfile.TemporaryDirectory(prefix="leadval-serve-") as folder:
        failure = Path(folder) / "startup-failure.txt"
        env = {**server_environment(settings.tracking_uri, workers), STARTUP_FAILURE_ENV: str(failure)}
        server = subprocess.Popen(server_command(host, port), env=env)
        previous = signal.signal(signal.SIGTERM, lambda *_: server.terminate())
        check = _Check(settings.tracking_uri)
        try:
            code = _wait(server, failure, check)
        finally:
            signal.signal(signal.SIGTERM, previous)
            stop_server(server)
        if check.error is not None:
            raise check.error
        if code is None:
            reason = failure.read_text(errors="replace").strip()
            raise ServerFailed(f"the scoring API could not start, so it was stopped: {reason}")
    if code not in (0, -signal.SIGINT, -signal.SIGTERM):
        raise typer.Exit(code)


class _Check:
    """:func:`check_models` in a thread of its own, so a slow registry never keeps :func:`_wait` from seeing
    a worker's start-up failure; its warnings are printed by the waiting loop, its error re-raised."""

    def __init__(self, tracking_uri: str) -> None:
        self.warnings: list[str] | None = None
        self.error: BaseException | None = None
        self.printed = False
        self._thread = threading.Thread(target=self._run, args=(tracking_uri,), daemon=True)
        self._thread.start()

    def _run(self, tracking_uri: str) -> None:
        try:
            self.warnings = check_models(tracking_uri)
        except Exception as exc:  # noqa: BLE001 - re-raised in the main thread
            self.error = exc

    def failed(self) -> bool:
        """True once the check has failed; prints its warnings once when it has passed."""
        if self.warnings is not None and not self.printed:
            self.printed = True
            for warning in self.warnings:
                print(warning, file=sys.stderr)
        return self.error is not None


def stop_server(server: subprocess.Popen) -> None:
    """Stop the server (SIGTERM: BentoML stops its workers), killing it when it has not exited in time."""
    if server.poll() is not None:
        return
    server.terminate()
    try:
        server.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def _wait(server: subprocess.Popen, failure: Path | None = None, check: _Check | None = None) -> int | None:
    """The server's exit code, or None as soon as the model check fails or a worker reports a start-up
    failure in ``failure``; Ctrl+C (or SIGINT to this process alone) is passed on for a clean stop.

    Waits in short slices: a signal the OS hands to another thread (MLflow starts some) would
    otherwise not interrupt a blocking wait, and the check and the failure file are looked at between them.
    """
    while True:
        try:
            return server.wait(timeout=0.25)
        except subprocess.TimeoutExpired:
            if check is not None and check.failed():
                return None
            if failure is not None and failure.exists() and failure.stat().st_size:
                return None
        except KeyboardInterrupt:
            server.send_signal(signal.SIGINT)
