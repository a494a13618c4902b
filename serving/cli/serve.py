"""``leadval serve``: start the scoring API (the BentoML service in :mod:`serving.api.service`) until Ctrl+C.

It never loops on a champion it cannot serve. While the server starts, it loads the champions and hands them to
the server's workers (:mod:`serving.api.champion_handover`, so they start without MLflow), then checks the
registry: a champion that is missing or cannot be served (a lead model trained on a flat file) is a warning and
its endpoint answers 503; with neither servable it stops with one line and exit code 1. On a local SQLite registry
nothing has written to since its last start, it hands over the champions it kept then, with that start's warnings,
and imports no MLflow (:mod:`serving.api.champion_handover`). A worker that fails at
start-up anyway writes why to a file this command watches (:data:`serving.api.champions.STARTUP_FAILURE_ENV`): the
server is then stopped, the reason printed as one line, and the exit code is 1, where BentoML alone would
restart the worker for ever.

Bound beyond loopback (``--host 0.0.0.0``) without ``LEADVAL_API_KEY`` it warns on stderr (anyone who can reach the
port can call the API), and once the port accepts connections it prints the address it listens on, host names
resolved (:func:`listening_line`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Annotated

import typer

from features.errors import LeadvalError
from features.settings import load_settings
from serving.api.champion_handover import (
    HANDOVER_ENV,
    KeptChampions,
    hand_over,
    hand_over_kept,
    hand_over_nothing,
    import_lightgbm_without_scikit_learn,
    keep_champions,
    store_state,
)
from serving.api.champions import (
    SERVED_MODEL_NAMES,
    STARTUP_FAILURE_ENV,
    NothingToServe,
    load_champions,
    missing_champions,
    unservable_champions,
)
from serving.api.limits import API_KEY_ENV, LimitsConfig
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
    worker, at most two malloc heaps per process (so memory freed after a burst can go back to the system,
    :func:`serving.api.limits.give_back`) and no BentoML usage telemetry."""
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env["BENTOML_CONFIG_OVERRIDES"] = json.dumps({"services": {SERVICE_NAME: {"workers": workers}}})
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MALLOC_ARENA_MAX", "2")
    env.setdefault("BENTOML_DO_NOT_TRACK", "True")
    return env


def _addresses(host: str) -> list[str]:
    """The numeric addresses ``host`` stands for (itself when numeric; none when it cannot be resolved)."""
    bare = host.strip().strip("[]")
    try:
        return [str(ipaddress.ip_address(bare))]
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(bare, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in found))


def is_loopback(host: str) -> bool:
    """True when every address ``host`` stands for is a loopback one (127.0.0.0/8, ::1, localhost)."""
    addresses = _addresses(host)
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """The one-line warning for a server bound beyond loopback without an API key (None: nothing to say)."""
    if api_key or is_loopback(host):
        return None
    return (f"warning: --host {host} exposes the scoring API beyond this machine and {API_KEY_ENV} is not set, so "
            f"anyone who can reach the port can call it; set {API_KEY_ENV} to a secret (clients then send "
            "'Authorization: Bearer <key>') or serve on --host 127.0.0.1")


def _url(address: str, port: int) -> str:
    return f"http://[{address}]:{port}" if ":" in address else f"http://{address}:{port}"


def listening_line(host: str, port: int) -> str:
    """What ``serve`` prints once the server accepts connections: the address it listens on, host names resolved,
    and for a wildcard address (0.0.0.0, ::) the addresses of this machine's interfaces it is reachable at."""
    address = (_addresses(host) or [host])[0]  # the one a bind uses
    line = f"the scoring API listens on {_url(address, port)}"
    if address in ("0.0.0.0", "::"):
        import psutil

        family = socket.AF_INET6 if address == "::" else socket.AF_INET
        local = [a.address.split("%")[0] for nic in psutil.net_if_addrs().values() for a in nic if a.family == family]
        line += f" (every interface: {', '.join(_url(a, port) for a in dict.fromkeys(local))})" if local else ""
    return line


