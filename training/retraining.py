"""Retraining: whether a champion needs it (monitoring says alert, or it is too old), and retraining through the
same code paths as ``leadval train`` with the reason recorded.

The latest monitoring result of a model is the newest ``check = 'overall'`` row of the CRM's ``monitoring_runs``
table (written by ``leadval monitor``); an absent table or no row for the model is "no monitoring yet", which
does not ask for retraining. The candidate is gated against the champion on the same, most recent holdout by
:func:`training.registry.register_and_gate`. A lead candidate is also compared with the champion on the holdout's
new leads (younger than the horizon), where a change in what makes leads convert shows first: the gate stays on
the whole holdout, but a candidate no better there is said in a warning, with why (:func:`new_leads_comparison`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from features.errors import InvalidInput
from training.registry import CLV_MODEL_NAME, LEAD_MODEL_NAME, TAG_LIMIT, champion_version

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from training.leads.job import LeadTrainingResult

MODELS = {"leads": LEAD_MODEL_NAME, "clv": CLV_MODEL_NAME}
"""``leadval retrain`` target -> registered model name."""
REASON_TAG = "retrain_reason"
NEW_LEADS_GAIN = 0.01
"""A lead candidate ranking the holdout's new leads less than this much better (ROC AUC) than the champion is
warned about."""


def latest_monitoring(engine: Engine, model_name: str) -> dict[str, Any] | None:
    """The newest overall monitoring row of ``model_name`` (run_id, checked_at, as_of, model_version, status, detail),
    or None when the CRM has no ``monitoring_runs`` table (made before it existed) or no row for the model."""
    from sqlalchemy import select

    from features.crm.schema import monitoring_runs as table
    from features.crm.store import missing_tables

    if table.name in missing_tables(engine):
        return None
    query = (select(table.c.run_id, table.c.checked_at, table.c.as_of, table.c.model_version, table.c.status,
                    table.c.detail)
             .where(table.c.model == model_name, table.c.check == "overall")
             .order_by(table.c.checked_at.desc()).limit(1))
    with engine.connect() as connection:
        row = connection.execute(query).mappings().first()
    return None if row is None else dict(row)


@dataclass(frozen=True)
class Need:
    """Whether a model needs retraining, and why, with what the decision looked at."""

    retrain: bool
    why: str
    champion_version: str | None
    champion_age_days: float | None
    monitoring: dict[str, Any] | None


def champion_age_days(model_name: str, version: str, now: float | None = None) -> float:
    """Days since the champion ``version`` of ``model_name`` was registered (trained)."""
    from mlflow.tracking import MlflowClient

    created = MlflowClient().get_model_version(model_name, version).creation_timestamp / 1000
    return ((now if now is not None else time.time()) - created) / 86_400


def retraining_need(engine: Engine, model_name: str, max_age_days: float) -> Need:
    """Retrain when there is no champion, the latest monitoring result says alert, or the champion was trained more
    than ``max_age_days`` ago; an alert about a version that is no longer the champion does not count. MLflow must
    point at the registry already."""
    monitoring = latest_monitoring(engine, model_name)
    current = champion_version(model_name)
    if current is None:
        return Need(True, f"{model_name} has no @champion yet", None, None, monitoring)
    age = champion_age_days(model_name, current)
    if monitoring is not None:
        said = (f"the latest monitoring (run {monitoring['run_id']} checked at {monitoring['checked_at']}) says "
                f"{monitoring['status']}")
    else:
        said = "no monitoring yet"
    checked = monitoring.get("model_version") if monitoring is not None else None
    if monitoring is not None and monitoring["status"] == "alert" and checked not in (None, "", current):
        said = f"{said}, but for v{checked}, no longer the champion"
    elif monitoring is not None and monitoring["status"] == "alert":
        detail = f": {monitoring['detail']}" if monitoring.get("detail") else ""
        return Need(True, f"{said} for {model_name}{detail}", current, age, monitoring)
    if age > max_age_days:
        return Need(True, f"champion v{current} was trained {age:.1f} days ago, more than --max-age-days "
                          f"{max_age_days:g} ({said})", current, age, monitoring)
    return Need(False, f"champion v{current} was trained {age:.1f} days ago (limit {max_age_days:g}) and {said}",
                current, age, monitoring)


def retrain(target: str, engine: Engine, db_url: str, tracking_uri: str, artifact_root: str,
            reason: str) -> dict[str, Any]:
    """Retrain ``target`` (leads or clv) on the CRM with the defaults of ``leadval train``, gate the candidate against
    the champion on the same most recent holdout, and tag the new run and version with ``retrain_reason``."""
    from mlflow.tracking import MlflowClient

    if target == "leads":
        from training.leads.data.splits import CrmTrainingConfig, crm_splits
        from training.leads.job import GATE_METRIC, train_and_register

        config = CrmTrainingConfig()
        champion_before = champion_version(LEAD_MODEL_NAME)
        leads = train_and_register(crm_splits(engine, config), config, tracking_uri, artifact_root)
        name, version, run_id, promoted = leads.model_name, leads.model_version, leads.run_id, leads.champion
        gate, previous, warnings = leads.promotion_reason, leads.previous_champion, list(leads.warnings)
        metric, candidate = GATE_METRIC, leads.metrics[GATE_METRIC]
        extra = new_leads_comparison(leads, champion_before)
        said = extra.pop("warnings")
        warnings += said
    elif target == "clv":
        from training.clv.job import GATING_METRIC, train_from_crm

        clv = train_from_crm(db_url, tracking_uri, artifact_root)
        promotion = clv.promotion
        name, version, run_id, promoted = promotion.model_name, promotion.version, clv.run_id, promotion.champion
        gate, previous, warnings = promotion.reason, promotion.previous_champion, list(clv.warnings)
        metric, candidate, extra, said = GATING_METRIC, clv.holdout.mae, {}, []
    else:
        raise InvalidInput(f"retrain: expected one of {', '.join(MODELS)}, got {target!r}")
    client = MlflowClient()
    client.set_tag(run_id, REASON_TAG, reason[:TAG_LIMIT])
    client.set_model_version_tag(name, version, REASON_TAG, reason[:TAG_LIMIT])
    if extra.get("champion_new_leads_auc") is not None:
        client.log_metric(run_id, "champion_roc_auc_new_leads", extra["champion_new_leads_auc"])
    if said:
        client.set_tag(run_id, "retrain_warnings", json.dumps(said)[:TAG_LIMIT])
    return {"model_name": name, "new_version": version, "run_id": run_id, "promoted": promoted,
            "promotion_reason": gate, "previous_champion": previous, "champion_version": champion_version(name),
            "gate_metric": metric, "candidate_metric": candidate, **extra, "warnings": warnings,
            "retrained_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def new_leads_comparison(leads: LeadTrainingResult, champion: str | None) -> dict[str, Any]:
    """ROC AUC of the candidate and of the champion (version ``champion``, before the gate) on the holdout's leads
    younger than the horizon (``candidate_new_leads_auc``, ``champion_new_leads_auc``; None where unknown), and a
    warning when the candidate is not :data:`NEW_LEADS_GAIN` better there."""
    from features.lead_labels import LABEL_COLUMN
    from training.leads.evaluation import new_leads_metrics
    from training.leads.job import ChampionOnHoldout
    from training.leads.reference import AGE_COLUMN

    test, horizon = leads.splits.test, leads.splits.horizon_days
    if champion is None or AGE_COLUMN not in test.columns:
        return {"candidate_new_leads_auc": leads.metrics.get("roc_auc_new_leads"), "champion_new_leads_auc": None,
                "warnings": []}
    y, ages = test[LABEL_COLUMN].to_numpy(), test[AGE_COLUMN].to_numpy()
    scorer = ChampionOnHoldout(test).scorer(f"models:/{leads.model_name}/{champion}")
    theirs = (new_leads_metrics(y, scorer.probability(test), ages, horizon).get("roc_auc_new_leads")
              if scorer is not None else None)
    ours = leads.metrics.get("roc_auc_new_leads")
    out: dict[str, Any] = {"candidate_new_leads_auc": ours, "champion_new_leads_auc": theirs, "warnings": []}
    if ours is not None and theirs is not None and ours < theirs + NEW_LEADS_GAIN:
        train_end = leads.splits.source["snapshots"]["train"][-1][:10]
        out["warnings"].append(
            f"the candidate ranks the holdout's new leads (younger than {horizon} days) no better than champion "
            f"v{champion}: ROC AUC {ours:.3f} against {theirs:.3f}. Its latest training snapshot is {train_end}, "
            f"a validation window and a {horizon}-day horizon before the holdout: a change in what makes new leads "
            "convert reaches the training split only about three horizons after it happened; until then retraining "
            "recalibrates but cannot learn the new pattern")
    return out
