"""``leadval models list|rollback`` on a real MLflow store with two lead-scoring versions trained on a small CRM;
the batch job then scores with the rolled-back champion."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import pytest

from features.crm import schema
from features.crm.store import connect, read_frame
from features.simulate.config import SimulationConfig
from tests.leadval_cli import last_json, run_leadval
from tests.mlflow_stores import empty_tracking_uri
from tests.serving.conftest import simulated_crm
from training.leads.data.splits import CrmTrainingConfig, crm_splits
from training.leads.job import train_and_register

SMALL = SimulationConfig(n_leads=1_000, n_customers=100, seed=3, end=datetime(2025, 12, 31))


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, str]:
    """(CRM URL, MLflow store file, the CRM's last day): lead-scoring v1 and v2, v2 the champion."""
    root = tmp_path_factory.mktemp("models_cli")
    crm_url = f"sqlite:///{root / 'crm.db'}"
    as_of = simulated_crm(crm_url, SMALL)
    tracking_uri = empty_tracking_uri(root)
    config = CrmTrainingConfig()
    engine = connect(crm_url)
    splits = crm_splits(engine, config)
    engine.dispose()
    for _ in range(2):
        train_and_register(splits, config, tracking_uri, str(root / "artifacts"), promote="always")
    return crm_url, root / "mlflow.db", as_of


@pytest.fixture
def store(two_versions: tuple[str, Path, str], tmp_path: Path) -> tuple[str, str, str]:
    """(CRM URL copy, tracking URI of a copy of the store, as-of) of the test's own."""
    crm_url, database, as_of = two_versions
    shutil.copyfile(database, tmp_path / "mlflow.db")
    shutil.copyfile(crm_url.removeprefix("sqlite:///"), tmp_path / "crm.db")
    return f"sqlite:///{tmp_path / 'crm.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}", as_of


def test_rollback_restores_the_previous_champion_and_the_batch_job_scores_with_it(store) -> None:
    crm_url, tracking_uri, as_of = store
    ran = run_leadval("models", "rollback", "lead-scoring", "--tracking-uri", tracking_uri, "--json")
    out = last_json(ran)
    assert (out["from_version"], out["champion_version"]) == ("2", "1")
    assert out["reason"].startswith("rolled back from v2 at ") and out["reason"].endswith("by leadval models rollback")
    run_leadval("score", "leads", "--db", crm_url, "--tracking-uri", tracking_uri, "--as-of", as_of)
    engine = connect(crm_url, create=False)
    runs = read_frame(engine, schema.scoring_runs)
    engine.dispose()
    assert runs[["model_name", "model_version"]].values.tolist() == [["lead-scoring", "1"]]


def test_list_shows_versions_metrics_tags_and_the_champion(store) -> None:
    _, tracking_uri, _ = store
    ran = run_leadval("models", "list", "--tracking-uri", tracking_uri, "--json")
    [model] = last_json(ran)["models"]
    assert (model["name"], model["champion_version"], model["rollback_to"]) == ("lead-scoring", "2", "1")
    assert [v["version"] for v in model["versions"]] == ["1", "2"]
    assert [v["champion"] for v in model["versions"]] == [False, True]
    assert {"roc_auc", "pr_auc", "lift_top10", "ece"} <= set(model["versions"][1]["metrics"])
    assert model["versions"][1]["tags"]["champion_reason"] == "--promote always"
    assert "lead-scoring: 2 version(s), @champion v2, rollback goes to v1" in ran.stdout
    lines = ran.stdout.splitlines()
    assert lines[3].startswith("  v2  ") and lines[3].endswith("@champion") and " roc_auc 0." in lines[3]
    assert lines[4].strip() == "champion_reason: --promote always"


@pytest.mark.parametrize(("args", "message"), [
    (["lead-scorin"], "error: no registered model 'lead-scorin'; known: lead-scoring\n"),
    (["lead-scoring", "--to", "9"], "error: lead-scoring has no version '9'; known: 1, 2\n"),
    (["lead-scoring", "--to", "2"], "error: v2 is already the @champion of lead-scoring\n"),
])
def test_unknown_names_and_versions_are_one_line_naming_the_known_ones(store, args, message) -> None:
    _, tracking_uri, _ = store
    ran = run_leadval("models", "rollback", *args, "--tracking-uri", tracking_uri, check=False)
    assert (ran.returncode, ran.stderr, ran.stdout) == (1, message, "")


def test_a_missing_store_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    ran = run_leadval("models", "list", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", check=False)
    assert ran.returncode == 1 and ran.stderr.startswith("error: no MLflow store at ")
    assert not (tmp_path / "none.db").exists()
