"""``leadval score leads`` and ``leadval score customers``: the nightly write-back jobs."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from features.console import progress_bar, report
from features.crm_store import connect
from features.errors import InvalidInput
from features.settings import CLV_MODEL_URI, LEAD_MODEL_URI, load_settings

if TYPE_CHECKING:
    from serving.batch import BatchResult

DbOption = Annotated[str | None, typer.Option("--db", help="CRM database URL [env LEADVAL_DB].")]
TrackingOption = Annotated[
    str | None, typer.Option("--tracking-uri", help="MLflow tracking/registry URI [env MLFLOW_TRACKING_URI].")
]
AsOfOption = Annotated[
    str | None, typer.Option("--as-of", help="Compute features as of this date/time (UTC) [default: now].")
]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Score everything but write nothing.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON object as the last line.")]


def _summary(result: BatchResult) -> str:
    verb = "Would score" if result.dry_run else "Scored"
    version = f" v{result.model_version}" if result.model_version else ""
    return (f"{verb} {result.scored:,} of {result.total:,} {result.job} as of {result.as_of:%Y-%m-%d %H:%M} "
            f"with {result.model_name}{version} in {result.seconds:.1f} s"
            + ("" if result.dry_run else f" (run {result.scoring_run_id})"))


def _emit(result: BatchResult, as_json: bool) -> None:
    fields = asdict(result) | {"run_id": result.scoring_run_id}
    report(fields, _summary(result), as_json)


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
    tracking_uri: TrackingOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score every open lead into lead_scores (and lead_score_history), or a flat file with --table."""
    if table is not None:
        from training.leads_cli import score_leads_file

        if out is None:
            raise InvalidInput("--out: required with --table (where to write the scores)")
        score_leads_file(table=table, out=out, model=model, tracking_uri=tracking_uri, as_json=as_json)
        return
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from serving.batch import score_open_leads
    from training.tracking import use_tracking

    settings = load_settings(db=db, tracking_uri=tracking_uri)
    use_tracking(settings.tracking_uri)
    engine = connect(settings.db)
    with progress_bar(total=None, desc="scoring leads", unit="leads") as bar:
        result = score_open_leads(engine, model or LEAD_MODEL_URI, clv_model, as_of, chunk_size, dry_run,
                                  progress=bar.update)
    _emit(result, as_json)


def score_customers_command(
    db: DbOption = None,
    model: Annotated[str, typer.Option("--model", help="CLV model URI.")] = CLV_MODEL_URI,
    as_of: AsOfOption = None,
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=1, help="Customers per transaction.")] = 20_000,
    dry_run: DryRunOption = False,
    tracking_uri: TrackingOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score every customer into customer_scores (and customer_score_history)."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from serving.batch import score_customers
    from training.tracking import use_tracking

    settings = load_settings(db=db, tracking_uri=tracking_uri)
    use_tracking(settings.tracking_uri)
    engine = connect(settings.db)
    with progress_bar(total=None, desc="scoring customers", unit="customers") as bar:
        result = score_customers(engine, model, as_of, chunk_size, dry_run, progress=bar.update)
    _emit(result, as_json)
