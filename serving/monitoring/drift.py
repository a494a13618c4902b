"""Input drift and score drift of the lead model: tonight's open leads against the training reference (the rows of
every split of the champion's training run: train, validation and test, the latest nearest to its cutoff), tonight's
scores against the last scoring runs.

Why PSI: the population stability index, sum over bins of (current - expected) x ln(current / expected), is the
credit-scoring convention for "has the scored population moved": one number per feature, the same for numerics
(binned) and categoricals (one bin per category), symmetric, and read against the usual 0.1 / 0.25 cut-offs.
A two-sample test (Kolmogorov-Smirnov, chi-squared) answers another question (could the samples be the same?):
with thousands of leads it rejects for shifts nobody needs to act on, and its p-value does not say how much
moved. Binning: numerics by the training deciles (duplicate edges of zero-inflated counts merged), so each bin
held ~10% of training leads; categoricals by training category plus one bucket for categories unseen in
training. Empty bins are floored at :data:`EPSILON` so that ln stays finite: a bin that was empty in training
and holds 10% tonight adds ~0.7, an alert on its own.

Features that grow with time by construction (``days_since_created``, days since the last activity of each
kind, counts over the lead's life) are compared **on leads of the same age**: the reference counts every
feature per age stratum (:data:`training.leads.reference.AGE_EDGES_DAYS`) and the expected distribution is the
training one mixed in tonight's age proportions; leads a year old or older are left out. So a CRM that keeps
accumulating old open leads is not drift, while a new country or another channel mix among leads of any age
is. Missing values are a check of their own (missing-rate change) and left out of the PSI.

Some features are clocks or echo the marketer's send calendar rather than the leads (:func:`calendar_locked`):
``days_since_*`` (the days since the last newsletter or webinar depend on tonight's place in the month), counts of
outbound mails (``email_sent_*``: the send schedule) and a week's email replies (``email_*_7d``). On a stationary
simulated CRM one night's values sit at PSI 0.3-2.4 against training snapshots spread over the month, so for
them only the missing rate (has the lead ever had one) is checked, never the PSI.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, and_, select

from features.crm import schema
from features.lead_features import LEAD_FEATURE_COLUMNS, lead_feature_arrays
from serving.batch.jobs import given_as_of, latest_time, lead_chunk_frames, open_lead_ids
from serving.batch.writeback import LEAD_JOB
from serving.monitoring.checks import CheckResult, Thresholds
from training.leads.pyfunc import scorer_of
from training.leads.reference import AGE_EDGES_DAYS, FeatureReference, score_shares
from training.leads.scorer import LeadScorer
from training.registry import LEAD_MODEL_NAME, load_registered, registered_identity

PSI = Thresholds(warn=0.1, alert=0.25)
"""PSI of a feature or of the scores: < 0.1 no real change, 0.1-0.25 a moderate shift, >= 0.25 a major one."""
NEW_CATEGORIES = Thresholds(warn=0.05, alert=0.20)
"""Share of tonight's leads (with a value) whose category the model never saw in training (scored as missing)."""
MISSING_RATE_CHANGE = Thresholds(warn=0.10, alert=0.25)
"""Change of a feature's missing rate against training, in shares (0.10 = 10 percentage points)."""
BAND_SHARE_CHANGE = Thresholds(warn=0.05, alert=0.10)
"""Change of a band's share of scored leads against the previous runs (0.05 = 5 percentage points)."""
EPSILON = 1e-4
"""Floor of a bin's share in the PSI, so that a bin empty on one side counts as rare, not as infinitely far."""
MIN_STRATUM_ROWS = 30
"""An age stratum with fewer training rows is not compared (its reference would be noise); nor are its leads."""
DEFAULT_BAND_SCORES = (91, 71, 41)
NO_REFERENCE = ("the model was trained before training references were kept, so there is nothing to compare "
                "tonight's leads with; retrain to get a reference")
CHUNK_LEADS = 5_000


def calendar_locked(feature: str) -> bool:
    """Whether ``feature`` is a clock or follows the send calendar (see the module doc): no PSI for it."""
    return feature.startswith(("days_since_", "email_sent_")) or (feature.startswith("email_")
                                                                  and feature.endswith("_7d"))


