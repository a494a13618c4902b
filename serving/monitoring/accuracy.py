"""Realized accuracy: how the champions' stored scores did against what happened once their horizon had passed.

Leads: the latest run of the lead champion in ``lead_score_history`` whose horizon (the model's ``horizon_days``,
default 90) has passed by the monitoring as-of. Its leads' outcome is ``features.lead_labels``'s label, from
``leads.converted_at``: converted in ``(run as_of, run as_of + horizon]``, which ends by the monitoring as-of, so
nothing later leaks in; leads converted by the run's as-of (not open then) are left out. Checks, with the
backtest's metrics (:func:`training.leads.backtest.as_of_metrics`, :func:`~training.leads.backtest.band_rates`):

* ``realized_auc``: ROC AUC over all the run's open leads, judged against the ROC AUC the champion's training run
  recorded on its holdout (MLflow metric ``roc_auc``): warn when it is :data:`AUC_WARN_DROP` or more below, alert at
  :data:`AUC_ALERT_DROP`; without that record, warn at or below 0.70 and alert at or below 0.60 (:data:`AUC_FALLBACK`).
* ``realized_auc_new_leads``: ROC AUC over the leads created within the horizon before the run (younger than
  ``horizon_days``), judged the same way against the holdout AUC of leads of those ages (metric
  ``roc_auc_new_leads``). Old open leads, many and rarely converting, are easy to rank and dilute a change in what
  makes new leads convert; this check sees it first. No record (models trained before it was kept): no_data.
* ``realized_lift_top10``: conversion rate of the top 10% by probability over the base rate; warn at or below 1.5,
  alert at or below 1.1 (1 is a random order) (:data:`LIFT_THRESHOLDS`).
* ``realized_calibration:BAND``: |actual - predicted| conversion rate of the band, in rate points; warn at 0.05,
  alert at 0.10 (:data:`CALIBRATION_THRESHOLDS`); a band of fewer than :data:`MIN_BAND_LEADS` leads is no_data.

AUC and lift need :data:`MIN_OUTCOMES` converted and as many unconverted leads, else no_data. An AUC drop beyond a
threshold counts only when it is also beyond chance: the holdout AUC minus the realized AUC is more than
:data:`DROP_Z` standard errors of the realized AUC (Hanley & McNeil, 1982); otherwise the check is ok and says the
drop is within chance, so a small CRM's few conversions cannot raise an alarm on their own.

CLV (``realized_purchases``): the latest run of the CLV champion in ``customer_score_history`` whose
``horizon_days`` has passed; the orders its customers placed in ``(run as_of, run as_of + horizon]`` against the
sum of their ``expected_purchases``; value |actual / predicted - 1|, warn at 0.25, alert at 0.50
(:data:`PURCHASE_THRESHOLDS`). No run whose horizon has passed: every check is no_data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sqlalchemy import Engine, and_, select

from features.crm import schema
from features.crm.store import read_frame
from features.lead_labels import DEFAULT_HORIZON_DAYS
from serving.monitoring.checks import CheckResult, Thresholds
from training.leads.backtest import as_of_metrics, band_rates

AUC_WARN_DROP = 0.05
AUC_ALERT_DROP = 0.10
DROP_Z = 1.645
"""A drop in AUC counts when it exceeds this many standard errors (one-sided 95%)."""
AUC_FALLBACK = Thresholds(warn=0.70, alert=0.60, higher_is_worse=False)
LIFT_THRESHOLDS = Thresholds(warn=1.5, alert=1.1, higher_is_worse=False)
CALIBRATION_THRESHOLDS = Thresholds(warn=0.05, alert=0.10)
PURCHASE_THRESHOLDS = Thresholds(warn=0.25, alert=0.50)
MIN_OUTCOMES = 10
MIN_BAND_LEADS = 50
MIN_CUSTOMERS = 20


@dataclass(frozen=True)
class Champion:
    """What monitoring needs of a champion: its name, version, training run, horizon and the holdout ROC AUC its
    training run recorded, over all holdout leads and over those younger than the horizon."""

    name: str
    version: str | None
    run_id: str | None = None
    horizon_days: int | None = None
    holdout_auc: float | None = None
    new_leads_auc: float | None = None


def auc_thresholds(holdout_auc: float | None) -> Thresholds:
    """Realized-AUC thresholds: relative to the holdout AUC the champion recorded, else :data:`AUC_FALLBACK`."""
    if holdout_auc is None or np.isnan(holdout_auc):
        return AUC_FALLBACK
    return Thresholds(holdout_auc - AUC_WARN_DROP, holdout_auc - AUC_ALERT_DROP, higher_is_worse=False)


def auc_standard_error(auc: float, converted: int, unconverted: int) -> float:
    """Standard error of a ROC AUC over ``converted`` and ``unconverted`` leads (Hanley & McNeil, 1982)."""
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    variance = (auc * (1 - auc) + (converted - 1) * (q1 - auc ** 2) + (unconverted - 1) * (q2 - auc ** 2))
    return float(np.sqrt(max(variance, 0.0) / (converted * unconverted)))


def judged_auc(check: str, model: str, auc: float | None, reference: float | None, y: np.ndarray,
               detail: str) -> CheckResult:
    """An AUC check against ``reference`` (:func:`auc_thresholds`); a warn or alert stands only when the drop from
    ``reference`` is beyond chance (more than :data:`DROP_Z` standard errors), else ok, saying so."""
    thresholds = auc_thresholds(reference)
    result = CheckResult.judged(check, model, auc, thresholds, detail)
    if result.status in ("ok", "no_data") or thresholds is AUC_FALLBACK or auc is None:
        return result
    error = auc_standard_error(auc, int(y.sum()), int(len(y) - y.sum()))
    if reference - auc > DROP_Z * error:
        return result
    return CheckResult(check, model, auc, thresholds.warn, thresholds.alert, "ok",
                       f"{detail}; the drop of {reference - auc:.3f} is within chance (standard error {error:.3f})")


def _lead_no_data(model: str, why: str, champion: Champion) -> list[CheckResult]:
    """Every lead accuracy check as no_data, saying why."""
    checks = [CheckResult.judged("realized_auc", model, None, auc_thresholds(champion.holdout_auc), why),
              CheckResult.judged("realized_auc_new_leads", model, None, auc_thresholds(champion.new_leads_auc), why),
              CheckResult.judged("realized_lift_top10", model, None, LIFT_THRESHOLDS, why)]
    return checks + [CheckResult.judged(f"realized_calibration:{band}", model, None, CALIBRATION_THRESHOLDS, why)
                     for band in schema.SCORE_BANDS]


def matured_as_of(runs: pd.DataFrame, as_of: datetime, horizon_days: pd.Series | int) -> pd.Timestamp | None:
    """The latest run ``as_of`` whose horizon has passed by ``as_of`` (None when none has)."""
    if runs.empty:
        return None
    ends = runs["as_of"] + pd.to_timedelta(horizon_days, unit="D")
    matured = runs.loc[ends <= pd.Timestamp(as_of), "as_of"]
    return None if matured.empty else pd.Timestamp(matured.max())


def realized_lead_checks(scored: pd.DataFrame, leads: pd.DataFrame, run_as_of: pd.Timestamp, horizon_days: int,
                         champion: Champion) -> list[CheckResult]:
    """ROC AUC (all open leads, and those younger than the horizon), lift and per-band calibration of one run's
    scores (``lead_id, probability, band``) against conversions within ``horizon_days`` after ``run_as_of``
    (``leads``: ``lead_id, created_at, converted_at``)."""
    known = scored[["lead_id"]].merge(leads, on="lead_id", how="left")
    converted_at = known["converted_at"]
    open_then = ~(converted_at <= run_as_of).to_numpy()
    end = run_as_of + pd.Timedelta(days=horizon_days)
    y = ((converted_at > run_as_of) & (converted_at <= end)).to_numpy(dtype="float64")[open_then]
    p = scored["probability"].to_numpy(dtype="float64")[open_then]
    band = scored["band"].to_numpy(dtype=object)[open_then]
    new = ((run_as_of - known["created_at"]) < pd.Timedelta(days=horizon_days)).to_numpy()[open_then]
    run = f"scores of v{champion.version} as of {run_as_of:%Y-%m-%d}, {horizon_days}-day horizon"
    metrics = as_of_metrics(run_as_of, y, p)
    checks = [_auc_check("realized_auc", champion.name, y, p, champion.holdout_auc, run,
                         f"{len(y):,} open leads"),
              _auc_check("realized_auc_new_leads", champion.name, y[new], p[new], champion.new_leads_auc, run,
                         f"{int(new.sum()):,} leads created in the {horizon_days} days before it",
                         compared="the holdout's new leads",
                         missing="the champion's training run recorded no holdout AUC of new leads (trained "
                                 "before leadval kept it): retrain to judge new leads")]
    counted = f"{len(y):,} leads, {int(y.sum()):,} converted"
    if min(y.sum(), len(y) - y.sum()) >= MIN_OUTCOMES:
        lift = metrics["lift_top10"]
        checks.append(CheckResult.judged("realized_lift_top10", champion.name, lift, LIFT_THRESHOLDS,
                                         f"{run}: top 10% convert at {lift:.2f}x the base rate ({counted})"))
    else:
        checks.append(CheckResult.judged("realized_lift_top10", champion.name, None, LIFT_THRESHOLDS,
                                         f"{run}: {counted}; fewer than {MIN_OUTCOMES} converted or unconverted "
                                         "leads to judge by"))
    for row in band_rates(run_as_of, band, p, y).to_dict("records"):
        name = f"realized_calibration:{row['band']}"
        if row["leads"] < MIN_BAND_LEADS:
            checks.append(CheckResult.judged(name, champion.name, None, CALIBRATION_THRESHOLDS,
                                             f"{run}: band {row['band']} holds {row['leads']:,} leads, fewer than "
                                             f"{MIN_BAND_LEADS} to judge by"))
            continue
        gap = abs(row["actual_rate"] - row["predicted_rate"])
        checks.append(CheckResult.judged(
            name, champion.name, gap, CALIBRATION_THRESHOLDS,
            f"{run}: band {row['band']} predicted {row['predicted_rate']:.1%}, converted {row['actual_rate']:.1%} "
            f"({row['conversions']:,} of {row['leads']:,} leads)"))
    return checks


def _auc_check(check: str, model: str, y: np.ndarray, p: np.ndarray, reference: float | None, run: str, who: str,
               compared: str = "holdout", missing: str | None = None) -> CheckResult:
    """One realized-AUC check of the leads ``who`` names (outcomes ``y``, probabilities ``p``) against
    ``reference``, the AUC of the leads ``compared`` names; no_data with ``missing`` when there is no reference and
    ``missing`` is given."""
    counted = f"{who}, {int(y.sum()):,} converted"
    if reference is None and missing is not None:
        return CheckResult.judged(check, model, None, auc_thresholds(None), f"{run}: {missing}")
    if min(y.sum(), len(y) - y.sum()) < MIN_OUTCOMES:
        return CheckResult.judged(check, model, None, auc_thresholds(reference),
                                  f"{run}: {counted}; fewer than {MIN_OUTCOMES} converted or unconverted leads to "
                                  "judge by")
    auc = float(roc_auc_score(y, p))
    holdout = f"{compared} {reference:.3f}" if reference is not None else "no holdout AUC recorded"
    return judged_auc(check, model, auc, reference, y, f"{run}: ROC AUC {auc:.3f} ({holdout}) on {counted}")


def lead_accuracy(engine: Engine, champion: Champion, as_of: datetime) -> list[CheckResult]:
    """Realized accuracy of the lead champion's latest stored run whose horizon has passed by ``as_of``."""
    if champion.version is None:
        return _lead_no_data(champion.name, f"no champion of {champion.name} to judge", champion)
    horizon = champion.horizon_days or DEFAULT_HORIZON_DAYS
    history = schema.lead_score_history
    mine = and_(history.c.model_name == champion.name, history.c.model_version == champion.version)
    with engine.connect() as conn:
        runs = pd.DataFrame(conn.execute(select(history.c.as_of).where(mine).distinct()).all(), columns=["as_of"])
    runs["as_of"] = pd.to_datetime(runs["as_of"])
    run_as_of = matured_as_of(runs, as_of, horizon)
    if run_as_of is None:
        return _lead_no_data(champion.name, f"no scoring run of v{champion.version} whose {horizon}-day horizon "
                                            f"has passed by {as_of:%Y-%m-%d} ({len(runs)} run(s) stored)", champion)
    scored = read_frame(engine, history, ["lead_id", "probability", "band"],
                        where=and_(mine, history.c.as_of == run_as_of.to_pydatetime()))
    leads = read_frame(engine, schema.leads, ["lead_id", "created_at", "converted_at"])
    return realized_lead_checks(scored, leads, run_as_of, horizon, champion)


