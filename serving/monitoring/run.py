"""One monitoring run: gather every check of both champions and the KPI targets, store and log the results.

:func:`monitor` asks :func:`serving.monitoring.drift.drift_checks` for input and score drift of the lead champion,
:mod:`serving.monitoring.accuracy` for realized accuracy and :mod:`serving.monitoring.kpi` for the targets. It writes
them to ``monitoring_runs`` in one transaction, with an ``overall`` row per model and one of model ``all`` for the
run; the same as-of, champions and targets file give the same ``run_id``, and a rerun replaces its rows. Each call
is also one MLflow run in the :data:`EXPERIMENT_NAME` experiment: a metric per check value (``MODEL/CHECK``),
``exit_code``, tags ``status``, ``as_of``, ``monitoring_run_id`` and the champions' versions, and ``checks.json``.
Without an MLflow store the results go to the table only, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, delete

from features.crm import schema
from features.crm.store import create_schema, insert_frame
from serving.monitoring.accuracy import Champion, clv_accuracy, lead_accuracy
from serving.monitoring.checks import EXIT_CODES, CheckResult, overall
from serving.monitoring.kpi import kpi_checks
from training.registry import CLV_MODEL_NAME, LEAD_MODEL_NAME, ModelNotFound, champion_uri

EXPERIMENT_NAME = "monitoring"
RUN_MODEL = "all"
"""``model`` of the run's own overall row in ``monitoring_runs``."""
_METRIC_UNSAFE = re.compile(r"[^\w\-. :/]")


@dataclass(frozen=True)
class MonitoringRun:
    """What one monitoring run found: every check, the overall status and where the results went."""

    run_id: str
    as_of: datetime
    checked_at: datetime
    versions: dict[str, str | None]
    checks: tuple[CheckResult, ...]
    status: str
    mlflow_run_id: str | None
    warnings: tuple[str, ...]

    @property
    def exit_code(self) -> int:
        """The exit code a scheduler acts on: 0 ok, 3 warn, 4 alert."""
        return EXIT_CODES[self.status]


