"""Read-only commands never create a CRM database, an MLflow store or folders: a typo in a ``sqlite:///`` path
or a missing store is one line naming the file and what to do, and the disk is left exactly as it was.

Real SQLite files under ``tmp_path``; each command runs as ``leadval`` runs it (:func:`tests.leadval_cli.run_leadval`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from features.crm import schema
from features.crm.store import connect, create_schema, insert_frame
from features.errors import DatabaseUnavailable
from tests.leadval_cli import run_leadval

READ_ONLY = {  # commands that only read the CRM (backtest leads writes its results into an existing CRM only)
    "leads top": ["leads", "top"],
    "report": ["report", "--out", "{tmp}/out/report.html"],
    "segments": ["segments", "--out", "{tmp}/out/segments.csv"],
    "score leads --dry-run": ["score", "leads", "--dry-run"],
    "score customers --dry-run": ["score", "customers", "--dry-run"],
    "score leads": ["score", "leads"],
    "score customers": ["score", "customers"],
    "backtest leads": ["backtest", "leads"],
}

NEEDS_A_MODEL = {  # commands that load a registered model from the MLflow store
    "score leads": ["score", "leads"],
    "score leads --dry-run": ["score", "leads", "--dry-run"],
    "score customers": ["score", "customers"],
    "backtest leads --model current": ["backtest", "leads", "--model", "current"],
}


SIDECARS = {"crm.db-wal", "crm.db-shm"}
"""SQLite's own files beside the existing CRM while it is open (WAL mode): not created by accident."""


def tree(root: Path) -> set[str]:
    """Every file and folder under ``root``, relative to it."""
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def args_for(command: list[str], tmp: Path) -> list[str]:
    return [arg.replace("{tmp}", str(tmp)) for arg in command]


@pytest.mark.parametrize("command", READ_ONLY.values(), ids=READ_ONLY.keys())
def test_a_missing_crm_is_one_line_and_nothing_is_created(command: list[str], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    ran = run_leadval(*args_for(command, tmp_path), "--db", "sqlite:///typo/crm.db", check=False,
                      env={"MLFLOW_TRACKING_URI": None})
    assert ran.returncode == 1
    assert ran.stderr.strip() == ("error: no CRM database at typo/crm.db (sqlite:///typo/crm.db); create it with "
                                  "leadval generate or leadval import")
    assert tree(tmp_path) == before


def test_the_default_crm_url_is_not_created_either(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ran = run_leadval("leads", "top", env={"LEADVAL_DB": None}, check=False)
    assert ran.returncode == 1
    assert ran.stderr.startswith("error: no CRM database at data/crm.db (sqlite:///data/crm.db); ")
    assert tree(tmp_path) == set()


@pytest.fixture
def crm(tmp_path: Path) -> str:
    """A small existing CRM with an open lead and a customer's orders."""
    import pandas as pd

    url = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = connect(url)
    create_schema(engine)
    with engine.begin() as conn:
        insert_frame(conn, schema.leads, pd.DataFrame({
            "lead_id": ["L1"], "created_at": [pd.Timestamp("2025-01-01")], "source_channel": ["web"]}))
        insert_frame(conn, schema.customers, pd.DataFrame({
            "customer_id": ["C1"], "created_at": [pd.Timestamp("2025-01-02")]}))
        insert_frame(conn, schema.orders, pd.DataFrame({
            "order_id": ["O1"], "customer_id": ["C1"], "ordered_at": [pd.Timestamp("2025-01-03")],
            "amount": [10.0]}))
    engine.dispose()
    return url


@pytest.mark.parametrize("command", NEEDS_A_MODEL.values(), ids=NEEDS_A_MODEL.keys())
def test_a_missing_mlflow_store_is_one_line_and_not_created(command: list[str], crm: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    before = tree(tmp_path)
    ran = run_leadval(*command, "--db", crm, check=False, env={"MLFLOW_TRACKING_URI": None})
    assert ran.returncode == 1
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1, ran.stderr
    assert f"no MLflow store at {work / 'models' / 'mlflow.db'} (sqlite:///models/mlflow.db); train a model " \
           "first with leadval train leads or leadval train clv, or pass --tracking-uri" in lines[0]
    assert tree(tmp_path) - SIDECARS == before


def test_a_flat_file_needing_a_registered_model_creates_no_store(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "leads.csv").write_text("lead_id,x\nL1,1\n")
    before = tree(tmp_path)
    ran = run_leadval("score", "leads", "--table", "leads.csv", "--out", "out/scores.csv",
                      "--tracking-uri", "sqlite:///nowhere/mlflow.db", check=False)
    assert ran.returncode == 1
    assert ran.stderr.count("\n") == 1 and "no MLflow store at" in ran.stderr and "nowhere/mlflow.db" in ran.stderr
    assert tree(tmp_path) == before


def test_backtest_without_a_store_retrains_by_default_and_creates_no_store(crm: str, tmp_path: Path) -> None:
    """``backtest leads`` (retrain) needs no champion: without a store it warns and uses the default recipe; it
    writes its results into the existing CRM only."""
    store = tmp_path / "mlruns" / "mlflow.db"
    ran = run_leadval("backtest", "leads", "--db", crm, "--tracking-uri", f"sqlite:///{store}", check=False)
    assert "Traceback" not in ran.stderr
    assert not store.parent.exists()
    assert tree(tmp_path) - SIDECARS == {"crm.db"}


def test_a_read_only_crm_is_one_line_on_writing_commands(crm: str, tmp_path: Path) -> None:
    export = tmp_path / "leads.csv"
    export.write_text("lead_id,created_at,source_channel\nL2,2025-02-01,web\n")
    read_only = f"sqlite:///file:{tmp_path / 'crm.db'}?mode=ro&uri=true"
    ran = run_leadval("import", str(export), "--table", "leads", "--db", read_only, check=False)
    assert ran.returncode == 1
    assert ran.stderr.count("\n") == 1
    assert ran.stderr.startswith(f"error: cannot write to the SQLite database {tmp_path / 'crm.db'} ")
    assert "it is read-only" in ran.stderr


def test_a_locked_crm_is_one_line_naming_the_file(crm: str, tmp_path: Path) -> None:
    from sqlalchemy import event

    engine = connect(crm)
    engine.dispose()
    event.listen(engine, "connect", lambda dbapi_conn, _: dbapi_conn.execute("PRAGMA busy_timeout=0"))
    holder = sqlite3.connect(tmp_path / "crm.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(DatabaseUnavailable, match=r"crm\.db .*another process holds it locked") as caught:
            with engine.begin() as conn:
                conn.execute(schema.leads.delete())
        assert "\n" not in str(caught.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        engine.dispose()
