"""The nightly jobs on Spark (``--engine spark``): same features, same model, same write-back, more machines.

Leads: Spark reads ``leads`` and ``activities`` (JDBC or Parquet, see :mod:`serving.batch.spark_source`),
hashes leads into buckets, cogroups each bucket's leads with their activities and computes the features
with :func:`features.lead_features.lead_features` (the pandas engine's code), then scores them with the
registered pyfunc through :func:`mlflow.pyfunc.spark_udf`. Customers: orders bucketed by customer, RFM by
:func:`features.rfm.rfm_summary`, the CLV pyfunc as a UDF. The scored rows stream back to the driver,
which writes them through :func:`serving.batch.writeback.write_scored` exactly as the pandas engine does (ledger,
one transaction per chunk, resumable), so both engines give the same rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

import pandas as pd
from sqlalchemy import Engine, Table, func, select

from features.crm import schema
from features.crm.store import create_schema
from features.errors import InvalidInput
from features.lead_features import ACTIVITY_INPUT_COLUMNS, LEAD_INPUT_COLUMNS, lead_features
from features.lead_history import LEAD_COLUMNS
from features.rfm import rfm_summary
from serving.batch.jobs import (
    BatchResult,
    clv_model_warnings,
    dry_result,
    given_as_of,
    latest_time,
    model_identity,
    optional_clv_parameters,
    staleness_warnings,
    written_result,
)
from serving.batch.runs import job_lock, plan_run
from serving.batch.spark_source import SparkSettings, read_crm_table, timestamp_literal
from serving.batch.writeback import CUSTOMER_JOB, LEAD_JOB, ModelIdentity, utc_now, write_scored
from training.clv.predict import rfm_in_days
from training.leads.pyfunc import scorer_of
from training.leads.value import expected_values
from training.registry import CLV_MODEL_URI, LEAD_MODEL_URI

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from training.leads.spec import FeatureSpec

ROWS_PER_BUCKET = 20_000
"""Leads or customers per feature bucket: one pandas call each, small enough for any executor."""
BUCKET = "_leadval_bucket"
LEAD_SCORES = "score long, probability double, band string, reasons string"
CUSTOMER_SCORES = "expected_purchases double, p_alive double, expected_order_value double, clv double, segment string"
RFM_SCHEMA = "customer_id string, frequency long, recency_days double, age_days double, monetary_value double"


def pinned_uri(identity: ModelIdentity) -> str:
    """The exact registered version the run records, so an alias moving mid-run cannot change the model."""
    return f"models:/{identity.name}/{identity.version}" if identity.version else identity.uri


def bucket_count(spark: SparkSession, settings: SparkSettings, rows: int) -> int:
    """``--spark-partitions``, else enough buckets to keep every core busy and each bucket small."""
    return settings.partitions or max(spark.sparkContext.defaultParallelism, math.ceil(rows / ROWS_PER_BUCKET))


def _bucketed(frame: DataFrame, key: str, buckets: int) -> DataFrame:
    """``frame`` with its bucket, hash-partitioned into exactly ``buckets`` partitions (not the 200 shuffle
    partitions a group-by would make: each becomes a job when the rows stream back)."""
    from pyspark.sql import functions as F

    return frame.withColumn(BUCKET, F.pmod(F.hash(key), F.lit(buckets))).repartition(buckets, BUCKET)


def feature_schema(spec: FeatureSpec) -> str:
    """The Spark schema of the pyfunc's input rows: id, categoricals as strings, numerics as doubles."""
    return ", ".join([f"{spec.id_column} string", *(f"{c} string" for c in spec.categorical),
                      *(f"{c} double" for c in spec.numeric)])


def lead_feature_frame(leads: DataFrame, activities: DataFrame, as_of: pd.Timestamp, spec: FeatureSpec,
                       buckets: int) -> DataFrame:
    """Each lead's features as of ``as_of``, computed by ``lead_features`` on buckets of leads and activities."""
    columns = [spec.id_column, *spec.categorical, *spec.numeric]

    def features(bucket_leads: pd.DataFrame, bucket_activities: pd.DataFrame) -> pd.DataFrame:
        if bucket_leads.empty:
            return pd.DataFrame(columns=columns)
        return lead_features(bucket_leads.drop(columns=BUCKET), bucket_activities.drop(columns=BUCKET), as_of)[columns]

    return (_bucketed(leads, "lead_id", buckets).groupBy(BUCKET)
            .cogroup(_bucketed(activities, "lead_id", buckets).groupBy(BUCKET))
            .applyInPandas(features, feature_schema(spec)))


