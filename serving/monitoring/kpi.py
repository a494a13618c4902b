"""KPI targets as monitoring checks: each SMART target of the targets file, judged as the report judges it.

The status comes from :func:`features.kpi.targets.evaluate_targets` over the report window from the data's first
day to the monitoring as-of: ``on_track`` and ``met`` are ok, ``at_risk`` (the projection at the deadline misses the
target) warn, ``missed`` (the deadline passed without meeting it) alert, ``no_data`` no_data. A check's ``warn``
and ``alert`` are both the target, and its value the metric's latest complete period. Without a targets file there
is one ``kpi_targets`` check, no_data.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from serving.monitoring.checks import CheckResult

TARGET_STATUS: dict[str, str] = {"on_track": "ok", "met": "ok", "at_risk": "warn", "missed": "alert",
                                 "no_data": "no_data"}
"""A target's status (``features.kpi.targets.STATUSES``) as a check status."""
KPI_MODEL = "kpi"


def kpi_checks(engine: Engine, as_of: datetime, targets_path: Path | None) -> list[CheckResult]:
    """One check per target of ``targets_path`` as of ``as_of``; one no_data check without a targets file."""
    if targets_path is None:
        return [CheckResult("kpi_targets", KPI_MODEL, None, None, None, "no_data", "no targets file given (--targets)")]
    from features.kpi.tables import read_kpi_tables, report_window
    from features.kpi.targets import evaluate_targets, read_targets

    goals = read_targets(targets_path)
    crm = read_kpi_tables(engine)
    window = report_window(crm, None, as_of.date())
    table = evaluate_targets(goals, crm, window)
    return [_check(row, window.label) for row in table.to_dict("records")]


def _check(row: dict, window: str) -> CheckResult:
    """A target's row of :func:`features.kpi.targets.status_frame` as a check."""
    current = None if math.isnan(row["current"]) else float(row["current"])
    way = row["direction"].replace("_", " ")
    if current is None:
        said = "no data in its scope"
    else:
        said = (f"{row['metric']} {current:.4g} in the {row['period']} of {row['current_period']}, projected "
                f"{row['projected']:.4g} at the deadline")
    detail = (f"{row['status'].replace('_', ' ')}: {said}; target {way} {row['target']:.4g} by {row['deadline']} "
              f"({row['scope']}, report window {window})")
    return CheckResult(f"kpi_target:{row['name']}", KPI_MODEL, current, row["target"], row["target"],
                       TARGET_STATUS[row["status"]], detail)
