"""``leadval score leads`` and ``leadval score customers``: the nightly write-back jobs, and flat files.

With ``--db`` (the default) they score every open lead or customer of the CRM and write the scores back
(:mod:`serving.batch`); with ``--table FILE --out FILE`` they score a file in this process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from features.errors import InvalidInput
from features.settings import load_settings
from serving.cli.console import progress_bar, report, tell
from serving.cli.options import AsOfOption, DbOption, JsonOption, OutFileOption, TrackingOption
from training.registry import CLV_MODEL_URI, LEAD_MODEL_URI

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import SparkSession

    from serving.batch.jobs import BatchResult
    from serving.batch.spark_source import SparkSettings


class BatchEngine(str, Enum):
    """Where a batch job computes: in this process, or on Spark."""

    pandas = "pandas"
    spark = "spark"


OUT_SUFFIXES = (".csv", ".parquet")
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Score everything but write nothing.")]
BackfillOption = Annotated[
    bool, typer.Option("--backfill", help="Let scores as of an earlier --as-of replace newer ones in the score table "
                                          "(without it such a run writes history only).")
]
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
WorkersOption = Annotated[
    int | None, typer.Option("--workers", min=1, help="With --engine pandas: processes scoring chunks, this one "
                                                      "included (it alone writes them, in order); 1: this one alone "
                                                      "[env LEADVAL_WORKERS; default: the usable cores, at most 2].")
]


def _summary(result: BatchResult) -> str:
    """The summary line: what this invocation scored and wrote, and what an earlier attempt of the run had."""
    version = f" v{result.model_version}" if result.model_version else ""
    what = f"{result.job} as of {result.as_of:%Y-%m-%d %H:%M}"
    if result.already_finished_at is not None:
        return (f"{result.total:,} {what} already scored by run {result.scoring_run_id} at "
                f"{result.already_finished_at:%Y-%m-%d %H:%M:%S} UTC with {result.model_name}{version}; "
                "nothing written")
    verb = "Would score" if result.dry_run else "Scored"
    line = (f"{verb} {result.scored:,} of {result.total:,} {what} with {result.model_name}{version} "
            f"in {result.seconds:.1f} s")
    if result.dry_run:
        return line
    if result.already:
        return (line + f" (run {result.scoring_run_id}, resumed: {result.already:,} already written by an "
                       "earlier attempt)")
    return line + f" (run {result.scoring_run_id})"


def _emit(result: BatchResult, as_json: bool) -> None:
    """Warnings to stderr (and under ``warnings`` in the JSON), then the summary."""
    for warning in result.warnings:
        tell(f"warning: {warning}")
    fields = asdict(result) | {"run_id": result.scoring_run_id}
    report(fields, _summary(result), as_json)


def _spark_flags(engine: BatchEngine, master: str | None, conf: Sequence[str] | None, parquet: str | None,
                 partitions: int | None) -> SparkSettings | None:
    """The Spark settings from the flags with ``--engine spark`` (checked before anything runs), else None."""
    if engine is not BatchEngine.spark:
        return None
    from serving.batch.spark_source import load_spark_settings

    return load_spark_settings(master, conf or (), parquet, partitions)


def _on_spark(job: Callable[[SparkSession, SparkSettings], BatchResult], spark_settings: SparkSettings) -> BatchResult:
    """Run ``job`` in a Spark session built from ``spark_settings``, stopping the session afterwards."""
    from serving.batch.spark_source import spark_session

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
    backfill: BackfillOption = False,
    table: Annotated[
        Path | None, typer.Option("--table", help="Score a flat CSV/Parquet file instead of the CRM.", exists=True)
    ] = None,
    out: OutFileOption = None,
    engine: EngineOption = BatchEngine.pandas,
    spark_master: SparkMasterOption = None,
    spark_conf: SparkConfOption = None,
    parquet: ParquetOption = None,
    spark_partitions: PartitionsOption = None,
    workers: WorkersOption = None,
    tracking_uri: TrackingOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score every open lead into lead_scores (and lead_score_history), or a flat file with --table."""
    _pandas_only(engine, **{"--spark-master": spark_master, "--spark-conf": spark_conf, "--parquet": parquet,
                            "--spark-partitions": spark_partitions})
    if engine is BatchEngine.spark and workers is not None:
        raise InvalidInput("--workers: applies to --engine pandas (Spark's parallelism is --spark-master)")
    if table is not None:
        if out is None:
            raise InvalidInput("--out: required with --table (where to write the scores)")
        if engine is BatchEngine.spark or backfill or workers is not None:
            raise InvalidInput("--table scores a file in this process: --engine spark, --backfill and --workers do "
                               "not apply")
        score_leads_file(table=table, out=out, model=model or LEAD_MODEL_URI, tracking_uri=tracking_uri,
                         as_json=as_json)
        return
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from features.crm.store import connect
    from serving.batch.jobs import score_open_leads
    from training.tracking import use_tracking

    spark_settings = _spark_flags(engine, spark_master, spark_conf, parquet, spark_partitions)
    settings = load_settings(db=db, tracking_uri=tracking_uri)
    use_tracking(settings.tracking_uri, create=False)
    crm = connect(settings.db, create=False)
    uri = model or LEAD_MODEL_URI
    with progress_bar(total=None, desc="scoring leads", unit="leads") as bar:
        if engine is BatchEngine.spark:
            from serving.batch.spark_jobs import score_open_leads_spark

            result = _on_spark(
                lambda spark, spark_settings: score_open_leads_spark(
                    crm, settings.db, spark, spark_settings, uri, clv_model, _as_of(as_of), chunk_size, dry_run,
                    progress=bar.update, backfill=backfill),
                spark_settings)
        else:
            result = score_open_leads(crm, uri, clv_model, as_of, chunk_size, dry_run, progress=bar.update,
                                      backfill=backfill, workers=workers)
    _emit(result, as_json)


