"""Run identity and recovery: one run per job at a time, a crashed default run resumed, dead runs never left
running, newer scores never replaced by older ones, and the score table holding exactly what the last run scored.

Real SQLite files (``flock``) and a real PostgreSQL schema (advisory locks); the kill -9 test runs real
``leadval`` processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import func, select

from features.crm import schema
from features.crm.store import connect, create_schema, read_frame, upsert_frame
from features.lead_history import load_crm_frames
from serving.batch.runs import RunInProgress, job_lock, plan_run
from serving.batch.writeback import CUSTOMER_JOB, LEAD_JOB, ModelIdentity, run_batch, scoring_run_id, utc_now
from tests.leadval_cli import LEADVAL, last_json, run_leadval
from tests.serving.batch.conftest import batch_crm
from tests.serving.batch.test_writeback import MODEL, _ids, _scores

RETRAINED = ModelIdentity("lead-scoring", "4", "def456", "models:/lead-scoring@champion")


def _ledger_row(engine, run_id: str, as_of: datetime, started: datetime, status: str = "running",
                source: str = "now", model: ModelIdentity = MODEL) -> None:
    """A ledger row as a process that died mid-run leaves it."""
    with engine.begin() as conn:
        upsert_frame(conn, schema.scoring_runs, pd.DataFrame([{
            "scoring_run_id": run_id, "job": "leads", "model_name": model.name, "model_version": model.version,
            "model_uri": model.uri, "as_of": as_of, "as_of_source": source, "started_at": started,
            "status": status, "rows_total": 10, "rows_scored": 0}]))


def test_one_run_per_job_at_a_time(db_url: str) -> None:
    engine = connect(db_url)
    create_schema(engine)
    _ledger_row(engine, "leads-other", datetime(2025, 6, 1), datetime(2025, 6, 1, 2))
    with job_lock(engine, LEAD_JOB):
        with pytest.raises(RunInProgress) as refused, job_lock(connect(db_url), LEAD_JOB):
            pass
        assert str(refused.value).startswith("another 'leadval score leads' is writing leads scores to this CRM "
                                             "(run leads-other, as of 2025-06-01 00:00, started 2025-06-01 02:00:00 "
                                             "UTC); this one stopped without writing")
        with job_lock(connect(db_url), CUSTOMER_JOB):  # the other job is not held up
            pass
    with job_lock(connect(db_url), LEAD_JOB):  # released when the holder is done
        pass


def test_the_default_run_resumes_the_unfinished_one_of_the_last_24_hours(db_url: str) -> None:
    engine = connect(db_url)
    create_schema(engine)
    now = datetime(2026, 3, 2, 2, 0)
    recent, old = now - timedelta(hours=3), now - timedelta(hours=25)
    _ledger_row(engine, scoring_run_id(LEAD_JOB, MODEL, old), old, old)
    _ledger_row(engine, scoring_run_id(LEAD_JOB, MODEL, recent), recent, recent)
    _ledger_row(engine, scoring_run_id(LEAD_JOB, RETRAINED, recent), recent, recent, model=RETRAINED)

    plan = plan_run(engine, LEAD_JOB, MODEL, None, now)
    assert (plan.as_of, plan.source, plan.resumed) == (recent, "now", scoring_run_id(LEAD_JOB, MODEL, recent))
    assert len(plan.abandoned) == 2 and all("marked failed" in a for a in plan.abandoned)
    ledger = read_frame(engine, schema.scoring_runs).set_index("scoring_run_id")
    assert ledger.loc[plan.resumed, "status"] == "running"  # left for run_batch to continue
    others = ledger.drop(index=plan.resumed)
    assert (others["status"] == "failed").all() and others["error"].str.startswith("interrupted").all()

    run, written = run_batch(engine, LEAD_JOB, MODEL, plan.as_of, _ids(10), _scores, 4, as_of_source=plan.source)
    assert run.scoring_run_id == plan.resumed and written == 10
    assert read_frame(engine, schema.scoring_runs)["status"].value_counts().to_dict() == {"failed": 2,
                                                                                         "succeeded": 1}
    after = plan_run(engine, LEAD_JOB, MODEL, None, now + timedelta(days=1))
    assert (after.as_of, after.resumed, after.abandoned) == (now + timedelta(days=1), None, ())


def test_an_unfinished_default_run_older_than_24_hours_is_failed_and_a_new_one_starts(sqlite_url: str) -> None:
    engine = connect(sqlite_url)
    create_schema(engine)
    now = datetime(2026, 3, 2, 2, 0)
    old = now - timedelta(hours=25)
    _ledger_row(engine, "leads-old", old, old, status="failed")
    plan = plan_run(engine, LEAD_JOB, MODEL, None, now)
    assert (plan.as_of, plan.source, plan.resumed, plan.abandoned) == (now, "now", None, ())


def test_a_given_as_of_continues_its_own_run_and_fails_the_other_dead_ones(sqlite_url: str) -> None:
    engine = connect(sqlite_url)
    create_schema(engine)
    as_of, other = datetime(2025, 6, 1), datetime(2025, 5, 1)
    mine = scoring_run_id(LEAD_JOB, MODEL, as_of)
    _ledger_row(engine, mine, as_of, utc_now(), source="given")
    _ledger_row(engine, "leads-other", other, utc_now(), source="given")
    plan = plan_run(engine, LEAD_JOB, MODEL, as_of)
    assert (plan.as_of, plan.source, plan.resumed) == (as_of, "given", None)
    (abandoned,) = plan.abandoned
    assert abandoned.startswith("run leads-other (lead-scoring v3, as of 2025-05-01 00:00")
    status = read_frame(engine, schema.scoring_runs).set_index("scoring_run_id")["status"]
    assert status.to_dict() == {mine: "running", "leads-other": "failed"}


def test_an_older_as_of_keeps_newer_scores_unless_it_is_a_backfill(db_url: str) -> None:
    engine = connect(db_url)
    create_schema(engine)
    june, december = datetime(2025, 6, 1), datetime(2025, 12, 1)
    run_batch(engine, LEAD_JOB, MODEL, december, _ids(20), _scores, 8)
    newer = read_frame(engine, schema.lead_scores).sort_values("lead_id").reset_index(drop=True)

    run, written = run_batch(engine, LEAD_JOB, MODEL, june, _ids(30), lambda i: _scores(i, shift=9), 8)
    assert written == 30 and run.newer_as_of == december and not run.writes_scores
    kept = read_frame(engine, schema.lead_scores).sort_values("lead_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, newer)
    history = read_frame(engine, schema.lead_score_history)
    assert (history["as_of"] == june).sum() == 30
    june_rows = history[(history["as_of"] == june) & history["lead_id"].isin(_ids(20))]
    assert june_rows["previous_score"].isna().all() and june_rows["trend"].isna().all(), \
        "a later score is not a previous one"

    backfill, _ = run_batch(engine, LEAD_JOB, MODEL, june, _ids(30), _scores, 8, backfill=True)
    replaced = read_frame(engine, schema.lead_scores)
    assert backfill.writes_scores and len(replaced) == 30 and (replaced["as_of"] == june).all()


def test_the_score_table_holds_exactly_what_the_latest_run_scored(db_url: str) -> None:
    engine = connect(db_url)
    create_schema(engine)
    run_batch(engine, LEAD_JOB, MODEL, datetime(2025, 6, 1), _ids(30), _scores, 8)
    still_open = _ids(30)[5:25]
    run_batch(engine, LEAD_JOB, MODEL, datetime(2025, 9, 1), still_open, _scores, 8)
    scores = read_frame(engine, schema.lead_scores)
    assert sorted(scores["lead_id"]) == still_open
    assert len(read_frame(engine, schema.lead_score_history)) == 50, "history keeps the leads that left"


def _wait_for_rows(engine, at_least: int, proc: subprocess.Popen) -> int:
    """History rows written by the process, once there are ``at_least`` (or it ended)."""
    deadline = time.monotonic() + 180
    written = 0
    while time.monotonic() < deadline and proc.poll() is None:
        with engine.connect() as conn:
            written = conn.execute(select(func.count()).select_from(schema.lead_score_history)).scalar_one()
        if written >= at_least:
            break
        time.sleep(0.05)
    return written


@pytest.mark.slow  # real `leadval` processes: one overlapped, then killed
def test_a_killed_default_run_is_resumed_by_the_same_command_at_once(registry: dict[str, str],
                                                                     db_url: str) -> None:
    """The README's cron line: no --as-of. While it runs a second one is refused; after kill -9 the same command
    resumes the killed run at its recorded as-of, and lead_scores ends holding exactly the open leads."""
    batch_crm(db_url)
    env = registry | {"LEADVAL_DB": db_url}
    proc = subprocess.Popen([LEADVAL, "score", "leads", "--chunk-size", "20"], env=os.environ | env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    engine = connect(db_url)
    try:
        assert _wait_for_rows(engine, 40, proc) >= 40, "the run finished or stalled before it could be overlapped"
        overlapping = run_leadval("score", "leads", env=env, check=False)
        assert overlapping.returncode == 1
        assert overlapping.stderr.startswith("error: another 'leadval score leads' is writing leads scores")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    (killed,) = read_frame(engine, schema.scoring_runs).itertuples()
    assert (killed.status, killed.as_of_source) == ("running", "now")

    resumed = last_json(run_leadval("score", "leads", "--json", env=env))
    ledger = read_frame(engine, schema.scoring_runs)
    assert ledger[["scoring_run_id", "status", "as_of"]].values.tolist() == [
        [killed.scoring_run_id, "succeeded", killed.as_of]]
    assert resumed["run_id"] == killed.scoring_run_id and resumed["already"] > 0
    open_ids = load_crm_frames(engine, killed.as_of.to_pydatetime(), open_only=True).leads["lead_id"]
    assert sorted(read_frame(engine, schema.lead_scores)["lead_id"]) == sorted(open_ids)
    history = read_frame(engine, schema.lead_score_history)
    assert len(history) == history["lead_id"].nunique() == len(open_ids) == resumed["total"]


def test_runs_in_june_september_and_december_leave_the_open_leads_and_an_older_run_changes_nothing(
        registry: dict[str, str], sqlite_url: str) -> None:
    as_of = batch_crm(sqlite_url)
    env = registry | {"LEADVAL_DB": sqlite_url}
    engine = connect(sqlite_url)
    for day in ("2025-06-01", "2025-09-01", as_of):
        run_leadval("score", "leads", "--as-of", day, env=env)
    open_ids = load_crm_frames(engine, as_of, open_only=True).leads["lead_id"]
    current = read_frame(engine, schema.lead_scores)
    assert sorted(current["lead_id"]) == sorted(open_ids)
    converted = set(read_frame(engine, schema.lead_score_history)["lead_id"]) - set(open_ids)
    assert converted, "some leads converted between June and the CRM's end: their history stays"

    older = run_leadval("score", "leads", "--as-of", "2025-10-01", "--json", env=env)
    (warning,) = [w for w in last_json(older)["warnings"] if "lead_scores holds" in w]
    assert "later than this run's as-of (2025-10-01 00:00): they were kept" in warning and "--backfill" in warning
    pd.testing.assert_frame_equal(read_frame(engine, schema.lead_scores), current)
