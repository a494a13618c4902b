"""A/B tests on the CRM: per experiment and variant the rate with its interval, the difference from the control
with its interval and p-value, the probability each variant is best, and the sample size still needed.

:func:`experiment_trials` turns ``experiment_assignments`` into one row per assigned lead with its outcome,
counting only what the lead did after ``assigned_at`` and up to ``as_of`` (no leakage: later assignments are
left out too). :func:`compare_variants` does the statistics with statsmodels: Wilson intervals for rates, the
Agresti-Caffo interval and test for differences of proportions (one each other's inverse, and defined for small
or extreme counts), Welch's t for revenue per lead,
power by Cohen's h (proportions) or d (revenue); the probability of being best comes from Beta(1 + s, 1 + n - s)
posteriors (normal ones for revenue) by Monte Carlo with a fixed seed. These are fixed-horizon tests: see
:data:`PEEKING_CAUTION`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import chisquare
from statsmodels.stats.power import NormalIndPower, TTestIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportion_effectsize,
    test_proportions_2indep,
)
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from features.errors import InvalidInput
from features.kpi.tables import KpiTables

METRICS: tuple[str, ...] = ("conversion", "ctr", "revenue")
"""conversion: assigned leads converting; ctr: leads clicking an email of those opening one (click-to-open);
revenue: order revenue per assigned lead."""

ALPHA = 0.05
"""Two-sided significance level; intervals are at 1 - ALPHA."""

POWER = 0.8
"""Power at which the sample size needed to detect the observed difference is computed."""

DRAWS = 20_000
"""Monte Carlo draws from each variant's posterior for the probability of being best."""

RUNNING_DAYS = 7
"""An experiment with an assignment within this many days before as_of counts as running."""

MIN_TRIALS = 30
"""Fewer trials than this in a variant: too little data for a verdict."""

SRM_P = 0.001
"""Below this p-value of a chi-square test of equal variant sizes, warn of a sample ratio mismatch."""

PEEKING_CAUTION = (
    "Fixed-horizon tests: looking at the results again and again and stopping at the first p < 0.05 (peeking) "
    "makes false winners far more likely than 5%; fix the sample size first (needed_per_variant) and decide once it "
    "is reached, or use a sequential method."
)


@dataclass(frozen=True)
class ExperimentResult:
    """One experiment compared on one metric: the variants and the best challenger against the control."""

    experiment: str
    metric: str
    status: str
    first_assigned: pd.Timestamp
    last_assigned: pd.Timestamp
    control: str
    compared: str | None
    variants: list[dict]
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    needed_per_variant: int | None
    more_needed_per_variant: int | None
    verdict: str
    winner: str | None
    verdict_text: str
    warnings: list[str] = field(default_factory=list)


def experiment_trials(crm: KpiTables, metric: str, as_of: pd.Timestamp) -> pd.DataFrame:
    """One row per lead assigned by ``as_of``: experiment, variant, lead_id, assigned_at, trial, outcome.

    ``trial`` says whether the lead counts for ``metric`` (ctr: it opened an email after assignment); ``outcome``
    is 1/0 (converted, clicked) or the revenue of its orders, counting only events after ``assigned_at`` and at or
    before ``as_of``.
    """
    if metric not in METRICS:
        raise InvalidInput(f"--metric {metric!r} is unknown; expected one of {', '.join(METRICS)}")
    rows = crm.experiment_assignments
    rows = rows[rows["assigned_at"] <= as_of][["experiment", "variant", "lead_id", "assigned_at"]]
    rows = rows.reset_index(drop=True)
    if metric == "conversion":
        converted = rows["lead_id"].map(crm.leads.set_index("lead_id")["converted_at"])
        return rows.assign(trial=True, outcome=_between(converted, rows["assigned_at"], as_of).astype(float))
    if metric == "ctr":
        opened = _any_event(rows, crm.activities, "email_open", as_of)
        return rows.assign(trial=opened, outcome=(_any_event(rows, crm.activities, "email_click", as_of)
                                                  & opened).astype(float))
    lead_of = crm.customers.dropna(subset=["lead_id"]).set_index("customer_id")["lead_id"]
    orders = crm.orders.assign(lead_id=crm.orders["customer_id"].map(lead_of)).dropna(subset=["lead_id"])
    paired = rows.reset_index().merge(orders[["lead_id", "ordered_at", "amount"]], on="lead_id")
    paid = paired[_between(paired["ordered_at"], paired["assigned_at"], as_of)].groupby("index")["amount"].sum()
    return rows.assign(trial=True, outcome=paid.reindex(rows.index, fill_value=0.0).to_numpy(dtype=float))


