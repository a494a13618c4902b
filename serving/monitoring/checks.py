"""What one monitoring check says: its value against documented warn and alert thresholds, as ok, warn, alert or no_data.

Every check of ``leadval monitor`` (input drift, score drift, realized accuracy, KPI targets) returns
:class:`CheckResult` rows; :func:`overall` folds them into the run's status and :data:`EXIT_CODES` into the exit
code a scheduler can act on. A check without data yet (no past run whose horizon has passed, no targets file) is
``no_data`` and counts as ok.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

STATUSES: tuple[str, ...] = ("ok", "no_data", "warn", "alert")
"""From best to worst; ``no_data`` counts as ok."""
EXIT_CODES: dict[str, int] = {"ok": 0, "no_data": 0, "warn": 3, "alert": 4}
"""The exit code of ``leadval monitor`` for the run's overall status."""


@dataclass(frozen=True)
class Thresholds:
    """Where a check's value turns warn and alert; ``higher_is_worse`` False for values that alarm when low (AUC)."""

    warn: float
    alert: float
    higher_is_worse: bool = True

    def status(self, value: float | None) -> str:
        """ok, warn or alert for ``value``; no_data when there is none (None or NaN)."""
        if value is None or math.isnan(value):
            return "no_data"
        worse = (lambda limit: value >= limit) if self.higher_is_worse else (lambda limit: value <= limit)
        return "alert" if worse(self.alert) else "warn" if worse(self.warn) else "ok"


@dataclass(frozen=True)
class CheckResult:
    """One check of one model (or of the KPIs): its value, the thresholds it was judged by, its status and why.

    ``check`` names the check and, after a colon, what it looked at (``input_drift:source_channel``,
    ``realized_auc``, ``kpi_target:Paid search converts 4%``); ``model`` the registered model (``lead-scoring``,
    ``clv``) or ``kpi``; ``detail`` one sentence for people.
    """

    check: str
    model: str
    value: float | None
    warn: float | None
    alert: float | None
    status: str
    detail: str

    @classmethod
    def judged(cls, check: str, model: str, value: float | None, thresholds: Thresholds, detail: str) -> CheckResult:
        """A result whose status comes from ``thresholds``."""
        return cls(check, model, value, thresholds.warn, thresholds.alert, thresholds.status(value), detail)


def overall(results: Iterable[CheckResult]) -> str:
    """The worst status of ``results`` (ok when there are none; no_data counts as ok)."""
    worst = max((STATUSES.index(result.status) for result in results), default=0)
    return "ok" if STATUSES[worst] == "no_data" else STATUSES[worst]