def psi(current: np.ndarray, expected: np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins (shares floored at :data:`EPSILON`)."""
    c, e = np.maximum(current, EPSILON), np.maximum(expected, EPSILON)
    return float(np.sum((c - e) * np.log(c / e)))


def input_drift(reference: FeatureReference | None, current: pd.DataFrame, model: str) -> list[CheckResult]:
    """PSI, new-category share and missing-rate change of each feature of ``current`` (tonight's open leads)
    against the training ``reference``, leads compared with training leads of the same age (see the module doc)."""
    if reference is None:
        return [CheckResult("input_drift", model, None, PSI.warn, PSI.alert, "no_data", NO_REFERENCE)]
    n_strata = max(len(reference.age_edges) - 1, 1)
    first = reference.features[0]
    reference_rows = np.asarray(first.counts).sum(axis=1) + np.asarray(first.missing)
    has_age = reference.age_column is None or reference.age_column in current
    stratum = reference.strata(current) if has_age else np.full(len(current), -1)
    usable = np.flatnonzero(reference_rows >= MIN_STRATUM_ROWS)
    kept = np.isin(stratum, usable)
    population = (f"{int(kept.sum()):,} open leads" + (f" under {AGE_EDGES_DAYS[-1]:g} days old, against training "
                                                        "leads of the same ages" if reference.age_column else ""))
    if not kept.any():
        return [CheckResult("input_drift", model, None, PSI.warn, PSI.alert, "no_data",
                            f"none of tonight's {len(current):,} open leads is of an age the training data covers")]
    weights = np.bincount(stratum[kept], minlength=n_strata) / kept.sum()
    rows = current.loc[kept]
    results = []
    for feature in reference.features:
        values = rows[feature.name] if feature.name in rows else pd.Series(np.nan, index=rows.index)
        codes, missing = feature.codes(values)
        table = np.column_stack([np.asarray(feature.counts, dtype="float64"), np.asarray(feature.missing)])
        by_stratum = table / np.maximum(table.sum(axis=1, keepdims=True), 1.0)
        expected = weights @ by_stratum
        expected_missing = float(expected[-1])
        bins = len(feature.bins) + (feature.kind == "categorical")
        expected_shares = np.zeros(bins)
        expected_shares[: len(feature.bins)] = expected[:-1] / max(1.0 - expected_missing, EPSILON)
        present = codes[~missing]
        shares = np.bincount(present, minlength=bins) / max(len(present), 1)
        if not calendar_locked(feature.name):
            results.append(_psi_result(feature.name, model, shares, expected_shares, feature.bins, len(present),
                                       population))
        if feature.kind == "categorical":
            results.append(_new_category_result(feature.name, model, values[~missing], present, len(feature.bins)))
        change = float(missing.mean()) - expected_missing
        results.append(CheckResult.judged(
            f"missing_rate:{feature.name}", model, abs(change), MISSING_RATE_CHANGE,
            f"{feature.name} is missing for {missing.mean():.1%} of {population}, {expected_missing:.1%} expected "
            f"from training ({change * 100:+.1f} points)"))
    return results


def _psi_result(name: str, model: str, shares: np.ndarray, expected: np.ndarray, labels: tuple[str, ...],
                present: int, population: str) -> CheckResult:
    """The PSI check of one feature, naming the bin that moved most."""
    if present == 0:
        return CheckResult("input_drift:" + name, model, None, PSI.warn, PSI.alert, "no_data",
                           f"{name} is missing for all {population}")
    value = psi(shares, expected)
    worst = int(np.argmax(np.abs(shares - expected)))
    label = labels[worst] if worst < len(labels) else "unseen in the training data"
    return CheckResult.judged("input_drift:" + name, model, value, PSI,
                              f"{name}: PSI {value:.3f} over {population}; most moved: {label} at "
                              f"{shares[worst]:.1%} against {expected[worst]:.1%} in training")


def _new_category_result(name: str, model: str, values: pd.Series, codes: np.ndarray, unseen_code: int
                         ) -> CheckResult:
    """The share of leads (with a value) whose category of ``name`` training never saw, naming the commonest."""
    unseen = codes == unseen_code
    share = float(unseen.mean()) if len(codes) else float("nan")
    top = values[unseen].astype(str).value_counts().head(3).index.tolist()
    return CheckResult.judged(f"new_categories:{name}", model, share, NEW_CATEGORIES,
                              f"{name}: {share:.1%} of tonight's {len(codes):,} leads with one have a value unseen in "
                              "the training data"
                              + (f" (e.g. {', '.join(top)}); the model scores it as missing" if top else ""))


def band_of(scores: pd.Series, band_scores: tuple[int, int, int]) -> np.ndarray:
    """Band A-D of each score, A starting at ``band_scores[0]``, B at ``[1]``, C at ``[2]``."""
    return np.asarray(["D", "C", "B", "A"], dtype=object)[
        np.searchsorted(np.sort(np.asarray(band_scores)), scores.to_numpy(dtype="float64"), side="right")]


def score_drift(current_scores: pd.Series, previous: list[pd.Series], model: str,
                band_scores: tuple[int, int, int] = DEFAULT_BAND_SCORES) -> list[CheckResult]:
    """PSI of tonight's scores (by score decile) against the previous runs' pooled, and each band's share change."""
    pooled = pd.concat([p for p in previous if len(p)], ignore_index=True) if any(len(p) for p in previous) else None
    if pooled is None or not len(current_scores):
        why = "no scoring run to check" if not len(current_scores) else "no earlier scoring run to compare with"
        return [CheckResult("score_drift", model, None, PSI.warn, PSI.alert, "no_data", why)]
    runs = sum(1 for p in previous if len(p))
    value = psi(score_shares(current_scores), score_shares(pooled))
    results = [CheckResult.judged("score_drift", model, value, PSI,
                                  f"scores of the latest run ({len(current_scores):,} leads): PSI {value:.3f} by score "
                                  f"decile against the previous {runs} run(s) pooled ({len(pooled):,} scores)")]
    now, before = band_of(current_scores, band_scores), band_of(pooled, band_scores)
    for band in ("A", "B", "C", "D"):
        share, was = float(np.mean(now == band)), float(np.mean(before == band))
        results.append(CheckResult.judged(f"score_band_share:{band}", model, abs(share - was), BAND_SHARE_CHANGE,
                                          f"band {band} holds {share:.1%} of the latest run's leads against "
                                          f"{was:.1%} in the previous {runs} run(s) ({(share - was) * 100:+.1f} "
                                          "points)"))
    return results


def open_lead_features(engine: Engine, as_of: datetime, max_age_days: float | None = None) -> pd.DataFrame:
    """Features of the leads open at ``as_of`` (younger than ``max_age_days``, when given: older ones are not
    compared), computed in chunks exactly as the nightly batch job does."""
    created_after = as_of - timedelta(days=max_age_days) if max_age_days is not None else None
    ids = open_lead_ids(engine, as_of, created_after)
    parts = [lead_feature_arrays(*lead_chunk_frames(engine, ids[i: i + CHUNK_LEADS], as_of), as_of).frame()
             for i in range(0, len(ids), CHUNK_LEADS)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(LEAD_FEATURE_COLUMNS))


def run_scores(engine: Engine, model_name: str, as_of: datetime, runs: int) -> tuple[pd.Series, list[pd.Series]]:
    """Scores of the latest succeeded leads run of ``model_name`` as of ``as_of`` or before, and of the ``runs``
    before it (latest first); empty when there is none."""
    ledger, history = schema.scoring_runs, schema.lead_score_history
    query = (select(ledger.c.scoring_run_id)
             .where(and_(ledger.c.job == LEAD_JOB.name, ledger.c.status == "succeeded",
                         ledger.c.model_name == model_name, ledger.c.as_of <= as_of))
             .order_by(ledger.c.as_of.desc(), ledger.c.started_at.desc()).limit(runs + 1))
    with engine.connect() as conn:
        chosen = list(conn.execute(query).scalars())
        rows = conn.execute(select(history.c.scoring_run_id, history.c.score)
                            .where(history.c.scoring_run_id.in_(chosen))).all() if chosen else []
    scores = pd.DataFrame(rows, columns=["scoring_run_id", "score"])
    per_run = [scores.loc[scores["scoring_run_id"] == run, "score"].reset_index(drop=True) for run in chosen]
    return (per_run[0], per_run[1:]) if per_run else (pd.Series(dtype="float64"), [])


def latest_run_as_of(engine: Engine) -> datetime | None:
    """The as-of of the latest succeeded leads run, or None."""
    ledger = schema.scoring_runs
    with engine.connect() as conn:
        return conn.execute(select(ledger.c.as_of).where(and_(ledger.c.job == LEAD_JOB.name,
                                                              ledger.c.status == "succeeded"))
                            .order_by(ledger.c.as_of.desc()).limit(1)).scalar()


def drift_checks(engine: Engine, model_uri_or_loaded_model: Any, as_of: datetime | str | None,
                 runs: int = 5) -> list[CheckResult]:
    """Input drift of the leads open at ``as_of`` (None: the latest leads run's as-of, else the CRM's last activity)
    against the model's training reference, and score drift of the latest run against the ``runs`` before it."""
    if isinstance(model_uri_or_loaded_model, str):
        name = registered_identity(model_uri_or_loaded_model)[0]
        scorer = scorer_of(load_registered(model_uri_or_loaded_model))
    else:
        name, scorer = LEAD_MODEL_NAME, scorer_of(model_uri_or_loaded_model)
    at = given_as_of(as_of) or latest_run_as_of(engine) or latest_time(engine, schema.activities.c.occurred_at)
    if at is None:
        return [CheckResult("input_drift", name, None, PSI.warn, PSI.alert, "no_data", "the CRM has no activity yet")]
    current, previous = run_scores(engine, name, at, runs)
    reference = scorer.reference
    oldest = reference.age_edges[-1] if reference is not None and reference.age_column else None
    return (input_drift(reference, open_lead_features(engine, at, oldest), name)
            + score_drift(current, previous, name, band_scores(scorer)))


def band_scores(scorer: LeadScorer) -> tuple[int, int, int]:
    """The scores at which bands A, B and C start (format-1 models: their probability thresholds x 100)."""
    if scorer.scale is not None:
        return tuple(scorer.scale.band_scores)
    return tuple(int(round(t * 100)) for t in scorer.band_thresholds)
