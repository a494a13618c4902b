"""The MLflow store behind tracking and the registry, checked before MLflow touches it.

Left to itself MLflow turns a damaged SQLite store into a raw SQLAlchemy traceback, runs its migrations inside any
SQLite file it is pointed at (the CRM too), and retries a tracking server or database that does not answer for
minutes. :func:`check_store` costs a millisecond for a local file and at most :data:`CONNECT_TIMEOUT_S` for a
server, and ends each case in one line naming the store and what to do (:class:`TrackingStoreUnavailable`);
:func:`store_failure` words the same for a damaged store MLflow finds only later (a file cut short past its
schema). MLflow, SQLAlchemy and the CRM's store (pandas) are imported inside the functions, so that commands'
``--help`` stays fast.
"""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

from features.errors import LeadvalError

CONNECT_TIMEOUT_S = 3.0
"""How long a tracking server or database gets to accept a connection before the command gives up."""
MLFLOW_TABLES = frozenset({"alembic_version", "experiments", "runs", "registered_models", "model_versions"})
"""Tables every MLflow SQL store has: a database holding none of them is not an MLflow store."""
DAMAGED_SQLITE = ("file is not a database", "database disk image is malformed", "file is encrypted")
"""SQLite's messages for a file that is no longer a readable database (overwritten, cut short)."""
STORE_ERROR_CODES = frozenset({"ENDPOINT_NOT_FOUND", "TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR"})
"""MLflow error codes that say the store itself failed (not that a model, version or alias is missing)."""
SERVER_DATABASES = frozenset({"postgresql", "mysql", "mssql"})
OTHER_STORE = "pass --tracking-uri (env MLFLOW_TRACKING_URI) naming the MLflow store"


class TrackingStoreUnavailable(LeadvalError):
    """The MLflow store cannot be reached or read, or is no MLflow store: the message names it and what to do."""


def check_store(tracking_uri: str, create: bool = False) -> None:
    """Raise :class:`TrackingStoreUnavailable` when the store at ``tracking_uri`` is a damaged or foreign SQLite file,
    or a server or database that does not answer within :data:`CONNECT_TIMEOUT_S`.

    With ``create`` (training) an empty SQLite file may become a new store; without it (commands that only read)
    an empty one is an error too, as nothing in it can be read. A local SQLite file that does not exist passes: the
    training jobs create it, the readers say so (:func:`training.registry.missing_store`).
    """
    from features.crm.urls import sqlite_file

    path = sqlite_file(tracking_uri)
    if path is not None:
        _check_sqlite(path, tracking_uri, create)
    elif tracking_uri.startswith(("http://", "https://")):
        _check_server(tracking_uri)
    elif tracking_uri.split(":", 1)[0].split("+", 1)[0] in SERVER_DATABASES:
        _check_database(tracking_uri)


def damaged_store(path: Path, tracking_uri: str, reason: str) -> str:
    """One line for a local SQLite store that is no readable database, with what to do."""
    from features.crm.urls import safe_url

    return (f"the MLflow store {path.absolute()} ({safe_url(tracking_uri)}) is damaged ({reason}); restore it from a "
            "backup, or move it away and train again (leadval train leads, leadval train clv) to start a new one")


def store_failure(exc: BaseException, tracking_uri: str) -> TrackingStoreUnavailable | None:
    """The one-line error for ``exc`` when it is the store's failure rather than a missing model: a local SQLite store
    found damaged only now (a file cut short past its schema), or a server that answers but not as an MLflow store
    does (another web service on that port) or fails; None for anything else."""
    from features.crm.urls import safe_url, sqlite_file

    text = str(getattr(exc, "message", None) or exc)
    path = sqlite_file(tracking_uri)
    found = next((known for known in DAMAGED_SQLITE if known in text), None)
    if path is not None and found is not None:
        return TrackingStoreUnavailable(damaged_store(path, tracking_uri, found))
    if getattr(exc, "error_code", None) in STORE_ERROR_CODES:
        first = (text.strip().splitlines() or [type(exc).__name__])[0]
        return TrackingStoreUnavailable(f"{safe_url(tracking_uri)} does not answer as an MLflow store "
                                        f"({first}); check it, or {OTHER_STORE}")
    return None


