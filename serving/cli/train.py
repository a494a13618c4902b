"""``leadval train leads`` and ``leadval train clv``: train, evaluate and register a model in MLflow.

Plain typer-annotated functions; :mod:`serving.cli.app` mounts them. Heavy imports happen inside the
functions so ``--help`` stays fast. The CLV fits (BG/NBD, MBG/NBD, Pareto/NBD, Gamma-Gamma) slow down badly
with more than one BLAS thread, so ``train clv`` sets ``OPENBLAS_NUM_THREADS=1`` (unless set) before numpy loads,
and the job itself limits BLAS to one thread with threadpoolctl while fitting.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from features.errors import InvalidInput
from features.settings import load_settings
from serving.cli.console import report, tell
from serving.cli.options import DAY_FORMATS, INSTANT_FORMATS, DbOption, JsonOption, PromoteOption, TrackingOption
from training.registry import LEAD_MODEL_NAME, Promote
from training.registry_store import check_store

if TYPE_CHECKING:
    from sqlalchemy import Engine


def existing_crm(db: str, tables: tuple[str, ...]) -> Engine:
    """The CRM at ``db`` to train on: one that does not exist is a one-line error saying how to create it, and no
    file or folder is created (training writes to MLflow, never to the CRM); one without ``tables`` too."""
    from features.crm.store import connect, missing_tables
    from features.crm.urls import safe_url

    engine = connect(db, create=False)
    absent = [name for name in tables if name in missing_tables(engine)]
    if absent:
        engine.dispose()
        raise InvalidInput(f"the CRM at {safe_url(db)} has no table(s) {', '.join(absent)}; create them with leadval "
                           "generate or leadval import")
    return engine


def train_leads(
    db: DbOption = None,
    as_of: Annotated[
        datetime | None,
        typer.Option("--as-of", formats=INSTANT_FORMATS,
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
    keep: Annotated[
        list[str] | None,
        typer.Option("--keep", help="File columns to train on even if the audit drops or flags them (suspected "
                                    "leakage, id-like, too many categories), comma-separated or repeated."),
    ] = None,
    tune: Annotated[
        float, typer.Option("--tune", min=0.0, metavar="SECONDS",
                            help="File: search the booster's parameters for this many seconds on the training split "
                                 "(cross-validated) before the final fit [default: 0, off].")
    ] = 0.0,
    promote: PromoteOption = Promote.auto,
    model_name: Annotated[
        str | None,
        typer.Option("--model-name", help=f"Registered model name [default: {LEAD_MODEL_NAME} for the CRM, "
                                          f"{LEAD_MODEL_NAME}-<file stem> for --table; a file's model is never "
                                          f"{LEAD_MODEL_NAME}, the CRM model the API and nightly jobs use]."),
    ] = None,
    tracking_uri: TrackingOption = None,
    as_json: JsonOption = False,
) -> None:
    """Train the lead-scoring model (LightGBM, calibrated, with reasons), evaluate it and register it.

    A --table file's columns are audited first: one-value, id-like and too-many-category columns are dropped,
    suspected leakage is named in a warning and left out unless --keep COL; --json lists features_used, dropped,
    kept, notes and warnings.
    """
    from features.crm.urls import safe_url
    from training.leads.data.splits import (
        CrmTrainingConfig,
        TableTrainingConfig,
        crm_splits,
        read_lead_table,
        table_splits,
    )
    from training.leads.job import train_and_register

    file_flags = {"--target": target, "--positive": positive, "--id-col": id_col, "--time-col": time_col,
                  "--drop": drop, "--keep": keep, "--tune": tune}
    settings = load_settings(db=db, tracking_uri=tracking_uri)
    check_store(settings.tracking_uri, create=True)  # before minutes of training, not after
    if table is not None:
        if db is not None or as_of is not None:
            raise InvalidInput("--table trains on a file: --db and --as-of do not apply")
        if target is None:
            raise InvalidInput("--table needs --target COL (the outcome column)")
        dropped = tuple(c.strip() for item in drop or [] for c in item.split(",") if c.strip())
        kept = tuple(c.strip() for item in keep or [] for c in item.split(",") if c.strip())
        config = TableTrainingConfig(str(table), target, positive, id_col, time_col, dropped, holdout, keep=kept,
                                     tune_seconds=tune)
        splits = table_splits(read_lead_table(table, id_column=id_col), config)
        where = table.name
        if splits.source["holdout"] == "random":
            print("note: random holdout (no --time-col, --holdout auto/random); if the file's rows are in time "
                  "order, --holdout latest gives the honest forward-looking figure", file=sys.stderr)
        for note in splits.audit.notes:
            tell(f"note: {note}")
        if tune:
            print(f"tuning: searching for {tune:g} s on the training split ...", file=sys.stderr)
    else:
        given = [flag for flag, value in file_flags.items() if value]
        if given:
            raise InvalidInput(f"{', '.join(given)} only apply with --table FILE")
        config = CrmTrainingConfig(as_of=as_of.isoformat() if as_of else None, horizon_days=horizon_days)
        splits = crm_splits(existing_crm(settings.db, ("leads", "activities")), config)
        where = safe_url(settings.db)
    said = splits.audit.warnings if splits.audit else ()
    for warning in said:
        tell(f"warning: {warning}")
    result = train_and_register(splits, config, settings.tracking_uri, settings.artifact_root, promote, model_name)
    for warning in result.warnings:
        if warning not in said:
            tell(f"warning: {warning}")
    metrics, baseline = result.metrics, result.baseline_metrics
    status = "now @champion" if result.champion else "not promoted"
    tuned = ""
    if result.tuning and result.tuning["trials"]:
        tuning = result.tuning
        tuned = (f"\nTuned in {tuning['seconds']:.0f} s ({tuning['trials']} candidates, {tuning['folds']}-fold CV on "
                 f"the training split): CV ROC AUC {tuning['cv_roc_auc']:.4f} against {tuning['start_cv_roc_auc']:.4f} "
                 "for the defaults")
    scoring = (f"\nScore files with: leadval score leads --table FILE --out FILE --model "
               f"models:/{result.model_name}@champion" if table is not None else "")
    summary = (
        f"Lead model {result.model_name} v{result.model_version} from {where}: {status} ({result.promotion_reason}).\n"
        f"Holdout of {int(metrics['rows']):,} rows (base rate {metrics['base_rate']:.2%}): ROC AUC "
        f"{metrics['roc_auc']:.3f} (baseline {baseline['roc_auc']:.3f}), PR AUC {metrics['pr_auc']:.3f} "
        f"(baseline {baseline['pr_auc']:.3f}), lift at top 10% {metrics['lift_top10']:.1f}x, "
        f"ECE {metrics['ece']:.4f}; {len(result.features_used)} features; MLflow run {result.run_id}{tuned}{scoring}"
    )
    report(result.summary(), summary, as_json)


def train_clv(
    db: DbOption = None,
    calibration_end: Annotated[
        datetime | None,
        typer.Option("--calibration-end", formats=DAY_FORMATS,
                     help="Last day of the calibration period [default: observation end minus a third of the "
                          "history, at most the horizon]."),
    ] = None,
    observation_end: Annotated[
        datetime | None,
        typer.Option("--observation-end", formats=DAY_FORMATS,
                     help="Last day of the holdout (orders after it are ignored) [default: the last order's day]."),
    ] = None,
    horizon_days: Annotated[int, typer.Option("--horizon-days", min=1, help="CLV horizon in days.")] = 365,
    discount_rate: Annotated[
        float, typer.Option("--discount-rate", min=0.0, help="Annual discount rate of the CLV (0.1 = 10%).")
    ] = 0.10,
    promote: PromoteOption = Promote.auto,
    tracking_uri: TrackingOption = None,
    transactions: Annotated[
        Path | None,
        typer.Option("--transactions", exists=True, dir_okay=False,
                     help="Train on a CSV/Parquet file of orders instead of the CRM."),
    ] = None,
    customer_col: Annotated[str | None, typer.Option("--customer-col", help="File column with the customer id.")] = None,
    date_col: Annotated[str | None, typer.Option("--date-col", help="File column with the order date.")] = None,
    amount_col: Annotated[
        str | None, typer.Option("--amount-col", help="File column with the order amount (without it: no CLV, "
                                                      "only purchases, P(alive) and segments).")
    ] = None,
    time_unit: Annotated[str, typer.Option("--time-unit", help="Model time unit: D (days) or W (weeks).")] = "D",
    model: Annotated[
        str, typer.Option("--model", help="Purchase model: auto (BG/NBD, MBG/NBD or Pareto/NBD, chosen on the "
                                          "holdout), bgnbd, mbgnbd or pnbd.")
    ] = "auto",
    model_name: Annotated[
        str | None,
        typer.Option("--model-name", help="Registered model name [default: clv for the CRM, clv-<file stem> for "
                                          "--transactions; a file's model is never clv, the CRM model the API and "
                                          "nightly jobs use]."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Train the customer lifetime value model (BG/NBD, MBG/NBD or Pareto/NBD + Gamma-Gamma), validate it on a
    holdout and register it.

    All three purchase models are fitted on the calibration period; --model auto keeps the one with the
    lowest holdout MAE (within 1%: the one whose total predicted holdout purchases come closest to the actual
    total; never a degenerate fit while another is not).
    Degenerate fits, Gamma-Gamma's doubts and segments that fall back to recency are warnings on stderr and
    under warnings in --json.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from training.clv.job import train_from_crm, train_from_file
    from training.clv.purchases import MODEL_LABELS

    time_unit = time_unit.upper()
    settings = load_settings(db=db, tracking_uri=tracking_uri)
    check_store(settings.tracking_uri, create=True)  # before the fits, not after
    if transactions is not None:
        missing = [flag for flag, value in (("--customer-col", customer_col), ("--date-col", date_col))
                   if value is None]
        if missing:
            raise InvalidInput(f"--transactions needs {', '.join(missing)}")
        if db is not None:
            raise InvalidInput("give either --db or --transactions, not both")
        result = train_from_file(transactions, customer_col, date_col, calibration_end and calibration_end.date(),
                                 observation_end and observation_end.date(),
                                 settings.tracking_uri, settings.artifact_root, amount_col, horizon_days,
                                 discount_rate, time_unit, promote, model_name=model_name, model=model.lower())
    else:
        extra = [flag for flag, value in (("--customer-col", customer_col), ("--date-col", date_col),
                                          ("--amount-col", amount_col)) if value is not None]
        if extra:
            raise InvalidInput(f"{', '.join(extra)} only apply with --transactions FILE")
        existing_crm(settings.db, ("customers", "orders")).dispose()
        result = train_from_crm(settings.db, settings.tracking_uri, settings.artifact_root,
                                calibration_end.date() if calibration_end else None,
                                observation_end.date() if observation_end else None,
                                horizon_days, discount_rate, time_unit, promote, model_name=model_name,
                                model=model.lower())
    out = result.as_dict()
    for warning in out["warnings"]:
        tell(f"warning: {warning}")
    holdout = out["holdout"]
    status = "champion" if result.promotion.champion else "not promoted"
    candidates = "; ".join(
        f"{c['label']} {c['holdout']['predicted_purchases']:,.0f} predicted, MAE {c['holdout']['mae']:.3f}"
        + (" (degenerate)" if c["degenerate"] else "") if c["converged"] else f"{c['label']} did not converge"
        for c in out["candidates"])
    summary = (
        f"CLV model {out['model_name']} v{out['model_version']} ({status}: {result.promotion.reason}); "
        f"{MODEL_LABELS[out['model']]} ({out['model_reason']}); "
        f"calibration to {out['calibration_end']}, holdout to {out['observation_end']}: "
        f"{holdout['actual_purchases']:,.0f} actual vs {holdout['predicted_purchases']:,.0f} predicted repeat "
        f"purchases, MAE {holdout['mae']:.3f} per customer ({candidates}); segments by "
        f"{'P(alive)' if out['segments_by'] == 'p_alive' else 'value and recency'}; run {out['run_id']}"
    )
    report(out, summary, as_json)
