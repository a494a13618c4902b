"""The lead job's worker processes: the same rows as one process, a read-only CRM, and no worker outliving a
``kill -9`` of the job, whose next run resumes.

Real SQLite files and a real PostgreSQL schema; the kill -9 test runs a real ``leadval`` process and its workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pandas as pd
import psutil
import pytest
from sqlalchemy import delete, exc, text

from features.crm import schema
from features.crm.store import connect, read_frame
from features.errors import DatabaseUnavailable, InvalidInput
from features.lead_history import load_crm_frames
from serving.batch.pool import WORKERS_ENV, default_workers, read_only
from tests.leadval_cli import LEADVAL, last_json, run_leadval
from tests.serving.batch.conftest import batch_crm
from tests.serving.batch.test_runs import _wait_for_rows

SCORE_TABLES = (schema.lead_score_history, schema.lead_scores, schema.scoring_runs)


def _scores(url: str):
    """lead_scores in id order, without ``scored_at`` (each run's own start)."""
    frame = read_frame(connect(url), schema.lead_scores).drop(columns="scored_at")
    return frame.sort_values("lead_id").reset_index(drop=True)


def test_workers_write_what_one_process_writes(registry: dict[str, str], db_url: str) -> None:
    as_of = batch_crm(db_url)
    env = registry | {"LEADVAL_DB": db_url}
    alone = last_json(run_leadval("score", "leads", "--as-of", as_of, "--chunk-size", "150", "--workers", "1",
                                  "--json", env=env))
    expected = _scores(db_url)
    with connect(db_url).begin() as conn:
        for table in SCORE_TABLES:
            conn.execute(delete(table))
    pooled = last_json(run_leadval("score", "leads", "--as-of", as_of, "--chunk-size", "150", "--workers", "2",
                                   "--json", env=env))
    assert pooled["run_id"] == alone["run_id"] and pooled["written"] == alone["written"] == len(expected) > 300
    pd.testing.assert_frame_equal(_scores(db_url), expected, check_exact=True)
    dry = last_json(run_leadval("score", "leads", "--as-of", as_of, "--chunk-size", "150", "--dry-run", "--json",
                                env=env | {WORKERS_ENV: "2"}))
    assert dry["scored"] == len(expected)


def test_workers_read_the_crm_and_cannot_write_it(db_url: str) -> None:
    batch_crm(db_url)
    engine = read_only(connect(db_url))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM leads")).scalar_one() == 1200
    refused = (exc.DBAPIError, DatabaseUnavailable)  # SQLite's error is told as the store tells a read-only file
    with pytest.raises(refused, match="(?i)read.only|readonly"), engine.begin() as conn:
        conn.execute(delete(schema.activities))
    engine.dispose()
    with connect(db_url).connect() as conn:  # other connections write as before
        assert conn.execute(text("SELECT count(*) FROM activities")).scalar_one() > 0


def test_the_worker_count_comes_from_the_flag_the_environment_or_the_cores(
        monkeypatch: pytest.MonkeyPatch, registry: dict[str, str]) -> None:
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    assert 1 <= default_workers() <= 2
    monkeypatch.setenv(WORKERS_ENV, "3")
    assert default_workers() == 3
    monkeypatch.setenv(WORKERS_ENV, "0")
    with pytest.raises(InvalidInput, match="LEADVAL_WORKERS='0': expected a whole number"):
        default_workers()
    spark = run_leadval("score", "leads", "--engine", "spark", "--workers", "2", env=registry, check=False)
    assert spark.returncode == 1 and "--workers: applies to --engine pandas" in spark.stderr


def _running(proc: psutil.Process) -> bool:
    """Whether the process still runs (a zombie waiting for its new parent to reap it has ended)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _alive(procs: list[psutil.Process], within: float = 10.0) -> list[psutil.Process]:
    """The processes still running after waiting up to ``within`` seconds for them to end."""
    deadline = time.monotonic() + within
    while (alive := [proc for proc in procs if _running(proc)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


@pytest.mark.slow  # a real `leadval` process and its workers, killed midway
def test_a_killed_job_leaves_no_worker_and_the_next_run_resumes(registry: dict[str, str], db_url: str) -> None:
    """kill -9 of the job while its workers score: every worker dies with it, and the same command resumes."""
    batch_crm(db_url)
    env = registry | {"LEADVAL_DB": db_url}
    proc = subprocess.Popen([LEADVAL, "score", "leads", "--chunk-size", "20", "--workers", "2"],
                            env=os.environ | env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    engine = connect(db_url)
    try:
        assert _wait_for_rows(engine, 40, proc) >= 40, "the run finished or stalled before it could be killed"
        descendants = {child: " ".join(child.cmdline()) for child in psutil.Process(proc.pid).children(recursive=True)}
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert any("spawn_main" in line for line in descendants.values()), f"no worker was running: {descendants}"
    assert _alive(list(descendants)) == [], "a worker outlived the job"
    (killed,) = read_frame(engine, schema.scoring_runs).itertuples()
    assert killed.status == "running"

    resumed = last_json(run_leadval("score", "leads", "--workers", "2", "--json", env=env))
    ledger = read_frame(engine, schema.scoring_runs)
    assert ledger[["scoring_run_id", "status"]].values.tolist() == [[killed.scoring_run_id, "succeeded"]]
    assert resumed["run_id"] == killed.scoring_run_id and resumed["already"] >= 40
    open_ids = load_crm_frames(engine, killed.as_of.to_pydatetime(), open_only=True).leads["lead_id"]
    assert sorted(read_frame(engine, schema.lead_scores)["lead_id"]) == sorted(open_ids)
    history = read_frame(engine, schema.lead_score_history)
    assert len(history) == history["lead_id"].nunique() == len(open_ids) == resumed["total"]
