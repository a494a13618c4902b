"""``leadval monitor``: check the champions and the KPI targets, store the results, and exit 0 ok, 3 warn, 4 alert.

A thin wrapper over :func:`serving.monitoring.run.monitor`: a table of the checks on stdout (the per-feature input
checks that are ok summed up in one line unless ``--all``: a model has ~130 of them), each warn or alert in words
on stderr, ``--json`` with every check, and the exit code of :data:`serving.monitoring.checks.EXIT_CODES`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from features.errors import InvalidInput
from features.settings import load_settings
from serving.cli.console import printable, tell
from serving.cli.console import report as print_result
from serving.cli.options import AsOfOption, DbOption, JsonOption, TrackingOption

if TYPE_CHECKING:
    from serving.monitoring.run import MonitoringRun

NEEDED_TABLES = ("leads", "activities", "customers", "orders")
FEATURE_CHECKS = ("input_drift:", "new_categories:", "missing_rate:")
"""Per-feature checks, listed in the table only when not ok (or with --all)."""


def monitor(
    db: DbOption = None,
    as_of: AsOfOption = None,
    targets: Annotated[Path | None, typer.Option("--targets", help="SMART targets file (TOML), e.g. "
                                                 "targets.example.toml.", exists=True, dir_okay=False)] = None,
    tracking_uri: TrackingOption = None,
    every_check: Annotated[bool, typer.Option("--all", help="List every per-feature input check in the table, "
                                                            "not only those that are not ok.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Check drift, realized accuracy and KPI targets; exit 0 when all are ok, 3 on warn, 4 on alert."""
    from dataclasses import asdict

    from features.crm.store import connect, missing_tables
    from features.crm.urls import safe_url
    from features.lead_features import as_of_timestamp
    from serving.batch.writeback import utc_now
    from serving.monitoring.run import monitor as run_monitor

    settings = load_settings(db=db, tracking_uri=tracking_uri)
    engine = connect(settings.db, create=False)
    absent = [name for name in NEEDED_TABLES if name in missing_tables(engine)]
    if absent:
        raise InvalidInput(f"the CRM at {safe_url(settings.db)} has no table(s) {', '.join(absent)}; run "
                           "`leadval generate` or `leadval import` first")
    when = utc_now() if as_of is None else as_of_timestamp(as_of).to_pydatetime()
    run = run_monitor(engine, settings.tracking_uri, when, targets, settings.artifact_root)
    for warning in run.warnings:
        tell(f"warning: {warning}")
    result = {"status": run.status, "as_of": run.as_of, "run_id": run.run_id, "mlflow_run_id": run.mlflow_run_id,
              "versions": run.versions, "checks": [asdict(c) for c in run.checks], "warnings": list(run.warnings)}
    print_result(result, _table(run, every_check), as_json)
    if run.exit_code:
        sys.exit(run.exit_code)  # not typer.Exit: main() runs typer with standalone_mode=False, which drops its code


def _number(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


def _table(run: MonitoringRun, every_check: bool = False) -> str:
    """The checks as a table for people, with the run's status and as-of; per-feature input checks that are ok are
    counted in one line unless ``every_check``."""
    quiet = [] if every_check else [c for c in run.checks if c.status == "ok" and c.check.startswith(FEATURE_CHECKS)]
    shown = [c for c in run.checks if c not in quiet]
    width = max([len(c.check) for c in shown] + [5])
    lines = [f"{'check':<{width}}  {'model':<12} {'value':>7} {'warn':>7} {'alert':>7}  {'status':<7}  detail"]
    for c in shown:
        lines.append(f"{printable(c.check):<{width}}  {c.model:<12} {_number(c.value):>7} {_number(c.warn):>7} "
                     f"{_number(c.alert):>7}  {c.status:<7}  {printable(c.detail)}")
    if quiet:
        features = len({c.check.split(":", 1)[1] for c in quiet})
        lines.append(f"(and {len(quiet)} input checks ok over {features} feature{'s' * (features != 1)}: input drift, "
                     "new categories and missing rates; --all lists them)")
    lines.append(f"Monitoring as of {run.as_of:%Y-%m-%d %H:%M}: {run.status} (exit {run.exit_code}); run {run.run_id} "
                 "in monitoring_runs" + (f", MLflow run {run.mlflow_run_id}" if run.mlflow_run_id else ""))
    return "\n".join(lines)