def customer_rfm_frame(orders: DataFrame, as_of: pd.Timestamp, buckets: int) -> DataFrame:
    """Each customer's RFM in days as of ``as_of`` (the CLV model's input), by ``rfm_summary`` per bucket."""

    def rfm(bucket_orders: pd.DataFrame) -> pd.DataFrame:
        return rfm_in_days(rfm_summary(bucket_orders.drop(columns=BUCKET), as_of), "D")

    return _bucketed(orders, "customer_id", buckets).groupBy(BUCKET).applyInPandas(rfm, RFM_SCHEMA)


def row_chunks(frame: DataFrame, chunk_size: int) -> Iterator[pd.DataFrame]:
    """The rows of ``frame`` brought to the driver partition by partition, as pandas chunks of ``chunk_size``."""
    rows: list[tuple] = []
    for row in frame.toLocalIterator(prefetchPartitions=True):
        rows.append(tuple(row))
        if len(rows) == chunk_size:
            yield pd.DataFrame(rows, columns=frame.columns)
            rows = []
    if rows:
        yield pd.DataFrame(rows, columns=frame.columns)


def _only(frame: DataFrame, key: str, ids: list[str], total: int) -> DataFrame:
    """``frame`` restricted to ``ids`` (a resumed run's pending rows); unchanged when nothing is done yet."""
    if len(ids) == total:
        return frame
    wanted = frame.sparkSession.createDataFrame(pd.DataFrame({key: ids}), f"{key} string")
    return frame.join(wanted, key, "left_semi")


def _udf_scores(spark: SparkSession, identity: ModelIdentity, frame: DataFrame, inputs: list[str], keep: list[str],
                result_type: str) -> DataFrame:
    """``keep`` columns plus the model's outputs, the model applied through ``mlflow.pyfunc.spark_udf``."""
    import mlflow
    from pyspark.sql import functions as F

    udf = mlflow.pyfunc.spark_udf(spark, pinned_uri(identity), result_type=result_type, env_manager="local")
    return frame.select(*keep, udf(F.struct(*inputs)).alias("scored")).select(*keep, "scored.*")


def _last_time(engine: Engine, settings: SparkSettings, frame: DataFrame, table: Table, column: str
               ) -> datetime | None:
    """The latest ``column`` of the table the job reads: from the database, or from the Parquet export
    (``frame``, before any filter) when the job reads one."""
    if settings.parquet is None:
        return latest_time(engine, table.c[column])
    from pyspark.sql import functions as F

    value = frame.agg(F.max(column)).first()[0]
    return None if value is None else pd.Timestamp(value).to_pydatetime()


def score_open_leads_spark(
    engine: Engine,
    db_url: str,
    spark: SparkSession,
    settings: SparkSettings,
    model_uri: str = LEAD_MODEL_URI,
    clv_model_uri: str = CLV_MODEL_URI,
    as_of: datetime | str | None = None,
    chunk_size: int = 5_000,
    dry_run: bool = False,
    progress: Callable[[int], object] | None = None,
    backfill: bool = False,
) -> BatchResult:
    """The Spark engine of :func:`serving.batch.jobs.score_open_leads`: same rows in ``lead_scores`` and history,
    same lock and resumption."""
    from pyspark.sql import functions as F

    started = utc_now()
    identity, model = model_identity(model_uri)
    spec = scorer_of(model).spec
    if spec.id_column != "lead_id":
        raise InvalidInput("model: it was trained on a flat file, not on CRM leads; score files with "
                           "'leadval score leads --table FILE'")
    clv_params = optional_clv_parameters(clv_model_uri)
    create_schema(engine)
    leads = read_crm_table(spark, settings, db_url, schema.leads, LEAD_COLUMNS)
    all_activities = read_crm_table(spark, settings, db_url, schema.activities, ACTIVITY_INPUT_COLUMNS)

    def prepared(as_of: datetime) -> tuple[list[str], Callable[[list[str]], DataFrame], tuple[str, ...]]:
        """The open leads as of ``as_of``, how to score some of them, and the staleness warning."""
        at = pd.Timestamp(as_of)
        cutoff = timestamp_literal(at)
        open_leads = leads.where((F.col("created_at") <= cutoff)
                                 & (F.col("converted_at").isNull() | (F.col("converted_at") > cutoff)))
        open_leads = open_leads.select(*LEAD_INPUT_COLUMNS)
        ids = sorted(open_leads.select("lead_id").toPandas()["lead_id"].tolist())
        warnings = staleness_warnings("leads", as_of,
                                      _last_time(engine, settings, all_activities, schema.activities, "occurred_at"))
        activities = all_activities.where(F.col("occurred_at") <= cutoff)
        buckets = bucket_count(spark, settings, len(ids))

        def scored(todo: list[str]) -> DataFrame:
            features = lead_feature_frame(_only(open_leads, "lead_id", todo, len(ids)), activities, at, spec, buckets)
            inputs = [spec.id_column, *spec.categorical, *spec.numeric]
            return _udf_scores(spark, identity, features, inputs, ["lead_id", "source_channel"], LEAD_SCORES)

        return ids, scored, warnings

    def scored_chunks(scored: Callable[[list[str]], DataFrame]) -> Callable[[list[str]], Iterator[pd.DataFrame]]:
        def chunks(todo: list[str]) -> Iterator[pd.DataFrame]:
            if not todo:
                return
            for chunk in row_chunks(scored(todo), chunk_size):
                value = expected_values(chunk["probability"].tolist(), chunk["source_channel"].tolist(), clv_params)
                yield chunk.drop(columns="source_channel").assign(expected_value=value)
        return chunks

    if dry_run:
        at = given_as_of(as_of) or started
        ids, scored, warnings = prepared(at)
        return dry_result("leads", scored(ids).count() if ids else 0, len(ids), identity, at, started, warnings)
    with job_lock(engine, LEAD_JOB):
        plan = plan_run(engine, LEAD_JOB, identity, given_as_of(as_of), started)
        ids, scored, warnings = prepared(plan.as_of)
        run, written = write_scored(engine, LEAD_JOB, identity, plan.as_of, ids, scored_chunks(scored), progress,
                                    as_of_source=plan.source, backfill=backfill)
    return written_result("leads", run, written, len(ids), identity, plan, started, warnings)


