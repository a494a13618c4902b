"""The CRM database on SQLAlchemy 2: connect, create the schema, read tables as DataFrames, write chunks.

SQLite is the embedded default; PostgreSQL works through the same code. Writes take a connection so the
caller decides the transaction; upserts use ``INSERT ... ON CONFLICT`` on both databases.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, Table, create_engine, event, inspect, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.types import Date, DateTime, Float, Integer

from features.crm.schema import metadata
from features.crm.urls import safe_url, sqlite_file
from features.errors import DatabaseUnavailable

DEFAULT_CHUNK_ROWS = 50_000


def connect(url: str, *, create: bool = True) -> Engine:
    """An engine for ``url`` that is known to answer; SQLite files get foreign keys on.

    With ``create`` (the writing commands) a SQLite file that does not exist is created, with its folder; without
    it (the read-only commands) a missing SQLite file is a ``DatabaseUnavailable`` saying how to create it, and
    nothing is created on disk. Raises ``DatabaseUnavailable`` naming the (password-masked) URL when the database
    cannot be reached.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise DatabaseUnavailable(
            f"cannot parse database URL {safe_url(url)!r}; expected e.g. sqlite:///data/crm.db "
            "or postgresql+psycopg://user:password@host:5432/dbname"
        ) from None
    if parsed.get_backend_name() != "sqlite" and url.count("@") > 1:  # the password's tail would be taken for the host
        raise DatabaseUnavailable(f"cannot use database URL {safe_url(url)!r}: it holds more than one '@'; write an "
                                  "'@' in the user name, password or query as %40")
    path = sqlite_file(url)
    if path is not None and not create and not path.exists():
        raise DatabaseUnavailable(f"no CRM database at {path} ({safe_url(url)}); create it with leadval generate "
                                  "or leadval import")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    connect_args = {"connect_timeout": 5} if parsed.get_backend_name() == "postgresql" else {}
    try:
        engine = create_engine(parsed, connect_args=connect_args)
    except Exception as exc:  # missing driver, bad dialect name
        raise DatabaseUnavailable(f"cannot use database {safe_url(url)}: {_unquoted(str(exc), parsed)}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        if path is not None:
            event.listen(engine, "handle_error", _sqlite_file_error(path, url))
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(f"cannot reach database {safe_url(url)}: {_unquoted(reason, parsed)}") from None
    return engine


_SQLITE_FILE_PROBLEMS = {  # driver message -> (what failed, what to do)
    "attempt to write a readonly database": (
        "cannot write to", "it is read-only; give this user write access to the file and its folder (SQLite writes "
                           "a -wal and a -shm file beside it), or run this command as a user who has it"),
    "database is locked": (
        "cannot use", "another process holds it locked (still after 30 s); let that process finish or stop it, then "
                      "run this command again"),
}


def sqlite_file_problem(message: str, path: Path, url: str) -> str | None:
    """One line naming the SQLite file and what to do for a driver ``message`` about the file itself (read-only,
    locked), or None for any other message."""
    for known, (failed, advice) in _SQLITE_FILE_PROBLEMS.items():
        if known in message:
            return f"{failed} the SQLite database {path} ({safe_url(url)}): {advice}"
    return None


def _sqlite_file_error(path: Path, url: str) -> Any:
    """A ``handle_error`` listener turning a read-only or locked SQLite file into a one-line ``DatabaseUnavailable``."""

    def handle(context: Any) -> None:
        problem = sqlite_file_problem(str(context.original_exception), path, url)
        if problem is not None:
            raise DatabaseUnavailable(problem) from None

    return handle


def _unquoted(message: str, url: URL) -> str:
    """A driver's ``message`` with the URL's password masked, should the driver quote it."""
    return message.replace(url.password, "***") if url.password else message


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def create_schema(engine: Engine) -> None:
    """Create every leadval table and index that does not exist yet, and add the nullable columns a newer leadval
    added to an existing table (idempotent): a CRM created by an earlier version keeps working."""
    metadata.create_all(engine, checkfirst=True)
    present = inspect(engine)
    quote = engine.dialect.identifier_preparer
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            have = {column["name"] for column in present.get_columns(table.name)}
            for column in table.columns:
                if column.name not in have and column.nullable:
                    conn.execute(text(f"ALTER TABLE {quote.format_table(table)} ADD COLUMN "
                                      f"{quote.format_column(column)} {column.type.compile(dialect=engine.dialect)}"))


def missing_tables(engine: Engine) -> list[str]:
    """Names of leadval tables not present in the database."""
    present = set(inspect(engine).get_table_names())
    return [name for name in metadata.tables if name not in present]


def read_frame(
    engine: Engine | Connection,
    table: Table,
    columns: Sequence[str] | None = None,
    where: Any = None,
) -> pd.DataFrame:
    """Rows of ``table`` as a DataFrame with datetimes as naive UTC ``datetime64`` and floats as float64."""
    cols = [table.c[name] for name in columns] if columns else list(table.columns)
    query = select(*cols)
    if where is not None:
        query = query.where(where)
    frame = pd.read_sql(query, engine)
    return coerce_types(frame, table)


def coerce_types(frame: pd.DataFrame, table: Table) -> pd.DataFrame:
    """Give each column of ``frame`` the pandas dtype its database type implies."""
    out = frame.copy()
    for col in table.columns:
        if col.name not in out.columns:
            continue
        if isinstance(col.type, DateTime):
            out[col.name] = _naive_utc(out[col.name])
        elif isinstance(col.type, Date):
            out[col.name] = pd.to_datetime(out[col.name]).dt.date
        elif isinstance(col.type, Float):
            out[col.name] = pd.to_numeric(out[col.name]).astype("float64")
        elif isinstance(col.type, Integer) and not out[col.name].isna().any():
            out[col.name] = out[col.name].astype("int64")
    return out


def _naive_utc(values: pd.Series) -> pd.Series:
    parsed = pd.to_datetime(values, utc=True, format="ISO8601")
    return parsed.dt.tz_localize(None)


def records(frame: pd.DataFrame, table: Table) -> list[dict[str, Any]]:
    """Plain-Python rows for the DB driver: NaN/NaT become NULL, timestamps become ``datetime``."""
    names = [c.name for c in table.columns if c.name in frame.columns]
    columns: dict[str, list[Any]] = {}
    for name in names:
        series = frame[name]
        if pd.api.types.is_datetime64_any_dtype(series):
            if getattr(series.dt, "tz", None) is not None:
                series = series.dt.tz_convert("UTC").dt.tz_localize(None)
            values = [None if v is pd.NaT else v for v in series.dt.to_pydatetime()]
        elif pd.api.types.is_float_dtype(series):
            values = [None if math.isnan(v) else v for v in series.to_numpy(dtype="float64").tolist()]
        else:
            values = [None if _is_missing(v) else _db_value(v) for v in series.tolist()]
        columns[name] = values
    return [dict(zip(names, row)) for row in zip(*(columns[n] for n in names))]


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value))


