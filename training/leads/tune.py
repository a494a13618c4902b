"""A time-boxed hyper-parameter search for the lead model, on the training split only.

:func:`tune_lead_model` searches the booster's parameters with Optuna's TPE sampler (seeded), scoring each
candidate by LightGBM's own stratified k-fold cross-validation on the training rows (mean ROC AUC, early
stopping inside each fold): the validation split (early stopping and calibration of the final model) and
the test split (the figures and the promotion gate) are never looked at. The first candidate is the
configuration as given, so the search can only keep or beat it on that measure. The search stops at the time
box, cutting the candidate in progress short; the final model is then fitted as usual with the best
parameters. Given the seed, the candidates come in the same order and score the same: how many fit in the
box depends on the machine, so pass ``max_trials`` for an exactly repeatable search.

TPE rather than a random search: it proposes candidates from the ones that did well, so a short box
spends more of its trials near the good region. Optuna is imported only here, and only when tuning.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.errors import InvalidInput
from training.leads.fit import LeadModelConfig, booster_params
from training.leads.spec import FeatureSpec

FOLDS = 3
STOPPING_ROUNDS = 50
STARTUP_TRIALS = 6
SEARCHED = ("learning_rate", "num_leaves", "max_depth", "min_child_samples", "feature_fraction",
            "bagging_fraction", "lambda_l2", "max_cat_to_onehot", "imbalance")


@dataclass(frozen=True)
class TuningResult:
    """The best configuration found, its cross-validated ROC AUC on the training split against the starting
    configuration's, and how many candidates were tried in how long."""

    config: LeadModelConfig
    params: dict[str, Any]
    cv_roc_auc: float
    start_cv_roc_auc: float
    trials: int
    seconds: float
    folds: int = FOLDS

    def as_dict(self) -> dict[str, Any]:
        """The JSON-ready summary (``--json`` ``tuning`` and the MLflow run)."""
        return {"params": self.params, "cv_roc_auc": round(self.cv_roc_auc, 4),
                "start_cv_roc_auc": round(self.start_cv_roc_auc, 4), "trials": self.trials,
                "seconds": round(self.seconds, 1), "folds": self.folds}


class _OutOfTime(Exception):
    """The time box ended during a candidate's cross-validation."""


def _search_space(base: LeadModelConfig, rows: int) -> dict[str, tuple]:
    """Each searched parameter's range (low, high) or choices, widened to hold ``base``'s own value, so the
    first candidate is exactly the configuration as given. min_child_samples: 5 to 500, at most a 20th of the
    rows (at least 10) so small files can split."""
    ranges = {"learning_rate": (0.02, 0.2), "num_leaves": (4, 31), "max_depth": (2, 6),
              "min_child_samples": (5, max(10, min(500, rows // 20))), "feature_fraction": (0.4, 1.0),
              "bagging_fraction": (0.5, 1.0), "lambda_l2": (0.01, 100.0)}
    space: dict[str, tuple] = {name: (min(low, getattr(base, name)), max(high, getattr(base, name)))
                               for name, (low, high) in ranges.items()}
    space["max_cat_to_onehot"] = tuple(sorted({4, 8, 32, base.max_cat_to_onehot}))
    space["imbalance"] = tuple(dict.fromkeys(("none", "sqrt", base.imbalance)))
    return space


def _suggest(trial: Any, space: dict[str, tuple], base: LeadModelConfig) -> LeadModelConfig:
    logs = {"learning_rate", "min_child_samples", "lambda_l2"}
    chosen: dict[str, Any] = {}
    for name in SEARCHED:
        values = space[name]
        if name in ("max_cat_to_onehot", "imbalance"):
            chosen[name] = trial.suggest_categorical(name, list(values))
        elif isinstance(getattr(base, name), int):
            chosen[name] = trial.suggest_int(name, values[0], values[1], log=name in logs and values[0] > 0)
        else:
            chosen[name] = trial.suggest_float(name, values[0], values[1], log=name in logs and values[0] > 0)
    return replace(base, **chosen)


def cv_roc_auc(data: lgb.Dataset, outcome: np.ndarray, config: LeadModelConfig, folds: list, deadline: float) -> float:
    """Mean ROC AUC over ``folds`` of LightGBM trained with ``config`` (early stopping in each fold)."""

    def check_time(_: Any) -> None:
        if time.monotonic() > deadline:
            raise _OutOfTime

    params = {**booster_params(config, outcome), "feature_pre_filter": False}
    result = lgb.cv(params, data, num_boost_round=config.max_rounds, folds=folds,
                    callbacks=[lgb.early_stopping(min(STOPPING_ROUNDS, config.early_stopping_rounds), verbose=False),
                               check_time])
    return float(max(result["valid auc-mean"]))


def tune_lead_model(train: pd.DataFrame, spec: FeatureSpec, base: LeadModelConfig, seconds: float, label: str,
                    max_trials: int | None = None, folds: int = FOLDS) -> TuningResult:
    """Search ``base``'s booster parameters for ``seconds`` (see the module doc) on ``train`` only."""
    import optuna
    from sklearn.model_selection import StratifiedKFold

    if seconds <= 0:
        raise InvalidInput(f"--tune: a number of seconds above 0, got {seconds}")
    started = time.monotonic()
    deadline = started + seconds
    outcome = train[label].to_numpy().astype("int8")
    if min(int(outcome.sum()), int(len(outcome) - outcome.sum())) < folds:
        raise InvalidInput(f"--tune: the training split has too few converters or non-converters for {folds} folds")
    data = lgb.Dataset(spec.matrix(train), outcome, feature_name=list(spec.features),
                       categorical_feature=list(range(len(spec.categorical))), free_raw_data=False,
                       params={"feature_pre_filter": False, "verbosity": -1})
    space = _search_space(base, len(outcome))
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=base.seed).split(np.zeros(len(outcome)), outcome))

    def objective(trial: optuna.Trial) -> float:
        try:
            return cv_roc_auc(data, outcome, _suggest(trial, space, base), splits, deadline)
        except _OutOfTime:
            trial.study.stop()
            raise optuna.TrialPruned("out of time") from None

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=base.seed, n_startup_trials=STARTUP_TRIALS, multivariate=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial({name: getattr(base, name) for name in SEARCHED})
    study.optimize(objective, n_trials=max_trials, timeout=seconds, gc_after_trial=False)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    elapsed = time.monotonic() - started
    if not done:
        return TuningResult(base, {}, float("nan"), float("nan"), 0, elapsed, folds)
    best = max(done, key=lambda t: (t.value, -t.number))
    start_value = done[0].value if done[0].number == 0 else float("nan")
    return TuningResult(replace(base, **best.params), dict(best.params), float(best.value), float(start_value),
                        len(done), elapsed, folds)
