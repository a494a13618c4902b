"""Spark for the batch jobs: the session, and the CRM tables read over JDBC or from Parquet.

The session runs where ``--spark-master`` says (default ``local[2]``; ``spark://host:7077``, ``yarn`` or
``k8s://...`` on a cluster). JDBC drivers come from ``LEADVAL_SPARK_JARS`` (comma-separated jar paths;
default the Debian packages' ``/usr/share/java/postgresql.jar`` and ``xerial-sqlite-jdbc.jar`` where
present) or, on a cluster, from ``--spark-conf spark.jars.packages=...``. Timestamps are read as the text
the database holds and parsed in UTC, so neither the JVM's nor the machine's time zone can shift them.
Each table is read in time slices of its time column, one JDBC connection per slice, in parallel.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from sqlalchemy import DateTime, Float, Integer, Table
from sqlalchemy.engine import make_url

from features.errors import InvalidInput

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

DEBIAN_JDBC_JARS = ("/usr/share/java/postgresql.jar", "/usr/share/java/xerial-sqlite-jdbc.jar")
TIME_COLUMNS = {"leads": "created_at", "activities": "occurred_at", "orders": "ordered_at"}
"""The column each table is sliced on for parallel JDBC reads."""


@dataclass(frozen=True)
class SparkSettings:
    """Where Spark runs, which JDBC jars it loads, extra ``spark.*`` settings, and an optional Parquet source
    (a local directory or a URI such as ``s3a://bucket/crm`` holding ``<table>.parquet``)."""

    master: str = "local[2]"
    jars: tuple[str, ...] = ()
    conf: tuple[tuple[str, str], ...] = ()
    parquet: str | None = None
    partitions: int | None = None


def load_spark_settings(
    master: str | None = None,
    conf: Sequence[str] = (),
    parquet: str | Path | None = None,
    partitions: int | None = None,
) -> SparkSettings:
    """Settings from flags, then ``LEADVAL_SPARK_MASTER`` / ``LEADVAL_SPARK_JARS``, then defaults."""
    pairs = []
    for item in conf:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().startswith("spark."):
            raise InvalidInput(f"--spark-conf {item!r}: expected spark.some.key=value")
        pairs.append((key.strip(), value.strip()))
    jars_env = os.environ.get("LEADVAL_SPARK_JARS")
    jars = tuple(j for j in jars_env.split(",") if j) if jars_env else tuple(
        j for j in DEBIAN_JDBC_JARS if Path(j).exists())
    missing = [j for j in jars if "://" not in j and not Path(j).exists()]
    if missing:
        raise InvalidInput(f"LEADVAL_SPARK_JARS: no such jar {', '.join(missing)}")
    if parquet is not None and "://" not in str(parquet) and not Path(parquet).is_dir():
        raise InvalidInput(f"--parquet {parquet}: expected a directory holding <table>.parquet files")
    return SparkSettings(master or os.environ.get("LEADVAL_SPARK_MASTER", "local[2]"), jars, tuple(pairs),
                         None if parquet is None else str(parquet), partitions)


def spark_session(settings: SparkSettings) -> SparkSession:
    """A Spark session for the jobs (UTC, Arrow on, no UI); the workers run this interpreter unless told."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise InvalidInput("--engine spark needs pyspark: pip install 'leadval[spark]' (and Java 17+)") from exc
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    builder = (
        SparkSession.builder.master(settings.master).appName("leadval")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    if settings.jars:
        builder = builder.config("spark.jars", ",".join(settings.jars))
    for key, value in settings.conf:
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def jdbc_options(db_url: str) -> dict[str, str]:
    """Spark JDBC options (url, driver, user, password) for a SQLAlchemy SQLite or PostgreSQL URL.

    A PostgreSQL ``options=-csearch_path=...`` becomes the JDBC ``currentSchema``; other URL query
    settings (SSL and the like) are not carried over.
    """
    url = make_url(db_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise InvalidInput("--db: the Spark engine needs a SQLite file, not an in-memory database")
        return {"url": f"jdbc:sqlite:{Path(url.database).resolve()}", "driver": "org.sqlite.JDBC"}
    if backend == "postgresql":
        jdbc = f"jdbc:postgresql://{url.host or 'localhost'}:{url.port or 5432}/{url.database}"
        search_path = re.search(r"-csearch_path=([\w,]+)", str(url.query.get("options", "")))
        if search_path:
            jdbc += f"?currentSchema={search_path.group(1)}"
        options = {"url": jdbc, "driver": "org.postgresql.Driver"}
        if url.username:
            options["user"] = url.username
        if url.password:
            options["password"] = url.password
        return options
    raise InvalidInput(f"--db: the Spark engine reads SQLite or PostgreSQL over JDBC, not {backend}; "
                       "export the tables to Parquet and pass --parquet DIR")


def _spark_type(column_type: object) -> str:
    if isinstance(column_type, DateTime):
        return "STRING"
    if isinstance(column_type, Float):
        return "DOUBLE"
    if isinstance(column_type, Integer):
        return "BIGINT"
    return "STRING"


def time_slices(first: datetime, last: datetime, count: int, column: str) -> list[str]:
    """``count`` JDBC predicates that split ``column``'s range into equal time slices, open at both ends.

    The bounds are timestamps this code formats itself (never user text); ``'YYYY-MM-DD HH:MM:SS'``
    compares correctly with PostgreSQL timestamps and with SQLite's stored text alike.
    """
    step = (last - first) / count
    bounds = [f"'{first + step * i:%Y-%m-%d %H:%M:%S}'" for i in range(1, count)]
    if not bounds:
        return ["1=1"]
    return ([f"{column} < {bounds[0]}"]
            + [f"{column} >= {lo} AND {column} < {hi}" for lo, hi in zip(bounds, bounds[1:])]
            + [f"{column} >= {bounds[-1]}"])


def _time_range(db_url: str, table: Table, column: str) -> tuple[datetime, datetime] | None:
    from sqlalchemy import func, select

    from features.crm.store import connect

    engine = connect(db_url)
    try:
        with engine.connect() as conn:
            first, last = conn.execute(select(func.min(table.c[column]), func.max(table.c[column]))).one()
    finally:
        engine.dispose()
    if first is None:
        return None
    return pd.Timestamp(first).to_pydatetime(), pd.Timestamp(last).to_pydatetime()


def _jdbc_frame(spark: SparkSession, settings: SparkSettings, db_url: str, table: Table,
                columns: Sequence[str]) -> DataFrame:
    """The table over JDBC, in time slices read in parallel (one connection each) where it has a time column."""
    options = jdbc_options(db_url) | {
        "customSchema": ", ".join(f"{c} {_spark_type(table.c[c].type)}" for c in columns), "fetchsize": "10000"}
    column = TIME_COLUMNS.get(table.name)
    slices = settings.partitions or 2 * spark.sparkContext.defaultParallelism
    span = _time_range(db_url, table, column) if column and slices > 1 else None
    try:
        if span is None:
            return spark.read.format("jdbc").options(**options).option("dbtable", table.name).load()
        return spark.read.jdbc(options.pop("url"), table.name, predicates=time_slices(*span, slices, column),
                               properties=options)
    except Exception as exc:
        if "ClassNotFoundException" not in str(exc):
            raise
        raise InvalidInput(f"Spark has no JDBC driver {options['driver']}: install Debian's "
                           "libpostgresql-jdbc-java / libxerial-sqlite-jdbc-java, or set LEADVAL_SPARK_JARS "
                           "(or --spark-conf spark.jars.packages=...)") from None


def read_crm_table(spark: SparkSession, settings: SparkSettings, db_url: str, table: Table,
                   columns: Sequence[str]) -> DataFrame:
    """``columns`` of a CRM table as a Spark DataFrame, timestamps parsed in UTC, from Parquet or JDBC."""
    from pyspark.sql import functions as F

    if settings.parquet is not None:
        path = f"{settings.parquet.rstrip('/')}/{table.name}.parquet"
        if "://" not in path and not Path(path).exists():
            raise InvalidInput(f"--parquet {settings.parquet}: no {table.name}.parquet in it")
        frame = spark.read.parquet(path)
        absent = [c for c in columns if c not in frame.columns]
        if absent:
            raise InvalidInput(f"{path}: missing column(s) {', '.join(absent)}")
    else:
        frame = _jdbc_frame(spark, settings, db_url, table, columns)
    frame = frame.select(*columns)
    types = dict(frame.dtypes)
    for name in columns:
        if isinstance(table.c[name].type, DateTime) and types[name] == "string":
            frame = frame.withColumn(name, F.to_timestamp(F.col(name)))
    return frame


def timestamp_literal(value: object) -> object:
    """A Spark timestamp literal for a naive UTC datetime, parsed in the session's UTC zone."""
    from pyspark.sql import functions as F

    return F.to_timestamp(F.lit(str(value)))