def _check_sqlite(path: Path, tracking_uri: str, create: bool) -> None:
    """A local SQLite store: missing is fine here, otherwise it must open as a database and be MLflow's (or empty,
    when ``create``). Opened read-only: the check never writes, and never creates a -wal or -shm file."""
    import sqlite3
    from contextlib import closing
    from urllib.parse import quote

    from features.crm.urls import safe_url

    if not path.exists():
        return
    if path.is_dir():
        raise TrackingStoreUnavailable(f"the MLflow store {path.absolute()} ({safe_url(tracking_uri)}) is a folder, not an "
                                       f"SQLite file; {OTHER_STORE}")
    try:
        with closing(sqlite3.connect(f"file:{quote(str(path.absolute()))}?mode=ro", uri=True, timeout=5)) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        found = next((known for known in DAMAGED_SQLITE if known in str(exc)), None)
        if found is None:  # locked, no permission: MLflow's own message (and the store's handlers) say it
            return
        raise TrackingStoreUnavailable(damaged_store(path, tracking_uri, found)) from None
    if not tables:
        if create:
            return
        raise TrackingStoreUnavailable(f"the MLflow store {path.absolute()} ({safe_url(tracking_uri)}) is empty: no model was "
                                       "trained into it; train one first with leadval train leads or leadval train "
                                       f"clv, or {OTHER_STORE}")
    if not tables & MLFLOW_TABLES:
        shown = ", ".join(sorted(tables)[:3]) + (", ..." if len(tables) > 3 else "")
        crm = ": the CRM?" if {"leads", "orders"} <= tables else ""
        raise TrackingStoreUnavailable(f"{path.absolute()} ({safe_url(tracking_uri)}) is an SQLite database but not an MLflow "
                                       f"store (it holds {shown}{crm}); {OTHER_STORE}, e.g. "
                                       "sqlite:///models/mlflow.db")


def _check_server(tracking_uri: str) -> None:
    """An MLflow tracking server must accept a TCP connection within the time limit (MLflow's own client retries
    a refused connection for minutes). Behind an HTTP proxy the proxy is MLflow's business: not checked."""
    from features.crm.urls import safe_url

    parts = urlsplit(tracking_uri)
    if not parts.hostname:
        return
    proxies = getproxies()
    if parts.scheme in proxies and not proxy_bypass(parts.hostname):
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:
        timed_out = isinstance(exc, TimeoutError)
        reason = f"no answer within {CONNECT_TIMEOUT_S:.0f} s" if timed_out else (
            getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
        raise TrackingStoreUnavailable(f"cannot reach the MLflow tracking server at {safe_url(tracking_uri)}: "
                                       f"{reason}; start it (mlflow server) or {OTHER_STORE}") from None


def _check_database(tracking_uri: str) -> None:
    """An MLflow store in PostgreSQL, MySQL or SQL Server must accept one connection within the time limit (MLflow
    retries a failed one 15 times with growing pauses, minutes in all)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from features.crm.urls import safe_url

    try:
        url = make_url(tracking_uri)
        timeout = {"connect_timeout": int(CONNECT_TIMEOUT_S)} if url.get_backend_name() != "mssql" else {}
        engine = create_engine(url, connect_args=timeout)
    except Exception:  # noqa: BLE001 - a URL or driver problem: MLflow says it its own way
        return
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to connect is this store's failure
        original = getattr(exc, "orig", None) or exc
        reason = (str(original).strip().splitlines() or [type(original).__name__])[0]
        if url.password:
            reason = reason.replace(url.password, "***")
        raise TrackingStoreUnavailable(f"cannot reach the MLflow store at {safe_url(tracking_uri)}: {reason}; start "
                                       f"the database or {OTHER_STORE}") from None
    finally:
        engine.dispose()