def score_customers_command(
    db: DbOption = None,
    model: Annotated[str, typer.Option("--model", help="CLV model URI.")] = CLV_MODEL_URI,
    as_of: AsOfOption = None,
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=1, help="Customers per transaction.")] = 20_000,
    dry_run: DryRunOption = False,
    backfill: BackfillOption = False,
    table: Annotated[
        Path | None, typer.Option("--table", exists=True, dir_okay=False,
                                  help="Score the customers of a CSV/Parquet orders file instead of the CRM.")
    ] = None,
    out: OutFileOption = None,
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
        if out is None:
            raise InvalidInput("--out: required with --table (where to write the scores)")
        if engine is BatchEngine.spark or db is not None or dry_run or backfill:
            raise InvalidInput("--table scores a file in this process: --db, --dry-run, --backfill and --engine spark "
                               "do not apply")
        score_customers_file(table, out, model, _as_of(as_of), customer_col, date_col, amount_col, tracking_uri,
                             as_json)
        return
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from features.crm.store import connect
    from serving.batch.jobs import score_customers
    from training.tracking import use_tracking

    spark_settings = _spark_flags(engine, spark_master, spark_conf, parquet, spark_partitions)
    settings = load_settings(db=db, tracking_uri=tracking_uri)
    use_tracking(settings.tracking_uri, create=False)
    crm = connect(settings.db, create=False)
    with progress_bar(total=None, desc="scoring customers", unit="customers") as bar:
        if engine is BatchEngine.spark:
            from serving.batch.spark_jobs import score_customers_spark

            result = _on_spark(
                lambda spark, spark_settings: score_customers_spark(
                    crm, settings.db, spark, spark_settings, model, _as_of(as_of), chunk_size, dry_run,
                    progress=bar.update, backfill=backfill),
                spark_settings)
        else:
            result = score_customers(crm, model, as_of, chunk_size, dry_run, progress=bar.update, backfill=backfill)
    _emit(result, as_json)