def _between(times: pd.Series, after: pd.Series, as_of: pd.Timestamp) -> pd.Series:
    """Whether each time is after its ``after`` and at or before ``as_of`` (missing times are not)."""
    return ((times > after) & (times <= as_of)).fillna(False).astype(bool)


def _any_event(rows: pd.DataFrame, activities: pd.DataFrame, kind: str, as_of: pd.Timestamp) -> np.ndarray:
    """Whether each assigned lead did an activity of type ``kind`` after its assignment, by ``as_of``."""
    events = activities.loc[activities["activity_type"] == kind, ["lead_id", "occurred_at"]]
    paired = rows[["lead_id", "assigned_at"]].reset_index().merge(events, on="lead_id")
    hit = paired.loc[_between(paired["occurred_at"], paired["assigned_at"], as_of), "index"].unique()
    return np.isin(np.arange(len(rows)), hit)


def control_variant(variants: list[str]) -> str:
    """The control: the variant called control (any case), else A, else the first by name."""
    by_case = {v.casefold(): v for v in sorted(variants)}
    return by_case.get("control") or by_case.get("a") or sorted(variants)[0]


def experiment_results(trials: pd.DataFrame, metric: str, as_of: pd.Timestamp, seed: int = 0) -> list[ExperimentResult]:
    """:func:`compare_variants` for every experiment in ``trials`` (from :func:`experiment_trials`), by name."""
    return [compare_variants(name, metric, group, as_of, seed) for name, group in trials.groupby("experiment")]


def compare_variants(
    experiment: str, metric: str, trials: pd.DataFrame, as_of: pd.Timestamp, seed: int = 0
) -> ExperimentResult:
    """Compare the variants of one experiment; ``trials`` has variant, assigned_at, trial and outcome columns."""
    names = sorted(trials["variant"].unique())
    control = control_variant(names)
    counted = trials[trials["trial"].astype(bool)]
    samples = {v: counted.loc[counted["variant"] == v, "outcome"].to_numpy(dtype=float) for v in names}
    rows = [_variant_row(v, samples[v], metric) for v in names]
    best = _prob_best(samples, metric, seed)
    for row in rows:
        row["prob_best"] = best.get(row["variant"])
    challengers = [r for r in rows if r["variant"] != control and r["n"]]
    compared = max(challengers, key=lambda r: r["rate"])["variant"] if challengers else None
    tests = len(names) - 1
    result = _difference(samples[control], samples[compared], metric, ALPHA / max(tests, 1)) if compared else {}
    verdict, winner, text = _verdict(control, compared, samples, result, tests)
    first, last = trials["assigned_at"].min(), trials["assigned_at"].max()
    status = "running" if last >= as_of - pd.Timedelta(days=RUNNING_DAYS) else "finished"
    return ExperimentResult(
        experiment=experiment, metric=metric, status=status, first_assigned=first, last_assigned=last,
        control=control, compared=compared, variants=rows,
        difference=result.get("difference"), ci_low=result.get("ci_low"), ci_high=result.get("ci_high"),
        p_value=result.get("p_value"), needed_per_variant=result.get("needed"),
        more_needed_per_variant=(None if result.get("needed") is None else
                                 max(0, result["needed"] - min(len(samples[control]), len(samples[compared])))),
        verdict=verdict, winner=winner, verdict_text=text,
        warnings=_warnings(experiment, trials, names, metric, tests),
    )


def _variant_row(variant: str, values: np.ndarray, metric: str) -> dict:
    """n, rate (or mean revenue) and its interval at 1 - ALPHA."""
    n = len(values)
    if n == 0:
        return {"variant": variant, "n": 0, "successes": None, "rate": None, "ci_low": None, "ci_high": None}
    if metric == "revenue":
        low, high = DescrStatsW(values).tconfint_mean(alpha=ALPHA) if n > 1 else (None, None)
        return {"variant": variant, "n": n, "successes": None, "rate": float(values.mean()),
                "ci_low": _number(low), "ci_high": _number(high)}
    successes = int(values.sum())
    low, high = proportion_confint(successes, n, alpha=ALPHA, method="wilson")
    return {"variant": variant, "n": n, "successes": successes, "rate": successes / n, "ci_low": float(low),
            "ci_high": float(high)}


