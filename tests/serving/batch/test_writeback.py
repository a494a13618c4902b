"""Write-back mechanics: ledger, idempotent reruns, resume after a failure, score trends."""

from __future__ import annotations

import json
from datetime import datetime

import pandas as pd
import pytest
from sqlalchemy import func, select

from features.crm import schema
from features.crm.store import connect, create_schema, read_frame
from serving.batch.writeback import LEAD_JOB, ModelIdentity, run_batch, scoring_run_id

AS_OF = datetime(2025, 6, 1)
MODEL = ModelIdentity("lead-scoring", "3", "abc123", "models:/lead-scoring@champion")


def _scores(ids: list[str], shift: int = 0) -> pd.DataFrame:
    score = [(int(i[1:]) * 7 + shift) % 101 for i in ids]
    return pd.DataFrame({
        "lead_id": ids, "score": score, "probability": [s / 100 for s in score],
        "band": ["A" if s >= 75 else "B" if s >= 50 else "C" if s >= 25 else "D" for s in score],
        "reasons": [json.dumps({"up": ["demo request"], "down": []})] * len(ids),
        "expected_value": [s * 10.0 for s in score],
    })


def _ids(n: int) -> list[str]:
    return [f"L{i:05d}" for i in range(n)]


def _count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_rerun_of_the_same_work_adds_nothing(db_url: str) -> None:
    engine = connect(db_url)
    create_schema(engine)
    run, written = run_batch(engine, LEAD_JOB, MODEL, AS_OF, _ids(25), _scores, chunk_size=10)
    assert written == 25 and run.previous_status is None and not run.already_finished
    before = read_frame(engine, schema.lead_scores).sort_values("lead_id").reset_index(drop=True)
    ledger = read_frame(engine, schema.scoring_runs)
    scored: list[str] = []
    again, rewritten = run_batch(engine, LEAD_JOB, MODEL, AS_OF, _ids(25),
                                 lambda ids: (scored.extend(ids), _scores(ids))[1], chunk_size=10)
    assert again.scoring_run_id == run.scoring_run_id and rewritten == 0 and scored == []
    assert again.already_finished and again.previous_finished_at == ledger["finished_at"].iloc[0]
    after = read_frame(engine, schema.lead_scores).sort_values("lead_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    assert _count(engine, schema.lead_score_history) == 25
    pd.testing.assert_frame_equal(read_frame(engine, schema.scoring_runs), ledger)  # not even its times change
    assert ledger[["status", "rows_scored", "rows_total"]].values.tolist() == [["succeeded", 25, 25]]

    more, added = run_batch(engine, LEAD_JOB, MODEL, AS_OF, _ids(30), _scores, chunk_size=10)
    assert more.already_finished and added == 5, "rows new to finished work are written"
    assert read_frame(engine, schema.scoring_runs)[["status", "rows_scored", "rows_total"]].values.tolist() == [
        ["succeeded", 30, 30]]


def test_failed_run_keeps_committed_chunks_and_next_run_resumes(db_url: str) -> None:
    engine = connect(db_url)
    create_schema(engine)
    calls: list[int] = []

    def crashing(ids: list[str]) -> pd.DataFrame:
        calls.append(len(ids))
        if len(calls) == 3:
            raise RuntimeError("scoring died")
        return _scores(ids)

    with pytest.raises(RuntimeError):
        run_batch(engine, LEAD_JOB, MODEL, AS_OF, _ids(50), crashing, chunk_size=10)
    ledger = read_frame(engine, schema.scoring_runs).iloc[0]
    assert ledger["status"] == "failed" and "scoring died" in ledger["error"]
    assert ledger["rows_scored"] == 20 == _count(engine, schema.lead_scores)

    scored: list[str] = []
    resumed, written = run_batch(engine, LEAD_JOB, MODEL, AS_OF, _ids(50),
                                 lambda ids: (scored.extend(ids), _scores(ids))[1], chunk_size=10)
    assert written == 30 and scored == _ids(50)[20:]
    assert resumed.previous_status == "failed" and not resumed.already_finished and len(resumed.done) == 20
    assert _count(engine, schema.lead_scores) == 50 == _count(engine, schema.lead_score_history)
    assert read_frame(engine, schema.scoring_runs)["status"].tolist() == ["succeeded"]


def test_trend_compares_with_the_previous_run(db_url: str) -> None:
    engine = connect(db_url)
    create_schema(engine)
    ids = _ids(30)
    run_batch(engine, LEAD_JOB, MODEL, AS_OF, ids, _scores, chunk_size=10)
    first = read_frame(engine, schema.lead_scores).set_index("lead_id").sort_index()
    assert set(first["trend"]) == {"new"}
    later = datetime(2025, 6, 2)
    run_batch(engine, LEAD_JOB, MODEL, later, ids, lambda i: _scores(i, shift=5), chunk_size=7)
    second = read_frame(engine, schema.lead_scores).set_index("lead_id").sort_index()
    delta = second["score"] - first["score"]
    assert (second["previous_score"] == first["score"]).all()
    assert (second.loc[delta >= 3, "trend"] == "up").all()
    assert (second.loc[delta <= -3, "trend"] == "down").all()
    assert (second.loc[delta.abs() < 3, "trend"] == "steady").all()
    assert _count(engine, schema.lead_score_history) == 60
    assert scoring_run_id(LEAD_JOB, MODEL, later) != scoring_run_id(LEAD_JOB, MODEL, AS_OF)


def test_a_new_model_version_starts_the_trend_afresh(sqlite_url: str) -> None:
    """A retrained model ranks leads afresh: its first scores are ``new``, with the old score still shown."""
    engine = connect(sqlite_url)
    create_schema(engine)
    ids = _ids(12)
    run_batch(engine, LEAD_JOB, MODEL, AS_OF, ids, _scores, chunk_size=5)
    first = read_frame(engine, schema.lead_scores).set_index("lead_id").sort_index()
    retrained = ModelIdentity(MODEL.name, "4", "def456", MODEL.uri)
    run_batch(engine, LEAD_JOB, retrained, datetime(2025, 6, 2), ids, lambda i: _scores(i, shift=5), chunk_size=5)
    second = read_frame(engine, schema.lead_scores).set_index("lead_id").sort_index()
    assert set(second["trend"]) == {"new"}
    assert (second["previous_score"] == first["score"]).all()
