"""Simulated A/B tests: which leads saw which variant, drawn so that each variant's true rate is known.

The experiments are drawn after the leads, from their outcomes, so that a seed's other tables stay exactly
what they were before experiments existed. Each lead created while an experiment is active joins variant
``v`` with a probability that depends on its outcome ``y`` (converted, or clicked an email of those opening
one): ``P(v | y=1) ∝ w_v p_v / p0`` and ``P(v | y=0) ∝ w_v (1 - p_v) / (1 - p0)``, where ``p0`` is the outcome
rate of all eligible leads and ``p_v = p0 + effect_v``. Within variant ``v`` the outcome rate is then ``p_v``
in expectation: the arms look like those of a randomised test with the stated true effects (a variant with
effect 0 everywhere is plain random assignment). Leads join on creation (``assigned_at = created_at``) and
only what they did after it counts, as ``leadval abtest`` counts it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.simulate.config import Experiment, SimulationConfig

OUTCOME_COLUMNS: tuple[str, ...] = ("lead_id", "created_at", "converted", "opened", "clicked")
"""What the experiments select on, per lead (:func:`experiment_outcomes`)."""


def experiment_outcomes(leads: pd.DataFrame, activities: pd.DataFrame) -> pd.DataFrame:
    """Per lead: lead_id, created_at, and whether after its creation it converted, opened and clicked an email."""
    created = leads.set_index("lead_id")["created_at"]
    after = activities["occurred_at"].to_numpy() > created.reindex(activities["lead_id"]).to_numpy()
    kinds = activities["activity_type"].astype(str).to_numpy()
    opened = set(activities["lead_id"].to_numpy()[after & (kinds == "email_open")])
    clicked = set(activities["lead_id"].to_numpy()[after & (kinds == "email_click")])
    ids = leads["lead_id"]
    return pd.DataFrame({
        "lead_id": ids.to_numpy(),
        "created_at": leads["created_at"].to_numpy(),
        "converted": (leads["converted_at"] > leads["created_at"]).to_numpy(),
        "opened": ids.isin(opened).to_numpy(),
        "clicked": ids.isin(clicked).to_numpy(),
    })


def simulate_experiments(
    config: SimulationConfig, outcomes: pd.DataFrame, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of ``experiment_assignments`` and of ``truth_experiments`` for every experiment of ``config``."""
    assignments, truth = [], []
    for experiment in config.experiments:
        rows, true_rates = _assign(config, experiment, outcomes, rng)
        assignments.append(rows)
        truth.append(true_rates)
    if not assignments:
        return pd.DataFrame(), pd.DataFrame()
    return pd.concat(assignments, ignore_index=True), pd.concat(truth, ignore_index=True)


def _assign(
    config: SimulationConfig, experiment: Experiment, outcomes: pd.DataFrame, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One experiment's assignments and its true rates per variant."""
    starts = pd.Timestamp(config.starts_at)
    span = pd.Timedelta(seconds=config.span_seconds)
    begin, end = (starts + fraction * span for fraction in experiment.active)
    eligible = outcomes[(outcomes["created_at"] >= begin) & (outcomes["created_at"] < end)]
    if experiment.metric == "conversion":
        trial = np.ones(len(eligible), dtype=bool)
        success = eligible["converted"].to_numpy()
    else:
        trial = eligible["opened"].to_numpy()
        success = eligible["clicked"].to_numpy() & trial
    baseline = float(success[trial].mean()) if trial.any() else float("nan")
    effects = np.asarray(experiment.effects, dtype=float)
    rates = np.clip(baseline + effects, 0.0, 1.0)
    weights = np.full(len(effects), 1.0 / len(effects))
    if 0 < baseline < 1:
        for_success, for_failure = weights * rates / baseline, weights * (1 - rates) / (1 - baseline)
    else:
        for_success = for_failure = weights
    scale = 1.0 / max(for_success.sum(), for_failure.sum())
    chances = np.where(success[:, None], for_success * scale, for_failure * scale)
    chances[~trial] = weights * scale
    cumulative = np.cumsum(chances, axis=1)
    picked = (rng.random(len(eligible))[:, None] >= cumulative).sum(axis=1)
    joined = picked < len(effects)
    assignments = pd.DataFrame({
        "experiment": experiment.name,
        "lead_id": eligible["lead_id"].to_numpy()[joined],
        "variant": np.array(experiment.variants, dtype=object)[picked[joined]],
        "assigned_at": eligible["created_at"].to_numpy()[joined],
    })
    truth = pd.DataFrame({
        "experiment": experiment.name,
        "variant": list(experiment.variants),
        "metric": experiment.metric,
        "is_control": np.arange(len(effects)) == 0,
        "true_rate": rates,
        "true_effect": rates - rates[0],
        "eligible_rate": baseline,
        "eligible_from": begin,
        "eligible_to": end,
        "description": experiment.description,
    })
    return assignments, truth
