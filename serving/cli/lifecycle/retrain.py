"""``leadval retrain leads|clv``: retrain now, or with ``--if-needed`` only when monitoring says alert or the
champion is too old; the candidate becomes ``@champion`` only if better on the same most recent holdout.

A thin wrapper over :mod:`training.retraining`. Exit 0 whether or not it retrained, so a nightly schedule can
run it after ``leadval monitor`` whatever that exited with.
"""

from __future__ import annotations

from typing import Annotated

import typer

from features.settings import load_settings
from serving.cli.console import report, tell
from serving.cli.options import DbOption, JsonOption, TrackingOption
from training.registry_store import check_store

app = typer.Typer(rich_markup_mode=None, help="Retrain a model when needed, gated against its champion.",
                  no_args_is_help=True)

IfNeededOption = Annotated[
    bool, typer.Option("--if-needed", help="Retrain only when the latest monitoring result (table monitoring_runs) "
                                           "says alert or the champion is older than --max-age-days.")
]
MaxAgeOption = Annotated[
    float, typer.Option("--max-age-days", min=0.0, help="With --if-needed: retrain a champion trained more than "
                                                        "this many days ago.")
]


def run_retrain(target: str, db: str | None, if_needed: bool, max_age_days: float, tracking_uri: str | None,
                as_json: bool) -> None:
    """Decide, retrain if so, and report which and why (``retrained``, ``why``, ``promoted``, ``champion_version``)."""
    from serving.cli.train import existing_crm
    from training.retraining import MODELS, retrain, retraining_need
    from training.tracking import use_tracking

    settings = load_settings(db=db, tracking_uri=tracking_uri)
    check_store(settings.tracking_uri, create=True)
    tables = ("leads", "activities") if target == "leads" else ("customers", "orders")
    engine = existing_crm(settings.db, tables)
    try:
        use_tracking(settings.tracking_uri)
        need = retraining_need(engine, MODELS[target], max_age_days)
        if if_needed and not need.retrain:
            out = {"retrained": False, "why": need.why, "promoted": None, "model_name": MODELS[target],
                   "champion_version": need.champion_version, "champion_age_days": need.champion_age_days,
                   "monitoring": need.monitoring}
            report(out, f"{MODELS[target]}: not retrained: {need.why}.", as_json)
            return
        why = need.why if if_needed else f"asked to (without --if-needed); {need.why}"
        tell(f"retraining {MODELS[target]}: {why}")
        trained = retrain(target, engine, settings.db, settings.tracking_uri, settings.artifact_root, why)
    finally:
        engine.dispose()
    for warning in trained["warnings"]:
        tell(f"warning: {warning}")
    out = {"retrained": True, "why": why, "champion_age_days": need.champion_age_days, "monitoring": need.monitoring,
           **trained}
    verdict = "promoted to @champion" if trained["promoted"] else "not promoted"
    summary = (f"{trained['model_name']}: retrained ({why}); v{trained['new_version']} {verdict}: "
               f"{trained['promotion_reason']} (candidate and champion judged on the same most recent holdout); "
               f"@champion is v{trained['champion_version']}; run {trained['run_id']}")
    report(out, summary, as_json)


@app.command("leads")
def retrain_leads(db: DbOption = None, if_needed: IfNeededOption = False, max_age_days: MaxAgeOption = 30.0,
                  tracking_uri: TrackingOption = None, as_json: JsonOption = False) -> None:
    """Retrain the lead-scoring model on the CRM (as leadval train leads does) and promote it only if its holdout
    ROC AUC is at least the champion's on the same rows; the reason goes to MLflow as retrain_reason."""
    run_retrain("leads", db, if_needed, max_age_days, tracking_uri, as_json)


@app.command("clv")
def retrain_clv(db: DbOption = None, if_needed: IfNeededOption = False, max_age_days: MaxAgeOption = 30.0,
                tracking_uri: TrackingOption = None, as_json: JsonOption = False) -> None:
    """Retrain the CLV model on the CRM (as leadval train clv does) and promote it only if its holdout MAE is at
    most the champion's on the same customers; the reason goes to MLflow as retrain_reason."""
    run_retrain("clv", db, if_needed, max_age_days, tracking_uri, as_json)