def score_customers_spark(
    engine: Engine,
    db_url: str,
    spark: SparkSession,
    settings: SparkSettings,
    model_uri: str = CLV_MODEL_URI,
    as_of: datetime | str | None = None,
    chunk_size: int = 20_000,
    dry_run: bool = False,
    progress: Callable[[int], object] | None = None,
    backfill: bool = False,
) -> BatchResult:
    """The Spark engine of :func:`serving.batch.jobs.score_customers`: same rows in ``customer_scores`` and history,
    same lock and resumption."""
    from pyspark.sql import functions as F

    started = utc_now()
    identity, model = model_identity(model_uri)
    params = model.unwrap_python_model().params
    horizon = int(params.horizon_days)
    create_schema(engine)
    all_orders = read_crm_table(spark, settings, db_url, schema.orders, ["customer_id", "ordered_at", "amount"])
    with engine.connect() as conn:
        customers = conn.execute(select(func.count()).select_from(schema.customers)).scalar_one()

    def prepared(as_of: datetime) -> tuple[DataFrame, list[str], Callable[[list[str]], DataFrame], tuple[str, ...]]:
        """The customers' RFM as of ``as_of`` (cached: unpersist it), their ids, how to score some, the warnings."""
        at = pd.Timestamp(as_of)
        warnings = (staleness_warnings("customers", as_of,
                                       _last_time(engine, settings, all_orders, schema.orders, "ordered_at"))
                    + clv_model_warnings(identity, params))
        orders = all_orders.where(F.col("ordered_at") <= timestamp_literal(at))
        rfm = customer_rfm_frame(orders, at, bucket_count(spark, settings, customers)).cache()
        ids = sorted(rfm.select("customer_id").toPandas()["customer_id"].tolist())
        if not ids:
            rfm.unpersist()
            raise InvalidInput(f"orders: no orders on or before {at:%Y-%m-%d}; nothing to score")

        def scored(todo: list[str]) -> DataFrame:
            inputs = ["customer_id", "frequency", "recency_days", "age_days", "monetary_value"]
            return _udf_scores(spark, identity, _only(rfm, "customer_id", todo, len(ids)), inputs, ["customer_id"],
                               CUSTOMER_SCORES)

        return rfm, ids, scored, warnings

    def scored_chunks(scored: Callable[[list[str]], DataFrame]) -> Callable[[list[str]], Iterator[pd.DataFrame]]:
        def chunks(todo: list[str]) -> Iterator[pd.DataFrame]:
            if not todo:
                return
            for chunk in row_chunks(scored(todo), chunk_size):
                yield chunk.assign(horizon_days=horizon)
        return chunks

    if dry_run:
        at = given_as_of(as_of) or started
        rfm, ids, scored, warnings = prepared(at)
        try:
            return dry_result("customers", scored(ids).count(), len(ids), identity, at, started, warnings)
        finally:
            rfm.unpersist()
    with job_lock(engine, CUSTOMER_JOB):
        plan = plan_run(engine, CUSTOMER_JOB, identity, given_as_of(as_of), started)
        rfm, ids, scored, warnings = prepared(plan.as_of)
        try:
            run, written = write_scored(engine, CUSTOMER_JOB, identity, plan.as_of, ids, scored_chunks(scored),
                                        progress, as_of_source=plan.source, backfill=backfill)
        finally:
            rfm.unpersist()
    return written_result("customers", run, written, len(ids), identity, plan, started, warnings)
