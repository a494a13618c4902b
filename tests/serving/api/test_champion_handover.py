"""The champions ``leadval serve`` hands its workers: the same models and facts, and a worker that starts without
MLflow or scikit-learn; the champions kept beside a local SQLite store, handed over again only for the exact registry
state they were loaded from, never after the registry changed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from serving.api.champion_handover import (
    HANDOVER_ENV,
    KEPT_SUFFIX,
    hand_over,
    hand_over_kept,
    hand_over_nothing,
    handed_over,
    keep_champions,
    store_state,
)
from serving.api.champions import NothingToServe, load_champions
from serving.api.schemas import ScoreLeadsRequest
from serving.api.service import WARM_UP_LEADS, lead_scores
from serving.cli.serve import check_models
from tests.conftest import REPO_ROOT
from tests.serving.conftest import TrainedStore, start_server, stop_server
from training.registry import CHAMPION_ALIAS, CLV_MODEL_NAME, LEAD_MODEL_NAME


def test_the_handed_over_champions_score_and_say_what_the_registry_s_do(trained_store: TrainedStore,
                                                                        tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = load_champions(trained_store.tracking_uri)
    path = tmp_path / "champions.pickle"
    hand_over(loaded, path)
    monkeypatch.setenv(HANDOVER_ENV, str(path))
    handed = handed_over()
    assert handed is not None and handed is not loaded
    assert set(handed.loaded) == {LEAD_MODEL_NAME, CLV_MODEL_NAME} and handed.missing == {}
    for name, model in loaded.loaded.items():
        twin = handed.loaded[name]
        assert (twin.version, twin.run_id, twin.trained_at, twin.metrics, twin.data_end) == (
            model.version, model.run_id, model.trained_at, model.metrics, model.data_end)
    assert handed.loaded[CLV_MODEL_NAME].model == loaded.loaded[CLV_MODEL_NAME].model
    request = ScoreLeadsRequest.model_validate(WARM_UP_LEADS)
    assert lead_scores(handed, request) == lead_scores(loaded, request)
    assert not list(tmp_path.glob("*.partial"))


def test_without_a_handover_the_worker_loads_itself_and_a_refusal_stops_it(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch,
                                                                           capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv(HANDOVER_ENV, raising=False)
    assert handed_over() is None
    path = tmp_path / "champions.pickle"
    monkeypatch.setenv(HANDOVER_ENV, str(path))
    assert handed_over(wait_s=0.05) is None
    assert "did not hand over the champions within 0 s; this worker loads them from the registry itself" in (
        capsys.readouterr().err)
    hand_over_nothing("no model to serve from sqlite:///x.db: models:/clv@champion: no champion", path)
    with pytest.raises(NothingToServe, match="^no model to serve from sqlite:///x.db: models:/clv@champion"):
        handed_over()


WORKER = """
import json, sys
from serving.api.service import LeadvalService
service = LeadvalService()
print(json.dumps({"serving": sorted(service.served.loaded), "models": service.models_report().model_dump(mode="json"),
                  "imported": sorted(m for m in ("mlflow", "sklearn", "lightgbm") if m in sys.modules)}))
