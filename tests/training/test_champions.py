"""Champion history and rollback over a real MLflow SQLite store, with versions registered from a tiny folder."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from features.errors import InvalidInput
from tests.mlflow_stores import empty_tracking_uri
from training.champions import champion_stack, list_models, previous_champion, rollback
from training.registry import Promote, champion_history, champion_version, register_and_gate
from training.tracking import use_tracking

NAME = "lead-scoring"


@pytest.fixture
def client(tmp_path: Path) -> MlflowClient:
    """A client of a new, empty store, which MLflow points at too (with an experiment of its own)."""
    use_tracking(empty_tracking_uri(tmp_path))
    mlflow.set_experiment("champions")
    return MlflowClient()


def _register(folder: Path, auc: float, promote: Promote = Promote.auto) -> str:
    """Register a run's (empty) model folder with ``roc_auc`` logged on its run; returns the version."""
    with mlflow.start_run() as run:
        mlflow.log_metrics({"roc_auc": auc, "pr_auc": auc / 2})
        (folder / "MLmodel").write_text("flavors: {}\n")
        mlflow.log_artifact(str(folder / "MLmodel"), "model")
        return register_and_gate(f"runs:/{run.info.run_id}/model", NAME, "roc_auc", auc, lambda uri: 0.5,
                                 higher_is_better=True, promote=promote).version


def test_a_rollback_pops_back_to_its_target_so_two_rollbacks_go_two_champions_back() -> None:
    history = [{"version": "1", "how": "promotion"}, {"version": "2", "how": "promotion"},
               {"version": "3", "how": "promotion"}, {"version": "2", "how": "rollback"}]
    assert champion_stack(history) == ["1", "2"]
    assert previous_champion(history, "2", ["1", "2", "3"]) == "1"


def test_without_history_the_previous_champion_is_the_highest_version_below() -> None:
    assert previous_champion([], "4", ["1", "2", "4", "5"]) == "2"
    assert previous_champion([], "1", ["1", "2"]) is None
    assert previous_champion([{"version": "3", "how": "promotion"}], "5", ["1", "3", "5"]) == "3"  # out of sync


def test_promotions_are_recorded_and_rollback_restores_the_previous_champion(client: MlflowClient,
                                                                             tmp_path: Path) -> None:
    versions = [_register(tmp_path, auc) for auc in (0.6, 0.7, 0.8)]
    assert versions == ["1", "2", "3"] and champion_version(NAME) == "3"
    assert [entry["version"] for entry in champion_history(client, NAME)] == ["1", "2", "3"]
    assert client.get_model_version(NAME, "3").tags["promotion_reason"].startswith("roc_auc 0.8000 is at least")

    done = rollback(client, NAME)
    assert (done.from_version, done.to_version, champion_version(NAME)) == ("3", "2", "2")
    tags = client.get_model_version(NAME, "2").tags
    assert tags["champion_reason"].startswith("rolled back from v3 at ") and "by leadval models rollback" in tags[
        "champion_reason"]
    assert client.get_model_version(NAME, "3").tags["rolled_back"].startswith("replaced by v2")
    assert rollback(client, NAME).to_version == "1"  # again: one more champion back, not to v3
    assert rollback(client, NAME, to="v3").to_version == "3"


def test_a_candidate_that_is_not_promoted_leaves_the_history_alone(client: MlflowClient, tmp_path: Path) -> None:
    _register(tmp_path, 0.7)
    _register(tmp_path, 0.7, Promote.never)
    assert champion_version(NAME) == "1" and len(champion_history(client, NAME)) == 1


def test_unknown_names_and_versions_are_refused_naming_the_known_ones(client: MlflowClient, tmp_path: Path) -> None:
    _register(tmp_path, 0.7)
    with pytest.raises(InvalidInput, match=r"^no registered model 'lead-scorin'; known: lead-scoring$"):
        rollback(client, "lead-scorin")
    with pytest.raises(InvalidInput, match=r"^lead-scoring has no version '7'; known: 1$"):
        rollback(client, NAME, to="7")
    with pytest.raises(InvalidInput, match="no champion before v1"):
        rollback(client, NAME)


def test_the_listing_shows_each_version_with_its_run_metrics_and_the_champion(client: MlflowClient,
                                                                                tmp_path: Path) -> None:
    _register(tmp_path, 0.6)
    _register(tmp_path, 0.8)
    [model] = list_models(client)
    assert (model["name"], model["champion_version"], model["rollback_to"]) == (NAME, "2", "1")
    first, second = model["versions"]
    assert first["metrics"] == {"roc_auc": 0.6, "pr_auc": 0.3} and not first["champion"] and second["champion"]
    assert second["created_at"].endswith("Z") and "promotion_reason" in second["tags"]
