"""The champions ``leadval serve`` hands its workers: the same models and facts, and a worker that starts without
MLflow or scikit-learn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving.api.champion_handover import HANDOVER_ENV, hand_over, hand_over_nothing, handed_over
from serving.api.champions import NothingToServe, load_champions
from serving.api.schemas import ScoreLeadsRequest
from serving.api.service import WARM_UP_LEADS, lead_scores
from tests.conftest import REPO_ROOT
from tests.serving.conftest import TrainedStore
from training.registry import CLV_MODEL_NAME, LEAD_MODEL_NAME


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