"""


@pytest.mark.slow  # a worker's start-up in a process of its own
def test_a_worker_handed_the_champions_starts_without_mlflow_or_scikit_learn(trained_store: TrainedStore,
                                                                            tmp_path: Path) -> None:
    path = tmp_path / "champions.pickle"
    hand_over(load_champions(trained_store.tracking_uri), path)
    worker = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", HANDOVER_ENV)}
    handed = subprocess.run([sys.executable, "-c", WORKER], env={**worker, HANDOVER_ENV: str(path)}, cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    itself = subprocess.run([sys.executable, "-c", WORKER], cwd=REPO_ROOT, capture_output=True, text=True,
                            env={**worker, "MLFLOW_TRACKING_URI": trained_store.tracking_uri}, timeout=120)
    assert handed.returncode == 0 and itself.returncode == 0, handed.stderr[-2000:] + itself.stderr[-2000:]
    handed_facts, own_facts = json.loads(handed.stdout.splitlines()[-1]), json.loads(itself.stdout.splitlines()[-1])
    assert handed_facts["imported"] == ["lightgbm"]
    assert own_facts["imported"] == ["lightgbm", "mlflow", "sklearn"]  # what the handover spares a worker
    assert handed_facts["serving"] == own_facts["serving"] == [CLV_MODEL_NAME, LEAD_MODEL_NAME]
    assert handed_facts["models"] == own_facts["models"]


KEPT_WARNING = "warning: kept with the champions"


@pytest.fixture
def store(trained_store: TrainedStore, tmp_path: Path) -> str:
    """A copy of the session's store (its artifacts stay where they are), free to be changed."""
    shutil.copyfile(trained_store.tracking_uri.removeprefix("sqlite:///"), tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _new_champion_version(uri: str) -> str:
    """Register the lead champion's files again as a new version and make it the champion; its version."""
    client = MlflowClient(uri, uri)
    current = client.get_model_version_by_alias(LEAD_MODEL_NAME, CHAMPION_ALIAS)
    files = client.get_model_version_download_uri(LEAD_MODEL_NAME, current.version)
    version = client.create_model_version(LEAD_MODEL_NAME, files, current.run_id)
    client.set_registered_model_alias(LEAD_MODEL_NAME, CHAMPION_ALIAS, version.version)
    return str(version.version)


def test_the_store_state_changes_with_every_registry_write_and_only_then(store: str, tmp_path: Path) -> None:
    before = store_state(store)
    assert before is not None
    load_champions(store)
    check_models(store)
    assert store_state(store) == before  # reading the registry writes nothing
    MlflowClient(store, store).set_registered_model_tag(LEAD_MODEL_NAME, "owner", "sales")
    assert store_state(store) not in (None, before)
    (tmp_path / "mlflow.db-wal").write_bytes(b"frames")  # WAL mode: the main file does not show every change
    assert store_state(store) is None
    (tmp_path / "other.db").write_text("no database")
    assert store_state(f"sqlite:///{tmp_path / 'other.db'}") is None
    assert store_state("postgresql+psycopg://user@127.0.0.1/mlflow") is None
    assert store_state("http://127.0.0.1:5000") is None


def test_kept_champions_are_handed_over_for_their_state_only_and_whole(store: str, tmp_path: Path) -> None:
    loaded = tmp_path / "loaded.pickle"
    hand_over(load_champions(store), loaded)
    handover = tmp_path / "serve" / "champions.pickle"
    handover.parent.mkdir()
    assert hand_over_kept(store, handover) is None  # nothing kept yet
    state = store_state(store)
    assert keep_champions(store, state, loaded, [KEPT_WARNING])
    assert sorted(p.name for p in (tmp_path / f"mlflow.db{KEPT_SUFFIX}").iterdir()) == [
        "champions.json", "champions.pickle"]
    kept = hand_over_kept(store, handover)
    assert kept is not None and kept.warnings == [KEPT_WARNING]
    assert handover.read_bytes() == loaded.read_bytes()
    assert list(handover.parent.iterdir()) == [handover]

    handover.unlink()
    pickle = tmp_path / f"mlflow.db{KEPT_SUFFIX}" / "champions.pickle"
    whole = pickle.read_bytes()
    pickle.write_bytes(whole[:-1] + bytes([whole[-1] ^ 1]))
    assert hand_over_kept(store, handover) is None  # a kept file that is not whole is not handed over
    assert list(handover.parent.iterdir()) == []
    pickle.write_bytes(whole)
    assert hand_over_kept(store, handover) is not None

    _new_champion_version(store)
    assert hand_over_kept(store, handover) is None  # the champion moved
    assert not keep_champions(store, state, loaded, [])  # loaded before the move: not kept for the new state


@pytest.mark.slow  # `leadval serve` twice, as processes
def test_serve_uses_the_kept_champions_until_the_champion_moves(store: str, tmp_path: Path) -> None:
    loaded = tmp_path / "loaded.pickle"
    hand_over(load_champions(store), loaded)
    assert keep_champions(store, store_state(store), loaded, [KEPT_WARNING])
    server = start_server(store, tmp_path)
    try:
        models = {m["name"]: m["version"] for m in server.client().get("/models").json()["models"]}
    finally:
        stop_server(server)
    assert KEPT_WARNING in server.log.read_text()  # the kept champions' warnings: they were handed over
    assert models[LEAD_MODEL_NAME] == "1"

    moved = _new_champion_version(store)
    server = start_server(store, tmp_path)
    try:
        models = {m["name"]: m["version"] for m in server.client().get("/models").json()["models"]}
    finally:
        stop_server(server)
    assert models[LEAD_MODEL_NAME] == moved == "2"  # never the champion of before
    assert KEPT_WARNING not in server.log.read_text()
    kept = hand_over_kept(store, tmp_path / "again.pickle")  # this start kept its own for the next
    assert kept is not None and kept.warnings == []


NO_MLFLOW = """
import sys
from pathlib import Path
from serving.api.champion_handover import hand_over_kept
kept = hand_over_kept(sys.argv[1], Path(sys.argv[2]))
print(kept is not None, "mlflow" in sys.modules, "lightgbm" in sys.modules)
"""


@pytest.mark.slow  # a process of its own, to see what it imports
def test_handing_over_kept_champions_imports_neither_mlflow_nor_lightgbm(store: str, tmp_path: Path) -> None:
    loaded = tmp_path / "loaded.pickle"
    hand_over(load_champions(store), loaded)
    assert keep_champions(store, store_state(store), loaded, [])
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run([sys.executable, "-c", NO_MLFLOW, store, str(tmp_path / "handover.pickle")], env=env,
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "False", "False"]
