"""``leadval backtest leads``: how the lead model's scores and bands did on the leads open at past dates.

A thin wrapper over :mod:`training.leads.backtest`: flags checked here, the CRM read once, the champion's recipe
(or the champion) from MLflow, the results stored in ``lead_backtests`` and ``lead_backtest_bands`` for the KPI
report. Nothing is registered or logged in MLflow.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from features.errors import InvalidInput
from features.settings import load_settings
from serving.cli.console import progress_bar, report, tell
from serving.cli.options import INSTANT_FORMATS, DbOption, JsonOption, TrackingOption

if TYPE_CHECKING:
    import pandas as pd

    from training.leads.backtest import Backtest

MODEL_WORDS = {"retrain": "retrained at each date by the champion's recipe on the data before it",
               "current": "the current champion at every date (optimistic)"}


def backtest_leads(
    db: DbOption = None,
    from_: Annotated[
        datetime | None,
        typer.Option("--from", formats=INSTANT_FORMATS,
                     help="First as-of date (UTC; a date means its midnight) [default: the 6 latest dates].")
    ] = None,
    to: Annotated[
        datetime | None,
        typer.Option("--to", formats=INSTANT_FORMATS,
                     help="Last as-of date [default: the latest midnight whose horizon has fully passed].")
    ] = None,
    every: Annotated[str, typer.Option("--every", help="Days between as-of dates, counted back from --to: 30d, "
                                                       "or weeks: 4w.")] = "30d",
    model: Annotated[str, typer.Option("--model", help="retrain: at each date a model trained by the champion's "
                                                       "recipe on the data before it (honest); current: the "
                                                       "champion itself (optimistic).")] = "retrain",
    tracking_uri: TrackingOption = None,
    as_json: JsonOption = False,
) -> None:
    """Backtest the lead model: score the leads open at past dates and compare with what they did."""
    from features.crm.store import connect
    from features.crm.urls import safe_url
    from features.lead_history import crm_period, load_crm_frames
    from training.leads.backtest import (
        MODELS,
        backtest_as_of_dates,
        champion_recipe,
        parse_every,
        run_backtest,
        store_backtest,
    )
    from training.tracking import use_tracking

    started = time.perf_counter()
    if model not in MODELS:
        raise InvalidInput(f"--model {model!r}: expected {' or '.join(MODELS)}")
    every_days = parse_every(every)
    first, last = _timestamp(from_), _timestamp(to)
    settings = load_settings(db=db, tracking_uri=tracking_uri)
    engine = connect(settings.db, create=False)
    start, end = crm_period(engine)
    use_tracking(settings.tracking_uri, create=False)
    recipe, champion = champion_recipe(load_model=model == "current")
    as_ofs = backtest_as_of_dates(start, end, recipe.config.horizon_days, first, last, every_days)
    crm = load_crm_frames(engine)
    with progress_bar(total=len(as_ofs), desc=f"backtest ({model})", unit="dates") as bar:
        result = run_backtest(crm.leads, crm.activities, start, as_ofs, recipe, model, champion, every_days,
                              progress=bar.update)
    written = store_backtest(engine, result)
    engine.dispose()
    result = replace(result, seconds=time.perf_counter() - started)
    for warning in result.warnings:
        tell(f"warning: {warning}")
    out = {**result.summary(), "db": safe_url(settings.db), "rows_written": written}
    report(out, backtest_text(result), as_json)


def _timestamp(value: datetime | None) -> pd.Timestamp | None:
    import pandas as pd

    return None if value is None else pd.Timestamp(value)


def _percent(value: float | None) -> str:
    import math

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.1f}%" if value >= 0.01 else f"{100 * value:.2f}%"


def _number(value: float | None, pattern: str = "{:.3f}") -> str:
    import math

    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)


def backtest_text(result: Backtest) -> str:
    """The backtest for people: what was done, per as-of date, per band pooled, and per band and date."""
    import pandas as pd

    metrics, bands, pooled = result.metrics, result.bands, result.pooled
    dates = pd.to_datetime(metrics["as_of"])
    recipe = result.recipe
    champion = f"v{recipe.model_version}" if recipe.model_version else "(none registered)"
    lines = [
        f"Backtest {result.backtest_id}: {len(metrics)} as-of date(s) {dates.min():%Y-%m-%d} to "
        f"{dates.max():%Y-%m-%d}, every {result.every_days} days; conversions within {result.horizon_days} days.",
        f"Model: {MODEL_WORDS[result.model]}; champion {champion}; recipe from {recipe.source}. Nothing "
        f"registered; took {result.seconds:.1f} s.",
        "",
        f"{'as of':<10}  {'leads':>6}  {'conv':>5}  {'base':>6}  {'mean p':>6}  {'ROC AUC':>7}  {'PR AUC':>6}  "
        f"{'lift@10%':>8}  trained to",
    ]
    for row in metrics.to_dict("records"):
        trained = "-" if pd.isna(row["trained_to"]) else f"{pd.Timestamp(row['trained_to']):%Y-%m-%d}"
        lines.append(f"{pd.Timestamp(row['as_of']):%Y-%m-%d}  {row['leads']:>6,}  {row['conversions']:>5,}  "
                     f"{_percent(row['base_rate']):>6}  {_percent(row['mean_probability']):>6}  "
                     f"{_number(row['roc_auc']):>7}  {_number(row['pr_auc']):>6}  "
                     f"{_number(row['lift_top10'], '{:.1f}x'):>8}  {trained}")
    lines += ["", f"Per band, pooled over the {len(metrics)} dates (predicted: mean probability; actual: share "
                  f"converted within {result.horizon_days} days):",
              f"{'band':<4}  {'leads':>6}  {'conv':>5}  {'predicted':>9}  {'actual':>6}  actual/predicted"]
    for row in pooled.to_dict("records"):
        ratio = (row["actual_rate"] / row["predicted_rate"] if row["leads"] and row["predicted_rate"] else None)
        lines.append(f"{row['band']:<4}  {row['leads']:>6,}  {row['conversions']:>5,}  "
                     f"{_percent(row['predicted_rate']):>9}  {_percent(row['actual_rate']):>6}  "
                     f"{_number(ratio, '{:.2f}')}")
    lines += ["", "Per band and date (leads, predicted / actual):",
              f"{'as of':<10}  " + "  ".join(f"{'band ' + b:<21}" for b in bands["band"].unique())]
    for as_of, group in bands.groupby("as_of", sort=True):
        cells = [f"{r['leads']:>5,} {_percent(r['predicted_rate']):>6} / {_percent(r['actual_rate']):<6}"
                 for r in group.to_dict("records")]
        lines.append(f"{pd.Timestamp(as_of):%Y-%m-%d}  " + "  ".join(cells))
    lines.append(f"\nStored as {result.backtest_id} in lead_backtests and lead_backtest_bands; the KPI report "
                 "shows the latest backtest.")
    return "\n".join(lines)
