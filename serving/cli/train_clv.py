"""``leadval train clv``: train, validate and register the CLV model from the CRM or a transactions file.

BG/NBD and Gamma-Gamma fits slow down badly with more than one BLAS thread, so importing this module
sets ``OPENBLAS_NUM_THREADS=1`` (unless already set) for when it loads before numpy, and the job
itself limits BLAS to one thread with threadpoolctl while fitting, whatever was loaded first.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from datetime import datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated  # noqa: E402

import typer  # noqa: E402

from serving.cli.console import report  # noqa: E402
from features.errors import InvalidInput  # noqa: E402
from features.settings import load_settings  # noqa: E402

DATE_FORMATS = ["%Y-%m-%d"]


def train_clv(
    db: Annotated[
        str | None, typer.Option("--db", help="CRM database URL [env LEADVAL_DB; default sqlite:///data/crm.db].")
    ] = None,
    calibration_end: Annotated[
        datetime | None,
        typer.Option("--calibration-end", formats=DATE_FORMATS,
                     help="Last day of the calibration period [default: observation end minus a third of the "
                          "history, at most the horizon]."),
    ] = None,
    observation_end: Annotated[
        datetime | None,
        typer.Option("--observation-end", formats=DATE_FORMATS,
                     help="Last day of the holdout (orders after it are ignored) [default: the last order's day]."),
    ] = None,
    horizon_days: Annotated[int, typer.Option("--horizon-days", min=1, help="CLV horizon in days.")] = 365,
    discount_rate: Annotated[
        float, typer.Option("--discount-rate", min=0.0, help="Annual discount rate of the CLV (0.1 = 10%).")
    ] = 0.10,
    promote: Annotated[
        str, typer.Option("--promote", help="auto: become @champion if no worse on the holdout; always; never.")
    ] = "auto",
    tracking_uri: Annotated[
        str | None,
        typer.Option("--tracking-uri", help="MLflow tracking/registry URI [env MLFLOW_TRACKING_URI; default "
                                            "sqlite:///models/mlflow.db]."),
    ] = None,
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
    as_json: Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON object as the last line.")] = False,
) -> None:
    """Train the customer lifetime value model (BG/NBD + Gamma-Gamma), validate it on a holdout and register it."""
    from training.clv.job import train_from_crm, train_from_file

    if promote not in ("auto", "always", "never"):
        raise InvalidInput(f"--promote must be auto, always or never, not {promote!r}")
    time_unit = time_unit.upper()
    settings = load_settings(db=db, tracking_uri=tracking_uri)
    if transactions is not None:
        missing = [flag for flag, value in (("--customer-col", customer_col), ("--date-col", date_col),
                                            ("--calibration-end", calibration_end),
                                            ("--observation-end", observation_end)) if value is None]
        if missing:
            raise InvalidInput(f"--transactions needs {', '.join(missing)}")
        if db is not None:
            raise InvalidInput("give either --db or --transactions, not both")
        result = train_from_file(transactions, customer_col, date_col, calibration_end.date(), observation_end.date(),
                                 settings.tracking_uri, settings.artifact_root, amount_col, horizon_days,
                                 discount_rate, time_unit, promote)
    else:
        extra = [flag for flag, value in (("--customer-col", customer_col), ("--date-col", date_col),
                                          ("--amount-col", amount_col)) if value is not None]
        if extra:
            raise InvalidInput(f"{', '.join(extra)} only apply with --transactions FILE")
        result = train_from_crm(settings.db, settings.tracking_uri, settings.artifact_root,
                                calibration_end.date() if calibration_end else None,
                                observation_end.date() if observation_end else None,
                                horizon_days, discount_rate, time_unit, promote)
    out = result.as_dict()
    holdout = out["holdout"]
    status = "champion" if result.promotion.champion else "not promoted"
    summary = (
        f"CLV model {out['model_name']} v{out['model_version']} ({status}: {result.promotion.reason}); "
        f"calibration to {out['calibration_end']}, holdout to {out['observation_end']}: "
        f"{holdout['actual_purchases']:,.0f} actual vs {holdout['predicted_purchases']:,.0f} predicted repeat "
        f"purchases, MAE {holdout['mae']:.3f} per customer; run {out['run_id']}"
    )
    report(out, summary, as_json)


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

    from features.rfm import rfm_summary
    from features.crm.transactions import read_transactions
    from training.clv.predict import predict_clv, rfm_in_days
    from training.tracking import load_registered, use_tracking

    if out.suffix.lower() not in (".csv", ".parquet"):
        raise InvalidInput(f"--out {out}: expected a .csv or .parquet file name")
    settings = load_settings(tracking_uri=tracking_uri)
    use_tracking(settings.tracking_uri)
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
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".parquet":
        scores.to_parquet(out, index=False)
    else:
        scores.to_csv(out, index=False)
    segments = scores["segment"].value_counts().to_dict()
    summary = (f"Scored {len(scores):,} customers from {table.name} as of {end:%Y-%m-%d} with {model} into {out} "
               f"(total predicted value {scores['clv'].sum():,.0f}; "
               + ", ".join(f"{name} {count:,}" for name, count in segments.items()) + ")")
    report({"scored": len(scores), "model_uri": model, "as_of": f"{end:%Y-%m-%d}", "out": str(out),
            "segments": segments, "total_clv": float(scores["clv"].sum())}, summary, as_json)
