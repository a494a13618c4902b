"""``leadval train leads`` and ``leadval score leads --table``: the lead-scoring commands.

Plain typer-annotated functions; ``serving.cli.app`` mounts them. Heavy imports happen inside the
functions so ``--help`` stays fast.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from serving.cli.console import report
from features.errors import InvalidInput
from features.settings import load_settings

DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]
TrackingOption = Annotated[
    str | None,
    typer.Option("--tracking-uri", help="MLflow tracking/registry URI [env MLFLOW_TRACKING_URI; default "
                                        "sqlite:///models/mlflow.db]."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON object as the last line.")]


def train_leads(
    db: Annotated[
        str | None, typer.Option("--db", help="CRM database URL [env LEADVAL_DB; default sqlite:///data/crm.db].")
    ] = None,
    as_of: Annotated[
        datetime | None,
        typer.Option("--as-of", formats=DATE_FORMATS,
                     help="Train on the CRM as it was at this instant (UTC; a date means its midnight) "
                          "[default: the CRM's latest event]."),
    ] = None,
    horizon_days: Annotated[
        int, typer.Option("--horizon-days", min=1, help="Predict conversion within this many days.")
    ] = 90,
    table: Annotated[
        Path | None,
        typer.Option("--table", exists=True, dir_okay=False,
                     help="Train on a flat CSV/Parquet file (one row per lead with an outcome) instead of the CRM."),
    ] = None,
    target: Annotated[str | None, typer.Option("--target", help="File column with the outcome.")] = None,
    positive: Annotated[
        str | None, typer.Option("--positive", help="Outcome value meaning converted [default: 1/yes/true].")
    ] = None,
    id_col: Annotated[
        str | None, typer.Option("--id-col", help="File column with the lead id [default: the row number].")
    ] = None,
    time_col: Annotated[
        str | None, typer.Option("--time-col", help="File column with the lead's date: the holdout is the latest "
                                                    "period.")
    ] = None,
    drop: Annotated[
        list[str] | None,
        typer.Option("--drop", help="File columns to leave out, comma-separated or repeated (e.g. ones that leak "
                                    "the outcome)."),
    ] = None,
    holdout: Annotated[
        str, typer.Option("--holdout", help="File holdout: auto (latest with --time-col, else random), latest "
                                            "(latest rows by --time-col or by file order) or random (stratified).")
    ] = "auto",
    promote: Annotated[
        str, typer.Option("--promote", help="auto: become @champion if at least as good on the same holdout; "
                                            "always; never.")
    ] = "auto",
    model_name: Annotated[str, typer.Option("--model-name", help="Registered model name.")] = "lead-scoring",
    tracking_uri: TrackingOption = None,
    as_json: JsonOption = False,
) -> None:
    """Train the lead-scoring model (LightGBM, calibrated, with reasons), evaluate it and register it."""
    from features.crm.store import connect, safe_url
    from training.leads.job import (
        CrmTrainingConfig,
        TableTrainingConfig,
        crm_splits,
        read_lead_table,
        table_splits,
        train_and_register,
    )

    if promote not in ("auto", "always", "never"):
        raise InvalidInput(f"--promote must be auto, always or never, not {promote!r}")
    file_flags = {"--target": target, "--positive": positive, "--id-col": id_col, "--time-col": time_col,
                  "--drop": drop}
    settings = load_settings(db=db, tracking_uri=tracking_uri)
    if table is not None:
        if db is not None or as_of is not None:
            raise InvalidInput("--table trains on a file: --db and --as-of do not apply")
        if target is None:
            raise InvalidInput("--table needs --target COL (the outcome column)")
        dropped = tuple(c.strip() for item in drop or [] for c in item.split(",") if c.strip())
        config = TableTrainingConfig(str(table), target, positive, id_col, time_col, dropped, holdout)
        splits = table_splits(read_lead_table(table, id_column=id_col), config)
        where = table.name
        if splits.source["holdout"] == "random":
            print("note: random holdout (no --time-col, --holdout auto/random); if the file's rows are in time "
                  "order, --holdout latest gives the honest forward-looking figure", file=sys.stderr)
    else:
        given = [flag for flag, value in file_flags.items() if value]
        if given:
            raise InvalidInput(f"{', '.join(given)} only apply with --table FILE")
        config = CrmTrainingConfig(as_of=as_of.isoformat() if as_of else None, horizon_days=horizon_days)
        splits = crm_splits(connect(settings.db), config)
        where = safe_url(settings.db)
    result = train_and_register(splits, config, settings.tracking_uri, settings.artifact_root, promote, model_name)
    metrics, baseline = result.metrics, result.baseline_metrics
    status = "now @champion" if result.champion else "not promoted"
    summary = (
        f"Lead model {result.model_name} v{result.model_version} from {where}: {status} ({result.promotion_reason}).\n"
        f"Holdout of {int(metrics['rows']):,} rows (base rate {metrics['base_rate']:.2%}): ROC AUC "
        f"{metrics['roc_auc']:.3f} (baseline {baseline['roc_auc']:.3f}), PR AUC {metrics['pr_auc']:.3f} "
        f"(baseline {baseline['pr_auc']:.3f}), lift at top 10% {metrics['lift_top10']:.1f}x, "
        f"ECE {metrics['ece']:.4f}; MLflow run {result.run_id}"
    )
    report(result.summary(), summary, as_json)


def score_leads_file(
    table: Annotated[Path, typer.Option("--table", exists=True, dir_okay=False, help="CSV/Parquet file of leads.")],
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="Output file (.csv or .parquet).")],
    model: Annotated[
        str, typer.Option("--model", help="Model URI [default: models:/lead-scoring@champion].")
    ] = "models:/lead-scoring@champion",
    reasons: Annotated[
        bool, typer.Option("--reasons/--no-reasons", help="Include reason codes (much slower on big files).")
    ] = True,
    tracking_uri: TrackingOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score a flat file of leads: writes the id column, score, probability, band and reasons (JSON)."""
    from training.leads.pyfunc import scorer_of
    from training.leads.job import read_lead_table
    from training.tracking import load_registered, use_tracking

    if out.suffix.lower() not in (".csv", ".parquet"):
        raise InvalidInput(f"--out {out}: expected a .csv or .parquet file name")
    settings = load_settings(tracking_uri=tracking_uri)
    use_tracking(settings.tracking_uri)
    scorer = scorer_of(load_registered(model))
    scores = scorer.predict(read_lead_table(table, scorer.spec), reasons=reasons)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".parquet":
        scores.to_parquet(out, index=False)
    else:
        scores.to_csv(out, index=False)
    bands = scores["band"].value_counts().reindex(["A", "B", "C", "D"], fill_value=0)
    summary = (f"Scored {len(scores):,} leads from {table.name} with {model} into {out} "
               f"(bands A {bands['A']:,}, B {bands['B']:,}, C {bands['C']:,}, D {bands['D']:,})")
    report({"scored": len(scores), "model_uri": model, "out": str(out), "bands": bands.to_dict()}, summary, as_json)
