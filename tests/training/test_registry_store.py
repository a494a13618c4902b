"""The MLflow store is checked before MLflow touches it: a damaged or foreign SQLite file and a store that does not
answer are one line naming it and what to do, fast, and nothing is written into the file.

Real SQLite files (a migrated MLflow store, a CRM, garbage), real closed ports, a real LightGBM booster.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from features.crm.store import connect, create_schema
from tests.mlflow_stores import empty_tracking_uri
from training.leads.scorer import TruncatedModelFile, booster_from_text
from training.registry_store import CONNECT_TIMEOUT_S, TrackingStoreUnavailable, check_store
from training.tracking import use_tracking


def closed_port() -> int:
    """A port of 127.0.0.1 nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def one_line(caught: pytest.ExceptionInfo) -> str:
    text = str(caught.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_a_store_overwritten_with_garbage_is_one_line_and_left_as_it_was(tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    garbage = np.random.default_rng(15).bytes(4096)
    store.write_bytes(garbage)
    for create in (False, True):
        with pytest.raises(TrackingStoreUnavailable) as caught:
            use_tracking(f"sqlite:///{store}", create=create)
        assert one_line(caught).startswith(f"the MLflow store {store} (sqlite:///{store}) is damaged (file is not a "
                                           "database); restore it from a backup, or move it away and train again")
    assert store.read_bytes() == garbage
    assert {p.name for p in tmp_path.iterdir()} == {"mlflow.db"}


def test_a_store_cut_short_is_one_line(tmp_path: Path) -> None:
    whole = Path(empty_tracking_uri(tmp_path).removeprefix("sqlite:///"))
    cut = tmp_path / "cut.db"
    cut.write_bytes(whole.read_bytes()[:8192])
    with pytest.raises(TrackingStoreUnavailable, match=r"cut\.db .* is damaged \(database disk image is malformed\)"):
        check_store(f"sqlite:///{cut}")


def test_the_crm_is_no_mlflow_store_and_gets_no_mlflow_tables(tmp_path: Path) -> None:
    crm = tmp_path / "crm.db"
    engine = connect(f"sqlite:///{crm}")
    create_schema(engine)
    engine.dispose()
    before = crm.read_bytes()
    for create in (False, True):  # training would otherwise run MLflow's migrations inside the CRM
        with pytest.raises(TrackingStoreUnavailable) as caught:
            use_tracking(f"sqlite:///{crm}", create=create)
        assert f"{crm} (sqlite:///{crm}) is an SQLite database but not an MLflow store (it holds " in one_line(caught)
        assert ": the CRM?); pass --tracking-uri (env MLFLOW_TRACKING_URI) naming the MLflow store" in str(caught.value)
    assert crm.read_bytes() == before


def test_an_empty_file_is_a_new_store_for_training_only(tmp_path: Path) -> None:
    empty = tmp_path / "mlflow.db"
    empty.touch()
    check_store(f"sqlite:///{empty}", create=True)
    with pytest.raises(TrackingStoreUnavailable, match="is empty: no model was trained into it; train one first"):
        check_store(f"sqlite:///{empty}")
    assert empty.stat().st_size == 0


def test_a_real_store_and_a_missing_one_pass(tmp_path: Path) -> None:
    check_store(empty_tracking_uri(tmp_path))
    check_store(f"sqlite:///{tmp_path / 'not' / 'yet.db'}", create=True)
    assert not (tmp_path / "not").exists()


@pytest.mark.parametrize("uri", ["http://127.0.0.1:{port}/", "postgresql+psycopg://leadval:s3cretpw@127.0.0.1:{port}/x"])
def test_a_store_that_does_not_answer_fails_in_seconds_without_its_password(uri: str) -> None:
    uri = uri.format(port=closed_port())
    started = time.monotonic()
    with pytest.raises(TrackingStoreUnavailable) as caught:
        use_tracking(uri, create=False)
    assert time.monotonic() - started < CONNECT_TIMEOUT_S + 2
    text = one_line(caught)
    assert text.startswith("cannot reach the MLflow ") and "Connection refused" in text
    assert "s3cretpw" not in text


def test_a_booster_cut_short_is_an_error_not_an_abort(tmp_path: Path) -> None:
    """LightGBM 4 aborts the process (std::terminate) on a model text cut inside its trees."""
    rng = np.random.default_rng(15)
    features = rng.normal(size=(200, 3))
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 4}, lgb.Dataset(
        features, (features[:, 0] > 0).astype(int)), num_boost_round=5)
    text = booster.model_to_string()
    assert booster_from_text(text, tmp_path / "booster.txt").num_trees() == 5
    for cut in (text.index("Tree=2") + 20, text.index("end of trees")):
        with pytest.raises(TruncatedModelFile, match="booster.txt is not a whole LightGBM model"):
            booster_from_text(text[:cut], tmp_path / "booster.txt")