def _check_out(out: Path) -> None:
    if out.suffix.lower() not in OUT_SUFFIXES:
        raise InvalidInput(f"--out {out}: expected a .csv or .parquet file name")


def _write(scores: pd.DataFrame, out: Path) -> None:
    from features.csv_export import write_csv

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".parquet":
        scores.to_parquet(out, index=False)
    else:
        write_csv(scores, out)


def score_leads_file(table: Path, out: Path, model: str, tracking_uri: str | None = None,
                     as_json: bool = False) -> None:
    """Score a flat file of leads: writes the id column, score, probability, band and reasons (JSON)."""
    from training.leads.data.splits import read_lead_table
    from training.leads.pyfunc import scorer_of
    from training.registry import load_registered
    from training.tracking import use_tracking

    _check_out(out)
    settings = load_settings(tracking_uri=tracking_uri)
    use_tracking(settings.tracking_uri, create=False)
    scorer = scorer_of(load_registered(model))
    scores = scorer.predict(read_lead_table(table, scorer.spec), reasons=True)
    _write(scores, out)
    bands = scores["band"].value_counts().reindex(["A", "B", "C", "D"], fill_value=0)
    summary = (f"Scored {len(scores):,} leads from {table.name} with {model} into {out} "
               f"(bands A {bands['A']:,}, B {bands['B']:,}, C {bands['C']:,}, D {bands['D']:,})")
    report({"scored": len(scores), "model_uri": model, "out": str(out), "bands": bands.to_dict()}, summary, as_json)


def score_customers_file(
    table: Path,
    out: Path,
    model: str,
    as_of: datetime | None = None,
    customer_col: str = "customer_id",
    date_col: str = "ordered_at",
    amount_col: str | None = "amount",
    tracking_uri: str | None = None,
    as_json: bool = False,
) -> None:
    """Score the customers of an orders file (CSV/Parquet) as of ``as_of`` (default: the last order).

    As in the CRM job, ``as_of`` is an instant: a bare date means its midnight, so that day's orders wait
    for the next run; orders on later days are an error (a wrong date or a wrong file).
    """
    import pandas as pd

    from features.crm.transactions import read_transactions
    from features.rfm import rfm_summary
    from training.clv.predict import predict_clv, rfm_in_days
    from training.registry import load_registered
    from training.tracking import use_tracking

    _check_out(out)
    settings = load_settings(tracking_uri=tracking_uri)
    use_tracking(settings.tracking_uri, create=False)
    python_model = load_registered(model).unwrap_python_model()
    if not hasattr(python_model, "params"):
        raise InvalidInput(f"--model {model}: not a CLV model (expected one trained by 'leadval train clv')")
    params = python_model.params
    orders = read_transactions(table, customer_col, date_col, amount_col, observation_end=as_of)
    if orders.empty:
        raise InvalidInput(f"{table}: no orders in it; nothing to score")
    end = pd.Timestamp(as_of) if as_of is not None else orders["ordered_at"].max()
    orders = orders[orders["ordered_at"] <= end]
    if orders.empty:
        raise InvalidInput(f"{table}: no orders on or before {end}; nothing to score")
    scores = predict_clv(params, rfm_in_days(rfm_summary(orders, end), "D"))
    scores = scores.assign(horizon_days=int(params.horizon_days))
    _write(scores, out)
    segments = scores["segment"].value_counts().to_dict()
    summary = (f"Scored {len(scores):,} customers from {table.name} as of {end:%Y-%m-%d} with {model} into {out} "
               f"(total predicted value {scores['clv'].sum():,.0f}; "
               + ", ".join(f"{name} {count:,}" for name, count in segments.items()) + ")")
    report({"scored": len(scores), "model_uri": model, "as_of": f"{end:%Y-%m-%d}", "out": str(out),
            "segments": segments, "total_clv": float(scores["clv"].sum())}, summary, as_json)