def _difference(control: np.ndarray, variant: np.ndarray, metric: str, alpha: float) -> dict:
    """The variant minus the control: difference, its interval at 1 - alpha, p-value, and n per variant needed."""
    if len(control) < 2 or len(variant) < 2:
        return {}
    difference = float(variant.mean() - control.mean())
    if metric == "revenue":
        compare = CompareMeans.from_data(variant, control)
        low, high = compare.tconfint_diff(alpha=alpha, usevar="unequal")
        p_value = compare.ttest_ind(usevar="unequal")[1]
        spread = math.sqrt((variant.var(ddof=1) + control.var(ddof=1)) / 2)
        size = difference / spread if spread > 0 else 0.0
        power = TTestIndPower()
    else:
        args = (int(variant.sum()), len(variant), int(control.sum()), len(control))
        low, high = confint_proportions_2indep(*args, method="agresti-caffo", compare="diff", alpha=alpha)
        p_value = test_proportions_2indep(*args, method="agresti-caffo", compare="diff").pvalue
        size = float(proportion_effectsize(variant.mean(), control.mean()))
        power = NormalIndPower()
    needed = None
    if np.isfinite(size) and abs(size) > 1e-9:
        needed = math.ceil(power.solve_power(effect_size=abs(size), alpha=alpha, power=POWER, ratio=1.0))
    return {"difference": difference, "ci_low": _number(low), "ci_high": _number(high),
            "p_value": _number(p_value), "needed": needed}


def _prob_best(samples: dict[str, np.ndarray], metric: str, seed: int) -> dict[str, float]:
    """Share of Monte Carlo draws in which each variant has the highest rate (Beta or normal posteriors)."""
    rng = np.random.default_rng(seed)
    names = [v for v, values in samples.items() if len(values) > (1 if metric == "revenue" else 0)]
    if not names:
        return {}
    draws = np.empty((DRAWS, len(names)))
    for column, name in enumerate(names):
        values = samples[name]
        if metric == "revenue":
            draws[:, column] = rng.normal(values.mean(), values.std(ddof=1) / math.sqrt(len(values)), DRAWS)
        else:
            draws[:, column] = rng.beta(1 + values.sum(), 1 + len(values) - values.sum(), DRAWS)
    wins = np.bincount(draws.argmax(axis=1), minlength=len(names)) / DRAWS
    return dict(zip(names, wins.tolist(), strict=True))


def _verdict(
    control: str, compared: str | None, samples: dict[str, np.ndarray], result: dict, tests: int
) -> tuple[str, str | None, str]:
    """winner, no_difference or too_little_data; the winning variant; the verdict in words."""
    small = [v for v, values in samples.items() if len(values) < MIN_TRIALS]
    if compared is None or small or result.get("p_value") is None:
        return "too_little_data", None, (f"too little data: fewer than {MIN_TRIALS} trials in "
                                         f"{', '.join(small) or 'a variant'}")
    level = ALPHA / max(tests, 1)
    if result["p_value"] < level and (result["ci_low"] > 0 or result["ci_high"] < 0):
        winner = compared if result["difference"] > 0 else control
        return "winner", winner, f"{winner} wins at alpha {level:.3g}"
    return "no_difference", None, "no detectable difference"


def _warnings(experiment: str, trials: pd.DataFrame, names: list[str], metric: str, tests: int) -> list[str]:
    """Sample ratio mismatch, few trials, several comparisons: what could mislead in this experiment."""
    warnings = []
    sizes = trials["variant"].value_counts().reindex(names).to_numpy()
    if len(names) > 1 and chisquare(sizes).pvalue < SRM_P:
        warnings.append(f"{experiment}: variant sizes {dict(zip(names, sizes.tolist(), strict=True))} are far from an "
                        "equal split (sample ratio mismatch): check how leads were assigned before trusting it")
    if metric == "ctr" and not trials["trial"].any():
        warnings.append(f"{experiment}: no assigned lead opened an email after assignment; no ctr to compare")
    if tests > 1:
        warnings.append(f"{experiment}: {tests} variants against the control; the best is compared at alpha "
                        f"{ALPHA}/{tests} (Bonferroni)")
    return warnings


def _number(value: object) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def ran_experiments(crm: KpiTables) -> list[str]:
    """The experiments in the CRM, by name."""
    return sorted(crm.experiment_assignments["experiment"].dropna().unique().tolist())
