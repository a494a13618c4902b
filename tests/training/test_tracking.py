"""Run facts and champion promotion against a real MLflow SQLite store."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest

from features.errors import LeadvalError
from training.registry import ModelNotFound, champion_version, load_registered, register_and_gate
from training.tracking import dataset_fingerprint, log_run_facts, model_requirements, use_experiment, use_tracking


class ConstantModel(mlflow.pyfunc.PythonModel):
    """A model that predicts one number, enough to exercise the registry."""

    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.Series:
        return pd.Series([self.value] * len(model_input))


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mlflow")
    use_tracking(f"sqlite:///{root / 'mlflow.db'}")
    use_experiment("gating", str(root / "artifacts"))
    return root


def _log(value: float) -> str:
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=ConstantModel(value),
                                       pip_requirements=model_requirements())
    return info.model_uri


def _holdout_metric(uri: str) -> float:
    return float(mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"x": [1]})).iloc[0])


def test_gating_promotes_better_and_keeps_champion_over_worse(tracking: Path) -> None:
    first = register_and_gate(_log(0.70), "gated", "auc", 0.70, _holdout_metric, higher_is_better=True)
    assert first.champion and first.reason == "no champion yet"
    worse = register_and_gate(_log(0.60), "gated", "auc", 0.60, _holdout_metric, higher_is_better=True)
    assert not worse.champion
    assert worse.champion_metric == pytest.approx(0.70)
    assert champion_version("gated") == first.version
    better = register_and_gate(_log(0.75), "gated", "auc", 0.75, _holdout_metric, higher_is_better=True)
    assert better.champion and champion_version("gated") == better.version
    lower_is_better = register_and_gate(_log(0.74), "gated", "mae", 0.74, _holdout_metric,
                                        higher_is_better=False)
    assert lower_is_better.champion


def test_always_and_never_override_the_metric(tracking: Path) -> None:
    base = register_and_gate(_log(0.9), "policy", "auc", 0.9, _holdout_metric, True)
    forced = register_and_gate(_log(0.1), "policy", "auc", 0.1, _holdout_metric, True, promote="always")
    assert forced.champion and champion_version("policy") == forced.version != base.version
    held = register_and_gate(_log(0.99), "policy", "auc", 0.99, _holdout_metric, True, promote="never")
    assert not held.champion and champion_version("policy") == forced.version
    with pytest.raises(LeadvalError, match="--promote"):
        register_and_gate(_log(0.5), "policy", "auc", 0.5, _holdout_metric, True, promote="sometimes")


def test_run_records_config_commit_and_fingerprint(tracking: Path) -> None:
    data = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    with mlflow.start_run() as run:
        log_run_facts({"horizon_days": 90, "windows": [7, 30]}, data)
    logged = mlflow.get_run(run.info.run_id)
    assert logged.data.params["horizon_days"] == "90"
    assert logged.data.tags["dataset_fingerprint"] == dataset_fingerprint(data)
    assert logged.data.tags["git_commit"]
    assert dataset_fingerprint(data) != dataset_fingerprint(data.assign(a=[1, 2, 4]))


def test_unknown_model_is_a_clear_error(tracking: Path) -> None:
    with pytest.raises(ModelNotFound, match="no-such-model"):
        load_registered("models:/no-such-model@champion")
