"""The time-boxed hyper-parameter search: on the training split only, within its box, repeatable given a seed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from features.lead_labels import LABEL_COLUMN
from serving.cli.train import train_leads
from tests.mlflow_stores import empty_tracking_uri
from training.leads.data.splits import TableTrainingConfig, table_splits
from training.leads.fit import LeadModelConfig
from training.leads.tune import tune_lead_model
from training.tracking import use_tracking


def small_table(n: int = 1_200, seed: int = 0) -> pd.DataFrame:
    """Leads whose conversion depends on an interaction a shallow default model only half finds."""
    rng = np.random.default_rng(seed)
    size = rng.choice(["small", "mid", "large"], n)
    visits = rng.poisson(3, n).astype(float)
    age_days = rng.exponential(60, n)
    logit = -1.2 + 0.3 * visits - 0.01 * age_days + 1.2 * ((size == "large") & (visits > 3))
    return pd.DataFrame({"size": size, "visits": visits, "age_days": age_days.round(1),
                         "won": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)})


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("tune") / "small.csv"
    return table_splits(small_table(), TableTrainingConfig(str(path), "won"))


def test_search_stays_in_its_time_box_and_never_does_worse_than_the_start_in_cv(splits) -> None:
    started = time.monotonic()
    result = tune_lead_model(splits.train, splits.spec, LeadModelConfig(), 2.0, LABEL_COLUMN)
    took = time.monotonic() - started
    assert took < 4.0 and result.seconds < 3.0
    assert result.trials >= 2
    assert result.cv_roc_auc >= result.start_cv_roc_auc > 0.6
    assert set(result.params) <= set(LeadModelConfig.__dataclass_fields__)
    assert result.config.max_rounds == LeadModelConfig().max_rounds  # only the searched parameters change


def test_search_is_repeatable_given_the_seed(splits) -> None:
    first = tune_lead_model(splits.train, splits.spec, LeadModelConfig(seed=5), 60.0, LABEL_COLUMN, max_trials=4)
    again = tune_lead_model(splits.train, splits.spec, LeadModelConfig(seed=5), 60.0, LABEL_COLUMN, max_trials=4)
    assert first.params == again.params and first.cv_roc_auc == again.cv_roc_auc and first.trials == 4
    other = tune_lead_model(splits.train, splits.spec, LeadModelConfig(seed=6), 60.0, LABEL_COLUMN, max_trials=4)
    assert other.params != first.params


def test_the_first_candidate_is_the_configuration_as_given(splits) -> None:
    """Even where it lies outside the searched ranges (100 rows per leaf, on a training split of ~770 rows):
    a search that finds nothing better trains exactly the given model."""
    given = LeadModelConfig(min_child_samples=100, max_cat_to_onehot=6, imbalance="balanced", lambda_l2=0.0)
    once = tune_lead_model(splits.train, splits.spec, given, 60.0, LABEL_COLUMN, max_trials=1)
    assert once.trials == 1 and once.config == given and once.cv_roc_auc == once.start_cv_roc_auc


def test_cli_tune_logs_the_best_parameters(tmp_path: Path) -> None:
    path = tmp_path / "small.csv"
    small_table().to_csv(path, index=False)
    tracking = empty_tracking_uri(tmp_path)
    app = typer.Typer()
    app.command()(train_leads)
    outcome = CliRunner(env={"LEADVAL_ARTIFACT_ROOT": str(tmp_path / "artifacts")}).invoke(
        app, ["--table", str(path), "--target", "won", "--tune", "2", "--tracking-uri", tracking, "--json"])
    assert outcome.exit_code == 0, outcome.output
    result = json.loads(outcome.stdout.strip().splitlines()[-1])
    tuning = result["tuning"]
    assert tuning["trials"] >= 1 and tuning["seconds"] <= 3.0 and tuning["folds"] == 3
    assert "tuning: searching for 2 s on the training split" in outcome.stderr
    use_tracking(tracking)
    run = mlflow.get_run(result["run_id"])
    assert {f"tuned.{k}" for k in tuning["params"]} <= set(run.data.params)
    assert run.data.metrics["tune_trials"] == tuning["trials"]
    assert json.loads(run.data.params["tune_seconds"]) == 2.0
