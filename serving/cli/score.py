"""``leadval score leads`` and ``leadval score customers``: the nightly write-back jobs."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from serving.cli.console import progress_bar, report
from features.errors import InvalidInput
from features.settings import CLV_MODEL_URI, LEAD_MODEL_URI, load_settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from serving.batch.jobs import BatchResult
    from serving.batch.spark_source import SparkSettings


class BatchEngine(str, Enum):
    """Where a batch job computes: in this process, or on Spark."""

    pandas = "pandas"
    spark = "spark"


DbOption = Annotated[str | None, typer.Option("--db", help="CRM database URL [env LEADVAL_DB].")]
TrackingOption = Annotated[
    str | None, typer.Option("--tracking-uri", help="MLflow tracking/registry URI [env MLFLOW_TRACKING_URI].")
]
AsOfOption = Annotated[
    str | None, typer.Option("--as-of", help="Compute features as of this date/time (UTC) [default: now].")
]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Score everything but write nothing.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON object as the last line.")]
EngineOption = Annotated[
    BatchEngine,
    typer.Option("--engine", help="pandas: this process; spark: a Spark cluster (pip install 'leadval[spark]')."),
]
SparkMasterOption = Annotated[
    str | None, typer.Option("--spark-master", help="With --engine spark: the master [env LEADVAL_SPARK_MASTER; "
                                                    "default local[2]].")
]
SparkConfOption = Annotated[
    list[str] | None, typer.Option("--spark-conf", help="With --engine spark: a spark.key=value setting (repeatable).")
]
ParquetOption = Annotated[
    str | None, typer.Option("--parquet", help="With --engine spark: read the CRM tables from DIR/<table>.parquet "
                                                "instead of the database (scores are still written to --db).")
]
PartitionsOption = Annotated[
    int | None, typer.Option("--spark-partitions", min=1, help="With --engine spark: feature buckets and JDBC "
                                                                "read slices [default: buckets one per 20,000 "
                                                                "rows, at least the cores; slices twice the "
                                                                "cores].")
]


def _summary(result: BatchResult) -> str:
    verb = "Would score" if result.dry_run else "Scored"
    version = f" v{result.model_version}" if result.model_version else ""
    return (f"{verb} {result.scored:,} of {result.total:,} {result.job} as of {result.as_of:%Y-%m-%d %H:%M} "
            f"with {result.model_name}{version} in {result.seconds:.1f} s"
            + ("" if result.dry_run else f" (run {result.scoring_run_id})"))


def _emit(result: BatchResult, as_json: bool) -> None:
    fields = asdict(result) | {"run_id": result.scoring_run_id}
    report(fields, _summary(result), as_json)


def _on_spark(job: Callable[[SparkSession, SparkSettings], BatchResult], master: str | None,
              conf: Sequence[str] | None, parquet: str | None, partitions: int | None) -> BatchResult:
    """Run ``job`` in a Spark session built from the flags, stopping the session afterwards."""
    from serving.batch.spark_source import load_spark_settings, spark_session

    spark_settings = load_spark_settings(master, conf or (), parquet, partitions)
    spark = spark_session(spark_settings)
    try:
        return job(spark, spark_settings)
    finally:
        spark.stop()


def _pandas_only(engine: BatchEngine, **flags: object) -> None:
    """Spark flags given without ``--engine spark`` are a mistake worth naming."""
    given = [name for name, value in flags.items() if value]
    if engine is BatchEngine.pandas and given:
        raise InvalidInput(f"{', '.join(given)}: need --engine spark")


def _as_of(value: str | None) -> datetime | None:
    from features.lead_features import as_of_timestamp

    return None if value is None else as_of_timestamp(value).to_pydatetime()


def score_leads_command(
    db: DbOption = None,
    model: Annotated[str | None, typer.Option("--model", help=f"Model URI [default: {LEAD_MODEL_URI}].")] = None,
    clv_model: Annotated[
        str, typer.Option("--clv-model", help="CLV model for the value-weighted score (skipped if missing).")
    ] = CLV_MODEL_URI,
    as_of: AsOfOption = None,
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=1, help="Leads per transaction.")] = 5_000,
    dry_run: DryRunOption = False,
    table: Annotated[
        Path | None, typer.Option("--table", help="Score a flat CSV/Parquet file instead of the CRM.", exists=True)
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="With --table: where to write the scores.")] = None,
    engine: EngineOption = BatchEngine.pandas,
    spark_master: SparkMasterOption = None,
    spark_conf: SparkConfOption = None,
    parquet: ParquetOption = None,
    spark_partitions: PartitionsOption = None,
    tracking_uri: TrackingOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score every open lead into lead_scores (and lead_score_history), or a flat file with --table."""
    _pandas_only(engine, **{"--spark-master": spark_master, "--spark-conf": spark_conf, "--parquet": parquet,
                            "--spark-partitions": spark_partitions})
    if table is not None:
        from serving.cli.train_leads import score_leads_file

        if out is None:
            raise InvalidInput("--out: required with --table (where to write the scores)")
        if engine is BatchEngine.spark:
            raise InvalidInput("--table scores a file in this process; --engine spark reads the CRM")
        score_leads_file(table=table, out=out, model=model or LEAD_MODEL_URI, tracking_uri=tracking_uri,
                         as_json=as_json)
        return
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from features.crm.store import connect
    from serving.batch.jobs import score_open_leads
    from training.tracking import use_tracking

    settings = load_settings(db=db, tracking_uri=tracking_uri)
    use_tracking(settings.tracking_uri)
    crm = connect(settings.db)
    uri = model or LEAD_MODEL_URI
    with progress_bar(total=None, desc="scoring leads", unit="leads") as bar:
        if engine is BatchEngine.spark:
            from serving.batch.spark_jobs import score_open_leads_spark

            result = _on_spark(
                lambda spark, spark_settings: score_open_leads_spark(
                    crm, settings.db, spark, spark_settings, uri, clv_model, _as_of(as_of), chunk_size, dry_run,
                    progress=bar.update),
                spark_master, spark_conf, parquet, spark_partitions)
        else:
            result = score_open_leads(crm, uri, clv_model, as_of, chunk_size, dry_run, progress=bar.update)
    _emit(result, as_json)


