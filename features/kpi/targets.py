"""SMART KPI targets: read a targets file, check it, and say whether each target is on track.

A targets file is TOML with one ``[[targets]]`` table per target::

    [[targets]]
    name = "Paid search converts better"   # optional
    metric = "conversion_rate"             # a column of features.kpi.definitions.METRICS
    scope = "channel:paid_search"          # all, channel:NAME, campaign:NAME or segment:NAME
    target = 0.04                          # or "4%" for percentages
    direction = "at_least"                 # or at_most; default: the metric's better direction
    deadline = 2026-03-31                  # or "+3 months": counted from the report's last day

A relative deadline (``"+N days"``, ``"+N weeks"`` or ``"+N months"``) is resolved against the report
window's last day, so a targets file can move with its data (the example file's deadlines move with the
simulated CRM, which ends when it is generated).

A target is judged on the metric's value per period (month, or week for short windows) in the report
window, by one method: *current* is the latest complete period's value, *trend* the least-squares slope per
period over the last :data:`PROJECTION_PERIODS` complete periods, and *projected* = current + trend x the
periods from the current one to the deadline's, so a falling trend never projects a rise. The band around it
is the :data:`PREDICTION_LEVEL` prediction interval of that projection under the fitted line (Student t on the
line's residuals; with three periods or more). Status, from the projection: ``on_track`` (it meets the target),
``at_risk`` (it does not), ``met`` / ``missed`` (the deadline has passed: the value in the deadline's period, or
the latest one, did / did not meet it) and ``no_data`` (the scope has no data, e.g. segments before customers
are scored, or a segment of the CLV model with no customers). For cohort metrics (conversions and the conversion
rate of the leads created in a period) a period counts as complete once its leads have had
:data:`features.kpi.definitions.COHORT_MATURITY_DAYS` to convert, so *current* is that of the latest mature
period (the report names it) and younger periods, still converting, do not bend the trend down. A segment's ``customers``, ``predicted_cltv`` and
``p_alive`` follow the scoring runs (``features.kpi.metrics.segment_snapshots``) instead of the report window.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from features.errors import InvalidInput
from features.kpi.definitions import COHORT_MATURITY_DAYS, COHORT_METRICS, DIMENSIONS, METRICS, SNAPSHOT_METRICS
from features.kpi.metrics import kpi_table, scope_values, segment_snapshots
from features.kpi.predictive import SEGMENT_ORDER
from features.kpi.tables import KpiTables, Window, default_grain, grain_code

DIRECTIONS: tuple[str, ...] = ("at_least", "at_most")
STATUSES: tuple[str, ...] = ("on_track", "at_risk", "met", "missed", "no_data")
_FIELDS = ("name", "metric", "scope", "target", "direction", "deadline")
_RELATIVE = re.compile(r"\+\s*(\d{1,4})\s*(day|week|month)s?", re.IGNORECASE)
PROJECTION_PERIODS = 6
"""How many of the latest complete periods the trend line is fitted on: recent enough to follow a change."""
PREDICTION_LEVEL = 0.8
"""Coverage of the band shown around a projection."""
RELATIVE_EXPECTED = 'YYYY-MM-DD, or "+N days", "+N weeks" or "+N months" after the report\'s last day'


@dataclass(frozen=True)
class RelativeDeadline:
    """A deadline counted from the report window's last day, e.g. ``+3 months``."""

    count: int
    unit: str
    """``day``, ``week`` or ``month``."""

    def after(self, day: date) -> date:
        """The deadline of a report whose last day is ``day`` (months: the same day of the month, or the last)."""
        if self.unit == "month":
            return (pd.Timestamp(day) + pd.DateOffset(months=self.count)).date()
        return (pd.Timestamp(day) + pd.Timedelta(days=self.count * (7 if self.unit == "week" else 1))).date()

    def __str__(self) -> str:
        return f"+{self.count} {self.unit}{'s' if self.count != 1 else ''}"