class _Listening:
    """Prints :func:`listening_line` once the server's port accepts a connection."""

    def __init__(self, host: str, port: int) -> None:
        addresses = _addresses(host)
        target = addresses[0] if addresses else host
        self.target = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(target, target)
        self.host, self.port = host, port
        self.printed = False

    def poll(self) -> None:
        if self.printed:
            return
        try:
            with socket.create_connection((self.target, self.port), timeout=0.2):
                pass
        except OSError:
            return
        self.printed = True
        print(listening_line(self.host, self.port), file=sys.stderr, flush=True)


def check_models(tracking_uri: str) -> list[str]:
    """Warnings for models the registry lacks or cannot serve; raises ``NothingToServe`` when it has none it
    can serve."""
    missing = missing_champions(tracking_uri)
    unservable = unservable_champions(tracking_uri, skip=tuple(missing))
    if len(missing) + len(unservable) == len(SERVED_MODEL_NAMES):
        details = "; ".join(f"{champion_uri(n)}: {r}" for n, r in {**missing, **unservable}.items())
        from features.crm.urls import safe_url

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

    Set LEADVAL_API_KEY to require 'Authorization: Bearer <key>' (without it, a --host beyond loopback is
    warned about). With no model in the registry it stops.
    """
    from training.registry_store import check_store

    settings = load_settings(tracking_uri=tracking_uri)
    LimitsConfig.from_environment()  # a limit that is no number is one line, not a server answering 500
    check_store(settings.tracking_uri)  # a damaged store is one line before any server starts
    warning = exposure_warning(host, os.environ.get(API_KEY_ENV))
    if warning is not None:
        print(warning, file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="leadval-serve-") as folder:
        failure, handover = Path(folder) / "startup-failure.txt", Path(folder) / "champions.pickle"
        env = {**server_environment(settings.tracking_uri, workers), STARTUP_FAILURE_ENV: str(failure),
               HANDOVER_ENV: str(handover)}
        server = subprocess.Popen(server_command(host, port), env=env)
        previous = signal.signal(signal.SIGTERM, lambda *_: server.terminate())
        check = _Check(settings.tracking_uri, handover, hand_over_kept(settings.tracking_uri, handover))
        try:
            code = _wait(server, failure, check, _Listening(host, port))
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
    """The champions loaded and handed over to the workers, then :func:`check_models` for its warnings, in a thread
    of its own, so a slow registry never keeps :func:`_wait` from seeing a worker's start-up failure; its warnings
    are printed by the waiting loop, its error re-raised. Champions kept from a start on the same registry state
    (``kept``, already where the workers look) need neither: their warnings are those of that start."""

    def __init__(self, tracking_uri: str, handover: Path, kept: KeptChampions | None = None) -> None:
        self.warnings: list[str] | None = None if kept is None else kept.warnings
        self.error: BaseException | None = None
        self.printed = False
        if kept is None:
            threading.Thread(target=self._run, args=(tracking_uri, handover), daemon=True).start()

    def _run(self, tracking_uri: str, handover: Path) -> None:
        try:
            state = store_state(tracking_uri)  # before loading: kept only if nothing changed meanwhile
            import_lightgbm_without_scikit_learn()  # this process only loads the champions
            try:
                served = load_champions(tracking_uri)
            except NothingToServe:
                check_models(tracking_uri)  # its error says what to do; if it passes, the loading error stands
                raise
            hand_over(served, handover)  # first: the workers wait for it, the warnings can wait
            warnings = check_models(tracking_uri)
            keep_champions(tracking_uri, state, handover, warnings)
            self.warnings = warnings
        except Exception as exc:  # noqa: BLE001 - re-raised in the main thread
            self.error = exc
            hand_over_nothing(" ".join(str(exc).split()) or type(exc).__name__, handover)

    @property
    def passed(self) -> bool:
        """True once the champions were handed over and the registry checked."""
        return self.warnings is not None

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


def _wait(server: subprocess.Popen, failure: Path | None = None, check: _Check | None = None,
          listening: _Listening | None = None) -> int | None:
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
            if listening is not None and (check is None or check.passed):
                listening.poll()
        except KeyboardInterrupt:
            server.send_signal(signal.SIGINT)
