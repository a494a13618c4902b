"""Run facts and champion promotion against a real MLflow SQLite store."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest

from features.errors import LeadvalError
from tests.mlflow_stores import empty_tracking_uri
from training.registry import (
    ModelNotFound,
    champion_version,
    load_registered,
    register_and_gate,
    version_tags,
)
from training.tracking import (
    RunNotReadable,
    dataset_fingerprint,
    log_run_facts,
    model_requirements,
    read_run_tags,
    use_experiment,
    use_tracking,
)


class ConstantModel(mlflow.pyfunc.PythonModel):
    """A model that predicts one number, enough to exercise the registry."""

    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.Series:
        return pd.Series([self.value] * len(model_input))


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mlflow")
    use_tracking(empty_tracking_uri(root))
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


def test_a_discredited_or_unscorable_champion_does_not_block_and_tags_are_kept(tracking: Path) -> None:
    inflated = register_and_gate(_log(0.98), "caveats", "auc", 0.98, _holdout_metric, True,
                                 tags={"leaky_columns": "status_tag"})
    assert inflated.champion and version_tags(f"models:/caveats/{inflated.version}")["leaky_columns"] == "status_tag"
    honest = register_and_gate(_log(0.90), "caveats", "auc", 0.90, _holdout_metric, True,
                               champion_caveat=lambda uri: "used columns flagged as leaky (status_tag)"
                               if version_tags(uri).get("leaky_columns") else None)
    assert honest.champion and honest.champion_metric == pytest.approx(0.98)
    assert honest.reason == (f"champion v{inflated.version} used columns flagged as leaky (status_tag): its auc "
                             "0.9800 on the same holdout does not block this candidate's 0.9000")
    weaker = register_and_gate(_log(0.80), "caveats", "auc", 0.80, _holdout_metric, True,
                               champion_caveat=lambda uri: None)
    assert not weaker.champion and "worse than" in weaker.reason
    other = register_and_gate(_log(0.70), "caveats", "auc", 0.70, lambda uri: float("-inf"), True)
    assert other.champion and "cannot score this holdout" in other.reason
    assert version_tags("runs:/abc/model") == {} and version_tags("models:/caveats/999") == {}


def test_run_records_config_commit_and_fingerprint(tracking: Path) -> None:
    data = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    with mlflow.start_run() as run:
        log_run_facts({"horizon_days": 90, "windows": [7, 30]}, data)
    logged = mlflow.get_run(run.info.run_id)
    assert logged.data.params["horizon_days"] == "90"
    assert logged.data.tags["dataset_fingerprint"] == dataset_fingerprint(data)
    assert logged.data.tags["git_commit"]
    assert dataset_fingerprint(data) != dataset_fingerprint(data.assign(a=[1, 2, 4]))
    assert read_run_tags(run.info.run_id, mlflow.get_tracking_uri())["dataset_fingerprint"] == dataset_fingerprint(data)


def test_reading_a_runs_tags_says_why_it_cannot_and_creates_no_store(tracking: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "mlflow.db"
    with pytest.raises(RunNotReadable, match=f"no MLflow store at {missing}"):
        read_run_tags("0123456789abcdef", f"sqlite:///{missing}")
    assert not missing.parent.exists()
    with pytest.raises(RunNotReadable, match="run 0123456789abcdef not readable at sqlite:"):
        read_run_tags("0123456789abcdef", mlflow.get_tracking_uri())


def test_unknown_model_is_a_clear_error(tracking: Path) -> None:
    with pytest.raises(ModelNotFound, match="no-such-model"):
        load_registered("models:/no-such-model@champion")


def test_a_missing_local_store_is_never_created_when_reading_a_model(tracking: Path, tmp_path: Path) -> None:
    from training.registry import missing_store, registered_identity

    previous = mlflow.get_tracking_uri()
    missing = tmp_path / "nowhere" / "mlflow.db"
    uri = f"sqlite:///{missing}"
    try:
        use_tracking(uri, create=False)
        for read in (load_registered, registered_identity):
            with pytest.raises(ModelNotFound) as caught:
                read("models:/lead-scoring@champion")
            assert str(caught.value) == (f"cannot load model 'models:/lead-scoring@champion': {missing_store(uri)}")
            assert f"no MLflow store at {missing} ({uri}); train a model first" in str(caught.value)
            assert "\n" not in str(caught.value)
        assert not missing.parent.exists()
        assert missing_store(previous) is None and missing_store("http://127.0.0.1:5000") is None
    finally:
        use_tracking(previous)