def _db_value(value: Any) -> Any:
    """A value as the database driver takes it: Python numbers and datetimes."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value


def chunks(frame: pd.DataFrame, size: int = DEFAULT_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Consecutive row slices of at most ``size`` rows."""
    for start in range(0, len(frame), size):
        yield frame.iloc[start : start + size]


def insert_frame(conn: Connection, table: Table, frame: pd.DataFrame) -> int:
    """Insert every row of ``frame`` into ``table``; returns the row count."""
    rows = records(frame, table)
    if rows:
        conn.execute(table.insert(), rows)
    return len(rows)


def upsert_frame(conn: Connection, table: Table, frame: pd.DataFrame, key: Sequence[str] | None = None) -> int:
    """Insert rows, replacing those whose ``key`` (default: the primary key) already exists."""
    rows = records(frame, table)
    if not rows:
        return 0
    key_cols = list(key) if key else [c.name for c in table.primary_key.columns]
    dialect = conn.dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(table)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table)
    else:
        raise DatabaseUnavailable(f"upsert is supported on SQLite and PostgreSQL, not {dialect}")
    updates = {name: stmt.excluded[name] for name in rows[0] if name not in key_cols}
    if updates:
        stmt = stmt.on_conflict_do_update(index_elements=key_cols, set_=updates)
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=key_cols)
    conn.execute(stmt, rows)
    return len(rows)