def realized_purchase_check(scored: pd.DataFrame, orders: pd.DataFrame, run_as_of: pd.Timestamp, horizon_days: int,
                            champion: Champion) -> CheckResult:
    """Orders placed within ``horizon_days`` after ``run_as_of`` by the scored customers (``customer_id,
    expected_purchases``) against the purchases the run expected of them."""
    end = run_as_of + pd.Timedelta(days=horizon_days)
    within = orders[(orders["ordered_at"] > run_as_of) & (orders["ordered_at"] <= end)
                    & orders["customer_id"].isin(scored["customer_id"])]
    predicted, actual = float(scored["expected_purchases"].sum()), float(len(within))
    run = f"scores of v{champion.version} as of {run_as_of:%Y-%m-%d}, {horizon_days}-day horizon"
    if len(scored) < MIN_CUSTOMERS or predicted <= 0:
        return CheckResult.judged("realized_purchases", champion.name, None, PURCHASE_THRESHOLDS,
                                  f"{run}: {len(scored):,} customers expected {predicted:,.1f} purchases; too few "
                                  "to judge by")
    return CheckResult.judged(
        "realized_purchases", champion.name, abs(actual / predicted - 1), PURCHASE_THRESHOLDS,
        f"{run}: {len(scored):,} customers placed {actual:,.0f} orders against {predicted:,.1f} expected "
        f"(actual / predicted {actual / predicted:.2f})")


