"""A damaged, foreign or unreachable MLflow store, a damaged model file and a CRM that does not exist end each
command in one line naming the store or file and what to do; nothing is written into them or created beside them.

A small simulated CRM and a real MLflow SQLite store with a CLV champion in the test's folder; each command runs as
``leadval`` runs it (:func:`tests.leadval_cli.run_leadval`); ``leadval serve`` as a real process.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from features.crm.store import connect
from features.simulate.config import SimulationConfig
from features.simulate.generate import generate_crm
from serving.api.champions import NothingToServe, load_champions
from tests.leadval_cli import LEADVAL, run_leadval
from tests.mlflow_stores import empty_tracking_uri
from training.clv.job import train_from_crm

COMMANDS = {  # every command that reads or writes the MLflow store
    "score leads": ["score", "leads", "--dry-run"],
    "score customers": ["score", "customers", "--dry-run"],
    "backtest leads": ["backtest", "leads", "--model", "current"],
    "train leads": ["train", "leads"],
    "train clv": ["train", "clv"],
    "monitor": ["monitor"],
    "retrain leads": ["retrain", "leads", "--if-needed"],
}


@pytest.fixture(scope="module")
def crm(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small simulated CRM (read only by these tests)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('crm') / 'crm.db'}"
    engine = connect(url)
    generate_crm(engine, SimulationConfig(n_leads=200, n_customers=150, seed=15, end=datetime(2025, 12, 31)))
    engine.dispose()
    return url


@pytest.fixture
def clv_store(crm: str, tmp_path: Path) -> str:
    """A real MLflow store in the test's folder with a CLV champion trained on the CRM."""
    tracking_uri = empty_tracking_uri(tmp_path)
    train_from_crm(crm, tracking_uri, str(tmp_path / "artifacts"))
    return tracking_uri


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def only_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
@pytest.mark.parametrize("damage", ["garbage", "cut short", "the CRM"])
def test_a_damaged_or_foreign_store_is_one_line_and_left_as_it_was(command: list[str], damage: str, crm: str,
                                                                   tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    if damage == "garbage":
        store.write_bytes(b"\x00not an sqlite file\xff" * 500)
    elif damage == "cut short":
        (tmp_path / "whole").mkdir()
        whole = Path(empty_tracking_uri(tmp_path / "whole").removeprefix("sqlite:///"))
        store.write_bytes(whole.read_bytes()[:8192])
    else:
        shutil.copyfile(crm.removeprefix("sqlite:///"), store)
    before = store.read_bytes()
    ran = run_leadval(*command, "--db", crm, "--tracking-uri", f"sqlite:///{store}", check=False)
    assert ran.returncode == 1
    line = only_line(ran.stderr)
    if damage == "the CRM":
        assert line.startswith(f"error: {store} (sqlite:///{store}) is an SQLite database but not an MLflow store")
    else:
        assert line.startswith(f"error: the MLflow store {store} (sqlite:///{store}) is damaged (")
    assert store.read_bytes() == before
    assert not (tmp_path / "mlflow.db-journal").exists() and not (tmp_path / "artifacts").exists()


@pytest.mark.parametrize("command", [["models", "list"], ["models", "rollback", "lead-scoring"]],
                         ids=["list", "rollback"])
def test_models_on_a_damaged_store_is_one_line_and_leaves_it_as_it_was(command: list[str], tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    store.write_bytes(b"\x00not an sqlite file\xff" * 500)
    ran = run_leadval(*command, "--tracking-uri", f"sqlite:///{store}", check=False)
    assert ran.returncode == 1
    assert only_line(ran.stderr).startswith(f"error: the MLflow store {store} (sqlite:///{store}) is damaged (")
    assert store.read_bytes() == b"\x00not an sqlite file\xff" * 500


@pytest.mark.parametrize("command", [COMMANDS["score customers"], COMMANDS["train clv"]], ids=["score", "train"])
@pytest.mark.parametrize("uri", ["http://127.0.0.1:{port}/", "postgresql+psycopg://postgres@127.0.0.1:{port}/mlflow"])
def test_a_store_that_does_not_answer_is_one_line_in_seconds(command: list[str], uri: str, crm: str) -> None:
    uri = uri.format(port=closed_port())
    started = time.monotonic()
    ran = run_leadval(*command, "--db", crm, "--tracking-uri", uri, check=False)
    assert time.monotonic() - started < 10  # MLflow alone retries for minutes
    assert ran.returncode == 1
    assert only_line(ran.stderr).startswith("error: cannot reach the MLflow ")
    assert "Connection refused" in ran.stderr and "pass --tracking-uri (env MLFLOW_TRACKING_URI)" in ran.stderr


@pytest.mark.parametrize("model", ["leads", "clv"])
def test_training_on_a_crm_that_does_not_exist_creates_nothing(model: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ran = run_leadval("train", model, "--db", "sqlite:///does/not/exist.db", "--json", check=False,
                      env={"MLFLOW_TRACKING_URI": None, "LEADVAL_ARTIFACT_ROOT": None})
    assert ran.returncode == 1
    assert only_line(ran.stderr) == ("error: no CRM database at does/not/exist.db (sqlite:///does/not/exist.db); "
                                     "create it with leadval generate or leadval import")
    assert list(tmp_path.iterdir()) == []


def _clv_pickle(tmp_path: Path) -> Path:
    (found,) = (tmp_path / "artifacts").glob("clv/models/*/artifacts/python_model.pkl")
    return found


def test_a_damaged_champion_file_is_one_line_and_a_new_version_replaces_it(crm: str, clv_store: str,
                                                                            tmp_path: Path) -> None:
    pickle = _clv_pickle(tmp_path)
    pickle.write_bytes(pickle.read_bytes()[:40])
    ran = run_leadval("score", "customers", "--db", crm, "--dry-run", "--tracking-uri", clv_store, check=False)
    assert ran.returncode == 1
    assert only_line(ran.stderr) == (
        f"error: cannot load model 'models:/clv@champion' (version 1): its files at {pickle.parent} are damaged "
        "(UnpicklingError: pickle data was truncated); restore them from a backup, or train a new version "
        "(leadval train clv)")
    trained = run_leadval("train", "clv", "--db", crm, "--tracking-uri", clv_store)
    assert "champion: champion v1 cannot be loaded (its files are damaged or incompatible)" in trained.stdout
    run_leadval("score", "customers", "--db", crm, "--dry-run", "--tracking-uri", clv_store)


def test_the_service_counts_a_damaged_champion_as_missing(clv_store: str, tmp_path: Path) -> None:
    _clv_pickle(tmp_path).write_bytes(b"")
    with pytest.raises(NothingToServe) as caught:
        load_champions(clv_store)
    assert "models:/clv@champion: cannot load model 'models:/clv@champion' (version 1): its files at " in \
        str(caught.value)
    assert "are damaged (EOFError: Ran out of input)" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.slow
def test_serve_stops_with_one_line_on_a_damaged_store(tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    store.write_bytes(b"garbage" * 1000)
    started = time.monotonic()
    ran = subprocess.run([LEADVAL, "serve", "--port", str(closed_port()), "--tracking-uri", f"sqlite:///{store}"],
                         capture_output=True, text=True, timeout=120)
    assert time.monotonic() - started < 60
    assert ran.returncode == 1
    assert only_line(ran.stderr).startswith("error:")  # before any server starts, so nothing says it listens
    errors = [line for line in ran.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: the MLflow store {store} (sqlite:///{store}) is damaged (file is not a database); "
                      "restore it from a backup, or move it away and train again (leadval train leads, leadval train "
                      "clv) to start a new one"], ran.stderr
    assert "Traceback" not in ran.stderr and store.read_bytes() == b"garbage" * 1000
