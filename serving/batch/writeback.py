"""Write scores back to the CRM: a ledger row per run, one transaction per chunk, resumable after a crash.

A run is identified by what it computes (job, model version, as-of), so rerunning the same work finds its
ledger row and skips the ids it already wrote: a run killed at any point is completed by the next one,
and a rerun of a finished run adds no rows and leaves its ledger row as it was (the caller says so). Each
chunk's scores, history rows and ledger count are committed together, so every table stays consistent
whatever moment the process dies. Scores as of an earlier date than the score table's never replace it
unless the run is a backfill; a finished run whose scores are the table's removes the rows it did not write.
Which run an invocation is, and the lock that makes it the only one, is :mod:`serving.batch.runs`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
from sqlalchemy import Engine, Table, func, or_, select

from features.crm import schema
from features.crm.store import read_frame, upsert_frame

TREND_STEADY_POINTS = 3
"""A lead's score moving by fewer points than this since its previous score counts as steady."""


@dataclass(frozen=True)
class Job:
    """What a batch run scores and where the results go."""

    name: str
    key: str
    scores: Table
    history: Table


LEAD_JOB = Job("leads", "lead_id", schema.lead_scores, schema.lead_score_history)
CUSTOMER_JOB = Job("customers", "customer_id", schema.customer_scores, schema.customer_score_history)


@dataclass(frozen=True)
class ModelIdentity:
    """The registered model a run scores with."""

    name: str
    version: str | None
    run_id: str | None
    uri: str


@dataclass(frozen=True)
class RunState:
    """An open run: its id, its start (the ``scored_at`` of every row it writes) and the ids already done.

    ``previous_status`` and ``previous_finished_at`` are the ledger row's as this attempt found it (None: a new
    run): ``running`` or ``failed`` for a run this attempt resumes, ``succeeded`` for work already done.
    ``newer_as_of`` is the latest as-of in the score table when it is later than this run's: the run then writes
    history only and keeps the newer scores (unless it is a backfill).
    """

    scoring_run_id: str
    started_at: datetime
    done: frozenset[str]
    previous_status: str | None = None
    previous_finished_at: datetime | None = None
    newer_as_of: datetime | None = None
    backfill: bool = False

    @property
    def writes_scores(self) -> bool:
        """Whether this run's scores replace the score table's (they are the latest, or it is a backfill)."""
        return self.newer_as_of is None or self.backfill

    @property
    def replaces_newer(self) -> bool:
        """Whether this is a backfill over newer scores: every id is written again, done before or not."""
        return self.backfill and self.newer_as_of is not None

    @property
    def already_finished(self) -> bool:
        """Whether an earlier attempt finished this run (a rerun of the same work)."""
        return self.previous_status == "succeeded"


def utc_now() -> datetime:
    """Now in UTC, naive, to the microsecond: the CRM's timestamp convention."""
    return datetime.now(UTC).replace(tzinfo=None)


def scoring_run_id(job: Job, model: ModelIdentity, as_of: datetime) -> str:
    """A stable id for (job, model version, as-of): the same work always maps to the same ledger row."""
    ident = f"{job.name}|{model.name}|{model.version}|{model.uri}|{as_of.isoformat()}"
    return f"{job.name}-{hashlib.sha256(ident.encode()).hexdigest()[:20]}"


def open_run(engine: Engine, job: Job, model: ModelIdentity, as_of: datetime, ids: Sequence[str],
             as_of_source: str = "given", backfill: bool = False) -> RunState:
    """Start or resume the run for this work; returns which ids a previous attempt already wrote.

    A run that already succeeded and has none of ``ids`` left to write is not touched: its ledger row keeps
    its status and times.
    """
    run_id = scoring_run_id(job, model, as_of)
    runs = schema.scoring_runs
    with engine.begin() as conn:
        existing = conn.execute(select(runs.c.started_at, runs.c.status, runs.c.finished_at)
                                .where(runs.c.scoring_run_id == run_id)).first()
        done = frozenset(conn.execute(
            select(job.history.c[job.key]).where(job.history.c.scoring_run_id == run_id)
        ).scalars().all())
        latest = conn.execute(select(func.max(job.scores.c.as_of))).scalar()
        newer = latest if latest is not None and latest > as_of else None
        if existing is None:
            run = RunState(run_id, utc_now(), done, newer_as_of=newer, backfill=backfill)
        else:
            run = RunState(run_id, existing.started_at, done, existing.status, existing.finished_at, newer, backfill)
        if run.already_finished and not pending(ids, run) and not run.replaces_newer:
            return run
        row = {
            "scoring_run_id": run_id, "job": job.name, "model_name": model.name, "model_version": model.version,
            "model_uri": model.uri, "as_of": as_of, "as_of_source": as_of_source, "started_at": run.started_at,
            "finished_at": None,
            "status": "running", "rows_total": len(ids), "error": None,
        }
        if existing is None:
            row["rows_scored"] = 0
        upsert_frame(conn, runs, pd.DataFrame([row]))
    return run