def clv_accuracy(engine: Engine, champion: Champion, as_of: datetime) -> list[CheckResult]:
    """Predicted against actual purchases of the CLV champion's latest stored run whose horizon has passed."""
    if champion.version is None:
        return [CheckResult.judged("realized_purchases", champion.name, None, PURCHASE_THRESHOLDS,
                                   f"no champion of {champion.name} to judge")]
    history = schema.customer_score_history
    mine = and_(history.c.model_name == champion.name, history.c.model_version == champion.version)
    with engine.connect() as conn:
        rows = conn.execute(select(history.c.as_of, history.c.horizon_days).where(mine).distinct()).all()
    runs = pd.DataFrame(rows, columns=["as_of", "horizon_days"])
    runs["as_of"] = pd.to_datetime(runs["as_of"])
    run_as_of = matured_as_of(runs, as_of, runs["horizon_days"].astype("float64"))
    if run_as_of is None:
        return [CheckResult.judged("realized_purchases", champion.name, None, PURCHASE_THRESHOLDS,
                                   f"no scoring run of v{champion.version} whose horizon has passed by "
                                   f"{as_of:%Y-%m-%d} ({len(runs)} run(s) stored)")]
    horizon = int(runs.loc[runs["as_of"] == run_as_of, "horizon_days"].max())
    scored = read_frame(engine, history, ["customer_id", "expected_purchases"],
                        where=and_(mine, history.c.as_of == run_as_of.to_pydatetime()))
    end = (run_as_of + pd.Timedelta(days=horizon)).to_pydatetime()
    orders = read_frame(engine, schema.orders, ["customer_id", "ordered_at"],
                        where=and_(schema.orders.c.ordered_at > run_as_of.to_pydatetime(),
                                   schema.orders.c.ordered_at <= end))
    return [realized_purchase_check(scored, orders, run_as_of, horizon, champion)]
