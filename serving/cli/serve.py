"""``leadval serve``: start the scoring API (the BentoML service in :mod:`serving.api.service`) until Ctrl+C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Annotated

import typer

from features.settings import load_settings
from serving.api.champions import SERVED_MODEL_NAMES, NothingToServe, missing_champions
from training.registry import champion_uri

SERVICE = "serving.api.service:LeadvalService"
SERVICE_NAME = "leadval"


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
    """Warnings for models the registry lacks; raises ``NothingToServe`` when it has none of them."""
    missing = missing_champions(tracking_uri)
    if len(missing) == len(SERVED_MODEL_NAMES):
        details = "; ".join(f"{champion_uri(n)}: {r}" for n, r in missing.items())
        from features.crm.store import safe_url

        raise NothingToServe(f"no model to serve from {safe_url(tracking_uri)}: {details}. "
                             "Train them first: leadval train leads / leadval train clv")
    return [f"warning: {champion_uri(n)} is missing ({r}); its endpoint answers 503" for n, r in missing.items()]


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
    server = subprocess.Popen(server_command(host, port), env=server_environment(settings.tracking_uri, workers))
    previous = signal.signal(signal.SIGTERM, lambda *_: server.terminate())
    try:
        try:
            for warning in check_models(settings.tracking_uri):
                print(warning, file=sys.stderr)
        except KeyboardInterrupt:
            server.send_signal(signal.SIGINT)
        code = _wait(server)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server.poll() is None:
            server.terminate()
            server.wait()
    if code not in (0, -signal.SIGINT, -signal.SIGTERM):
        raise typer.Exit(code)


def _wait(server: subprocess.Popen) -> int:
    """The server's exit code; Ctrl+C (or SIGINT to this process alone) is passed on for a clean stop.

    Waits in short slices: a signal the OS hands to another thread (MLflow starts some) would
    otherwise not interrupt a blocking wait.
    """
    while True:
        try:
            return server.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            continue
        except KeyboardInterrupt:
            server.send_signal(signal.SIGINT)