def with_trend(scores: pd.DataFrame, current: pd.DataFrame, run: RunState) -> pd.DataFrame:
    """Add ``previous_score`` and ``trend`` (up, steady, down or new) against each lead's previous score.

    ``current`` holds the lead_scores rows before this chunk is written; a row this same run wrote (a
    resumed or repeated run) keeps the previous score it was compared with the first time. A previous
    score by another model version is shown but not compared (trend ``new``): a retrained model ranks
    leads afresh, and a change of model is not a change in the lead. A score as of a later date than this
    run's (a backfill) is not "previous": both are left empty.
    """
    before = current.set_index("lead_id").reindex(scores["lead_id"])
    from_this_run = (before["scoring_run_id"] == run.scoring_run_id).to_numpy()
    later = (before["as_of"] > scores["as_of"].to_numpy()).to_numpy() & ~from_this_run
    previous = before["score"].where(~from_this_run, before["previous_score"]).astype("Float64").to_numpy()
    previous = pd.Series(previous, index=scores.index).mask(later)
    same_model = (before["model_name"].to_numpy() == scores["model_name"].to_numpy()) & (
        before["model_version"].to_numpy() == scores["model_version"].to_numpy())
    delta = scores["score"] - previous
    trend = pd.Series("steady", index=scores.index, dtype=object)
    trend[delta >= TREND_STEADY_POINTS] = "up"
    trend[delta <= -TREND_STEADY_POINTS] = "down"
    trend[previous.isna().to_numpy() | ~same_model] = "new"
    trend[later] = None
    return scores.assign(previous_score=previous.astype("Int64").to_numpy(), trend=trend.to_numpy())


def write_chunk(
    engine: Engine, job: Job, run: RunState, model: ModelIdentity, as_of: datetime, scores: pd.DataFrame
) -> int:
    """Upsert one chunk of scores (unless newer ones are kept) and their history rows and advance the ledger, in one
    transaction."""
    stamped = scores.assign(
        model_name=model.name, model_version=model.version, run_id=model.run_id,
        scoring_run_id=run.scoring_run_id, as_of=as_of, scored_at=run.started_at,
    )
    ids = stamped[job.key].tolist()
    with engine.begin() as conn:
        if job is LEAD_JOB:
            current = read_frame(conn, job.scores, ["lead_id", "score", "previous_score", "scoring_run_id",
                                                    "model_name", "model_version", "as_of"],
                                 where=job.scores.c.lead_id.in_(ids))
            stamped = with_trend(stamped, current, run)
        if run.writes_scores:
            upsert_frame(conn, job.scores, stamped)
        upsert_frame(conn, job.history, stamped, key=["scoring_run_id", job.key])
        written = conn.execute(
            select(func.count()).select_from(job.history).where(job.history.c.scoring_run_id == run.scoring_run_id)
        ).scalar_one()
        conn.execute(
            schema.scoring_runs.update()
            .where(schema.scoring_runs.c.scoring_run_id == run.scoring_run_id)
            .values(rows_scored=written)
        )
    return len(ids)


def finish_run(engine: Engine, job: Job, run: RunState, error: str | None = None) -> None:
    """Mark the run failed with ``error``, or succeeded: then a run whose scores are the table's removes the rows it
    did not write (leads no longer open, customers gone), so the score table holds exactly what it scored."""
    with engine.begin() as conn:
        if error is None and run.writes_scores:
            conn.execute(job.scores.delete().where(or_(job.scores.c.scoring_run_id.is_(None),
                                                       job.scores.c.scoring_run_id != run.scoring_run_id)))
        conn.execute(
            schema.scoring_runs.update()
            .where(schema.scoring_runs.c.scoring_run_id == run.scoring_run_id)
            .values(status="failed" if error else "succeeded", finished_at=utc_now(), error=error)
        )


def pending(ids: Sequence[str], run: RunState) -> list[str]:
    """The ids this run has not written yet, in their original order."""
    return [i for i in ids if i not in run.done]


def run_batch(
    engine: Engine,
    job: Job,
    model: ModelIdentity,
    as_of: datetime,
    ids: Sequence[str],
    score_chunk: Callable[[list[str]], pd.DataFrame],
    chunk_size: int,
    progress: Callable[[int], object] | None = None,
    *,
    as_of_source: str = "given",
    backfill: bool = False,
) -> tuple[RunState, int]:
    """Score ``ids`` chunk by chunk with ``score_chunk`` and write each chunk back; returns (run, rows written).

    A failure marks the run failed (the chunks already committed stay, and the next run resumes after them).
    """

    def scored_chunks(todo: list[str]) -> Iterator[pd.DataFrame]:
        for start in range(0, len(todo), chunk_size):
            yield score_chunk(todo[start : start + chunk_size])

    return write_scored(engine, job, model, as_of, ids, scored_chunks, progress, as_of_source=as_of_source,
                        backfill=backfill)


def write_scored(
    engine: Engine,
    job: Job,
    model: ModelIdentity,
    as_of: datetime,
    ids: Sequence[str],
    scored_chunks: Callable[[list[str]], Iterable[pd.DataFrame]],
    progress: Callable[[int], object] | None = None,
    *,
    as_of_source: str = "given",
    backfill: bool = False,
) -> tuple[RunState, int]:
    """Write back the chunks ``scored_chunks`` yields for the ids not yet written; returns (run, rows written).

    ``scored_chunks`` gets the pending ids and may yield their scores in any order and chunking (the Spark
    engine streams partitions); each chunk is one transaction. A failure marks the run failed. When the run
    already succeeded and nothing is pending, nothing is scored or written and the ledger is left as it was
    (``run.already_finished``, 0 rows written). ``as_of_source`` is recorded in the ledger (``now`` or
    ``given``); ``backfill`` lets scores as of an earlier date replace newer ones.
    """
    run = open_run(engine, job, model, as_of, ids, as_of_source, backfill)
    todo = list(ids) if run.replaces_newer else pending(ids, run)
    if progress:
        progress(len(ids) - len(todo))
    if run.already_finished and not todo:
        return run, 0
    written = 0
    try:
        for scores in scored_chunks(todo):
            written += write_chunk(engine, job, run, model, as_of, scores)
            if progress:
                progress(len(scores))
    except BaseException as exc:
        finish_run(engine, job, run, error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    finish_run(engine, job, run)
    return run, written