@dataclass(frozen=True)
class Target:
    """One SMART target: the metric, for whom, how much, which way, and by when.

    ``deadline`` is a day, or a :class:`RelativeDeadline` until :meth:`on` resolves it for a report.
    """

    metric: str
    scope: str
    target: float
    direction: str
    deadline: date | RelativeDeadline
    name: str

    def on(self, last_day: date) -> Target:
        """This target in a report whose last day is ``last_day``: a relative deadline becomes a day."""
        if isinstance(self.deadline, RelativeDeadline):
            return replace(self, deadline=self.deadline.after(last_day))
        return self

    @property
    def dimension(self) -> str:
        """``all``, ``channel``, ``campaign`` or ``segment``."""
        return self.scope.split(":", 1)[0]

    @property
    def scope_value(self) -> str:
        """The channel, campaign or segment named by the scope (``all`` for everything)."""
        return self.scope.split(":", 1)[1] if ":" in self.scope else "all"

    def is_met_by(self, value: float) -> bool:
        """Whether ``value`` meets the target in its direction."""
        return value >= self.target if self.direction == "at_least" else value <= self.target


def read_targets(path: Path) -> tuple[Target, ...]:
    """The targets in the TOML file at ``path``; see :func:`parse_targets`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"targets file {path}: cannot read it ({exc.strerror})") from None
    return parse_targets(text, source=str(path))


def parse_targets(text: str, source: str = "targets file") -> tuple[Target, ...]:
    """Targets from TOML text, each checked; raises ``InvalidInput`` naming the target and the field."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{source}: not valid TOML ({exc})") from None
    extra = sorted(set(document) - {"targets"})
    if extra:
        raise InvalidInput(f"{source}: unknown top-level key(s) {', '.join(extra)}; expected [[targets]] tables")
    entries = document.get("targets", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InvalidInput(f"{source}: 'targets' must be an array of tables ([[targets]])")
    return tuple(_target(entry, f"{source}, target {i}") for i, entry in enumerate(entries, start=1))


def _target(entry: Mapping[str, Any], where: str) -> Target:
    unknown = sorted(set(entry) - set(_FIELDS))
    if unknown:
        raise InvalidInput(f"{where}: unknown field(s) {', '.join(unknown)}; expected {', '.join(_FIELDS)}")
    missing = [f for f in ("metric", "scope", "target", "deadline") if f not in entry]
    if missing:
        raise InvalidInput(f"{where}: missing field(s) {', '.join(missing)}")
    metric_name = str(entry["metric"])
    metric = METRICS.get(metric_name)
    if metric is None:
        raise InvalidInput(f"{where}: unknown metric {metric_name!r}; expected one of {', '.join(METRICS)}")
    where = f"{where} ({metric_name})"
    scope = _scope(str(entry["scope"]), where)
    dimension = scope.split(":", 1)[0]
    if dimension not in metric.dimensions:
        raise InvalidInput(f"{where}: scope {scope!r}: {metric_name} is not measured per {dimension}; "
                           f"it supports {', '.join(metric.dimensions)}")
    default_direction = "at_least" if metric.higher_is_better else "at_most"
    direction = str(entry.get("direction", default_direction))
    if direction not in DIRECTIONS:
        raise InvalidInput(f"{where}: direction {direction!r} is unknown; expected at_least or at_most")
    name = str(entry.get("name") or f"{metric.label} ({scope}) {direction.replace('_', ' ')} {entry['target']}")
    return Target(metric_name, scope, _number(entry["target"], where), direction, _deadline(entry["deadline"], where),
                  name)


def _scope(scope: str, where: str) -> str:
    if scope == "all":
        return scope
    dimension, sep, value = scope.partition(":")
    if not sep or dimension not in DIMENSIONS or dimension == "all" or not value.strip():
        raise InvalidInput(f"{where}: scope {scope!r} is not valid; expected all, channel:NAME, campaign:NAME "
                           "or segment:NAME")
    return f"{dimension}:{value.strip()}"


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise InvalidInput(f"{where}: target {value!r} is not a number")
    try:
        if isinstance(value, str) and value.strip().endswith("%"):
            number = float(value.strip()[:-1]) / 100.0
        else:
            number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{where}: target {value!r} is not a number (e.g. 0.04 or \"4%\")") from None
    if not math.isfinite(number):
        raise InvalidInput(f"{where}: target {value!r} must be a finite number")
    return number


def _deadline(value: Any, where: str) -> date | RelativeDeadline:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    relative = _RELATIVE.fullmatch(str(value).strip())
    if relative:
        return RelativeDeadline(int(relative[1]), relative[2].lower())
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise InvalidInput(f"{where}: deadline {value!r} is not a date; expected {RELATIVE_EXPECTED}") from None


def check_scopes(targets: tuple[Target, ...], known: Mapping[str, set[str]]) -> None:
    """Raise ``InvalidInput`` for a target naming a channel, campaign or segment the data does not know.

    A dimension with no values at all (no customer scores yet) is not an error: such targets have no data.
    """
    for i, target in enumerate(targets, start=1):
        values = known.get(target.dimension, set())
        if values and target.scope_value not in values:
            raise InvalidInput(f"target {i} ({target.name}): unknown {target.dimension} {target.scope_value!r}; "
                               f"known: {', '.join(sorted(values))}")


@dataclass(frozen=True)
class TargetStatus:
    """How one target stands: current value, trend per period, projection at the deadline with its band, status."""

    target: Target
    current: float
    current_period: date | None
    trend_per_period: float
    projected: float
    periods: int
    status: str
    projected_low: float = math.nan
    projected_high: float = math.nan


def assess(target: Target, series: pd.DataFrame, as_of: date) -> TargetStatus:
    """Judge ``target`` on ``series`` (``period`` start, ``value``, ``complete``) as of the day ``as_of``.

    See the module docstring for the method; a relative deadline counts from ``as_of``. Projections and their
    band are clipped to the metric's possible range.
    """
    target = target.on(as_of)
    points = series.dropna(subset=["value"]).sort_values("period")
    complete = points[points["complete"].astype(bool)]
    used = (complete if not complete.empty else points).tail(PROJECTION_PERIODS)
    if used.empty:
        return TargetStatus(target, math.nan, None, math.nan, math.nan, 0, "no_data")
    current = float(used["value"].iloc[-1])
    current_period = pd.Timestamp(used["period"].iloc[-1]).date()
    deadline = pd.Timestamp(target.deadline)
    days = (used["period"] - pd.Timestamp("1970-01-01")).dt.days.to_numpy(dtype="float64")
    values = used["value"].to_numpy(dtype="float64")
    projected, low, high, trend = current, math.nan, math.nan, math.nan
    if len(used) >= 2 and np.ptp(days) > 0:
        step = float(np.median(np.diff(days)))
        ahead = max((_period_of(deadline, used["period"], step) - used["period"].iloc[-1]).days, 0)
        slope, low, high = _projection(days, values, ahead)
        projected, trend = current + slope * ahead, float(slope * step)
        low, high = current + low, current + high
    if target.deadline < as_of:
        at_deadline = points[points["period"] <= deadline]
        value = float(at_deadline["value"].iloc[-1]) if not at_deadline.empty else current
        status = "met" if target.is_met_by(value) else "missed"
    else:
        status = "on_track" if target.is_met_by(_clip(projected, target.metric)) else "at_risk"
    return TargetStatus(target, current, current_period, trend, _clip(projected, target.metric), len(used), status,
                        _clip(low, target.metric), _clip(high, target.metric))


def _projection(days: np.ndarray, values: np.ndarray, ahead: float) -> tuple[float, float, float]:
    """Least-squares slope per day, and the band of ``slope x ahead`` around the last value at PREDICTION_LEVEL.

    The projection's error, last value plus ``ahead`` days of fitted slope against the line's value then, has
    variance s^2 (2 + ahead^2 / Sxx + 2 ahead (x_last - mean x) / Sxx) under the fitted line with residual variance
    s^2; NaN bounds below three points, where s cannot be estimated.
    """
    slope, intercept = np.polyfit(days, values, 1)
    n = len(days)
    if n < 3:
        return float(slope), math.nan, math.nan
    residual = values - (slope * days + intercept)
    s2 = float(residual @ residual) / (n - 2)
    sxx = float(((days - days.mean()) ** 2).sum())
    variance = s2 * (2 + ahead**2 / sxx + 2 * ahead * (days[-1] - days.mean()) / sxx)
    half = float(stats.t.ppf((1 + PREDICTION_LEVEL) / 2, n - 2)) * math.sqrt(max(variance, 0.0))
    return float(slope), slope * ahead - half, slope * ahead + half


def _period_of(day: pd.Timestamp, periods: pd.Series, step_days: float) -> pd.Timestamp:
    """Start of the period (of about ``step_days``) that contains ``day``, on the grid of ``periods``."""
    last = pd.Timestamp(periods.iloc[-1])
    if step_days >= 28:
        months = 3 if step_days >= 89 else 1
        offset = (day.year - last.year) * 12 + (day.month - last.month)
        return last + pd.DateOffset(months=(offset // months) * months)
    steps = math.floor((day - last).days / step_days)
    return last + pd.Timedelta(days=steps * step_days)


def _clip(value: float, metric: str) -> float:
    if math.isnan(value):
        return value
    m = METRICS[metric]
    low = -math.inf if m.lower_bound is None else m.lower_bound
    high = math.inf if m.upper_bound is None else m.upper_bound
    return float(min(max(value, low), high))


def evaluate_targets(
    targets: tuple[Target, ...],
    crm: KpiTables,
    window: Window,
    grain: str | None = None,
    tables: Mapping[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Every target's standing over ``window``, one row each (see :class:`TargetStatus`).

    ``tables`` may hold :func:`features.kpi.metrics.kpi_table` results of the same window and grain by dimension,
    to save computing them again. Raises ``InvalidInput`` for scopes the data does not know.
    """
    known = scope_values(crm)
    if known["segment"]:
        known["segment"] |= set(SEGMENT_ORDER)  # the CLV model's segments exist even when one is empty
    check_scopes(targets, known)
    grain = grain or default_grain(window)
    tables = dict(tables or {})
    rows = []
    for target in targets:
        snapshot = target.dimension == "segment" and target.metric in SNAPSHOT_METRICS
        source = "snapshots" if snapshot else target.dimension
        if source not in tables:
            tables[source] = (segment_snapshots(crm, grain) if source == "snapshots"
                              else kpi_table(crm, window, target.dimension, grain))
        table = tables[source]
        mine = table[table[target.dimension] == target.scope_value]
        complete = mine["complete"].astype(bool)
        if target.metric in COHORT_METRICS:
            ends = mine["period"].dt.to_period(grain_code(grain)).dt.end_time
            complete &= ends + pd.Timedelta(days=COHORT_MATURITY_DAYS) < pd.Timestamp(window.end)
        series = pd.DataFrame({"period": mine["period"], "value": mine[target.metric], "complete": complete})
        rows.append(assess(target, series, window.last_day))
    return status_frame(rows, grain)


def status_frame(statuses: list[TargetStatus], grain: str) -> pd.DataFrame:
    """Target statuses as a table: the target's fields, then current, trend, projected and status."""
    columns = ["name", "metric", "scope", "direction", "target", "deadline", "current", "current_period",
               "trend_per_period", "period", "projected", "projected_low", "projected_high", "periods", "status"]
    rows = [
        {
            "name": s.target.name,
            "metric": s.target.metric,
            "scope": s.target.scope,
            "direction": s.target.direction,
            "target": s.target.target,
            "deadline": s.target.deadline,
            "current": s.current,
            "current_period": s.current_period,
            "trend_per_period": s.trend_per_period,
            "period": grain,
            "projected": s.projected,
            "projected_low": s.projected_low,
            "projected_high": s.projected_high,
            "periods": s.periods,
            "status": s.status,
        }
        for s in statuses
    ]
    return pd.DataFrame(rows, columns=columns)