def score_customers_command(
    db: DbOption = None,
    model: Annotated[str, typer.Option("--model", help="CLV model URI.")] = CLV_MODEL_URI,
    as_of: AsOfOption = None,
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=1, help="Customers per transaction.")] = 20_000,
    dry_run: DryRunOption = False,
    table: Annotated[
        Path | None, typer.Option("--table", exists=True, dir_okay=False,
                                  help="Score the customers of a CSV/Parquet orders file instead of the CRM.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="With --table: where to write the scores.")] = None,
    customer_col: Annotated[str, typer.Option("--customer-col", help="With --table: the customer id column.")]
    = "customer_id",
    date_col: Annotated[str, typer.Option("--date-col", help="With --table: the order date column.")] = "ordered_at",
    amount_col: Annotated[str, typer.Option("--amount-col", help="With --table: the order amount column.")] = "amount",
    engine: EngineOption = BatchEngine.pandas,
    spark_master: SparkMasterOption = None,
    spark_conf: SparkConfOption = None,
    parquet: ParquetOption = None,
    spark_partitions: PartitionsOption = None,
    tracking_uri: TrackingOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score every customer into customer_scores (and customer_score_history), or an orders file with --table.

    With --table the RFM is taken as of --as-of (default: the file's last order day); orders after it are an error.
    """
    _pandas_only(engine, **{"--spark-master": spark_master, "--spark-conf": spark_conf, "--parquet": parquet,
                            "--spark-partitions": spark_partitions})
    if table is not None:
        from serving.cli.train_clv import score_customers_file

        if out is None:
            raise InvalidInput("--out: required with --table (where to write the scores)")
        if engine is BatchEngine.spark or db is not None or dry_run:
            raise InvalidInput("--table scores a file in this process: --db, --dry-run and --engine spark do not apply")
        score_customers_file(table, out, model, _as_of(as_of), customer_col, date_col, amount_col, tracking_uri,
                             as_json)
        return
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from features.crm.store import connect
    from serving.batch.jobs import score_customers
    from training.tracking import use_tracking

    settings = load_settings(db=db, tracking_uri=tracking_uri)
    use_tracking(settings.tracking_uri)
    crm = connect(settings.db)
    with progress_bar(total=None, desc="scoring customers", unit="customers") as bar:
        if engine is BatchEngine.spark:
            from serving.batch.spark_jobs import score_customers_spark

            result = _on_spark(
                lambda spark, spark_settings: score_customers_spark(
                    crm, settings.db, spark, spark_settings, model, _as_of(as_of), chunk_size, dry_run,
                    progress=bar.update),
                spark_master, spark_conf, parquet, spark_partitions)
        else:
            result = score_customers(crm, model, as_of, chunk_size, dry_run, progress=bar.update)
    _emit(result, as_json)