def champion_of(model_name: str) -> Champion:
    """The ``@champion`` of ``model_name`` with its horizon and recorded holdout ROC AUCs (version None without one)."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from training.registry import registered_identity

    try:
        name, version, run_id = registered_identity(champion_uri(model_name))
    except ModelNotFound:
        return Champion(model_name, None)
    try:
        horizon = mlflow.models.get_model_info(f"models:/{name}/{version}").metadata.get("horizon_days")
    except (MlflowException, OSError, AttributeError):
        horizon = None
    try:
        metrics = MlflowClient().get_run(run_id).data.metrics if run_id else {}
    except (MlflowException, OSError):
        metrics = {}
    return Champion(name, version, run_id, int(horizon) if horizon else None, metrics.get("roc_auc"),
                    metrics.get("roc_auc_new_leads"))


def monitoring_run_id(as_of: datetime, versions: dict[str, str | None], targets_path: Path | None, crm: str) -> str:
    """The same CRM (its URL without password), as-of, champion versions and targets file (by content) give the
    same id; another CRM checked against the same registry gets another."""
    targets = hashlib.sha256(targets_path.read_bytes()).hexdigest() if targets_path is not None else None
    work = {"as_of": as_of.isoformat(), "versions": versions, "targets": targets, "crm": crm}
    return "mon-" + hashlib.sha256(json.dumps(work, sort_keys=True).encode()).hexdigest()[:16]


def overall_rows(checks: list[CheckResult]) -> list[CheckResult]:
    """One ``overall`` check per model among ``checks``, then one for the whole run (model ``all``)."""
    models = list(dict.fromkeys(c.model for c in checks))
    rows = [CheckResult("overall", m, None, None, None, overall(mine := [c for c in checks if c.model == m]),
                        f"worst status of the {m} checks{_worst(mine)}") for m in models]
    return rows + [CheckResult("overall", RUN_MODEL, None, None, None, overall(checks),
                               f"worst status of all checks{_worst(checks)}")]


def _worst(checks: list[CheckResult]) -> str:
    """``: alert on A, B; warn on C`` for the checks that warn or alert (empty when none does)."""
    said = [f"{status} on {', '.join(c.check for c in checks if c.status == status)}" for status in ("alert", "warn")
            if any(c.status == status for c in checks)]
    return f": {'; '.join(said)}" if said else ""


def monitor(engine: Engine, tracking_uri: str, as_of: datetime, targets_path: Path | None = None,
            artifact_root: str | None = None) -> MonitoringRun:
    """Run every check as of ``as_of``, write ``monitoring_runs``, log an MLflow run, and return the results."""
    from serving.monitoring.drift import drift_checks
    from training.tracking import use_tracking

    create_schema(engine)
    use_tracking(tracking_uri, create=False)
    lead, clv = champion_of(LEAD_MODEL_NAME), champion_of(CLV_MODEL_NAME)
    checks = drift_checks(engine, champion_uri(lead.name), as_of) if lead.version is not None else []
    checks += lead_accuracy(engine, lead, as_of) + clv_accuracy(engine, clv, as_of)
    checks += kpi_checks(engine, as_of, targets_path)
    versions = {lead.name: lead.version, clv.name: clv.version}
    run_id = monitoring_run_id(as_of, versions, targets_path, engine.url.render_as_string(hide_password=True))
    checked_at = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    results = tuple(checks + overall_rows(checks))
    store_checks(engine, run_id, checked_at, as_of, versions, results)
    status = overall(checks)
    warnings = tuple(f"{c.model} {c.check}: {c.status}: {c.detail}" for c in checks if c.status in ("warn", "alert"))
    logged, note = log_to_mlflow(tracking_uri, artifact_root, run_id, as_of, versions, results, status)
    return MonitoringRun(run_id, as_of, checked_at, versions, results, status, logged,
                         warnings + ((note,) if note else ()))


def store_checks(engine: Engine, run_id: str, checked_at: datetime, as_of: datetime,
                 versions: dict[str, str | None], checks: tuple[CheckResult, ...]) -> None:
    """Replace the rows of ``run_id`` in ``monitoring_runs`` by ``checks``, in one transaction."""
    table = schema.monitoring_runs
    frame = pd.DataFrame([{**asdict(c), "run_id": run_id, "checked_at": checked_at, "as_of": as_of,
                           "model_version": versions.get(c.model)} for c in checks])
    with engine.begin() as conn:
        conn.execute(delete(table).where(table.c.run_id == run_id))
        insert_frame(conn, table, frame)


def metric_key(check: CheckResult) -> str:
    """The MLflow metric name of a check's value: ``MODEL/CHECK`` with characters MLflow refuses as ``_``."""
    return _METRIC_UNSAFE.sub("_", f"{check.model}/{check.check}")[:250]


def log_to_mlflow(tracking_uri: str, artifact_root: str | None, run_id: str, as_of: datetime,
                  versions: dict[str, str | None], checks: tuple[CheckResult, ...],
                  status: str) -> tuple[str | None, str | None]:
    """One run in the monitoring experiment; returns its id, or None and a warning without a store."""
    import mlflow

    from features.settings import load_settings
    from training.registry import missing_store
    from training.tracking import use_experiment

    problem = missing_store(tracking_uri)
    if problem is not None:
        return None, f"not logged to MLflow: {problem}; the results are in monitoring_runs only"
    use_experiment(EXPERIMENT_NAME, artifact_root or load_settings().artifact_root)
    with mlflow.start_run(run_name=f"monitor {as_of:%Y-%m-%d %H:%M}") as run:
        mlflow.set_tags({"status": status, "as_of": as_of.isoformat(), "monitoring_run_id": run_id,
                         **{f"{name}_version": version or "none" for name, version in versions.items()}})
        values = {metric_key(c): float(c.value) for c in checks if c.value is not None and math.isfinite(c.value)}
        mlflow.log_metrics({**values, "exit_code": float(EXIT_CODES[status])})
        mlflow.log_dict({"as_of": as_of.isoformat(), "status": status, "checks": [asdict(c) for c in checks]},
                        "checks.json")
    return run.info.run_id, None

