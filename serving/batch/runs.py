"""Which run a batch invocation is: one run per job at a time, and a crashed run resumed, never left running.

A job (``leads`` or ``customers``) holds a lock the operating system or the database releases when the process
dies: ``flock`` on a file beside a SQLite CRM, a PostgreSQL session advisory lock. So whoever holds it knows at
once that every ledger row still ``running`` belongs to a dead process. Without ``--as-of`` the run scores as of
its own start, recorded in ``scoring_runs`` (``as_of_source`` ``now``); the same command after a crash resumes
that run at its recorded as-of when it started within :data:`RESUME_WITHIN`, and otherwise marks it failed and
starts anew.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, select, text

from features.crm import schema
from features.crm.urls import sqlite_file
from features.errors import DatabaseUnavailable, LeadvalError
from serving.batch.writeback import Job, ModelIdentity, scoring_run_id, utc_now

RESUME_WITHIN = timedelta(hours=24)
"""An unfinished default-as-of run that started longer ago than this is marked failed, not resumed."""


class RunInProgress(LeadvalError):
    """Another process is running the same job on the same CRM."""


@dataclass(frozen=True)
class RunPlan:
    """The as-of this invocation scores at, where it came from, and what it found of earlier runs.

    ``source`` is ``given`` (``--as-of``) or ``now``; ``resumed`` names the unfinished run whose recorded as-of
    it takes; ``abandoned`` describes the dead runs it marked failed instead.
    """

    as_of: datetime
    source: str
    resumed: str | None = None
    abandoned: tuple[str, ...] = ()


def _lock_file(engine: Engine) -> Path | None:
    """The SQLite CRM file the engine writes to, or None (PostgreSQL, in-memory SQLite)."""
    if engine.dialect.name != "sqlite":
        return None
    return sqlite_file(engine.url.render_as_string(hide_password=False))


def _advisory_key(job: Job, database: str, schema_name: str) -> int:
    """A signed 64-bit advisory-lock key for the job on this database and schema (two CRMs never share one)."""
    digest = hashlib.blake2b(f"leadval|{job.name}|{database}|{schema_name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _in_progress(engine: Engine, job: Job) -> RunInProgress:
    """The error for a job another process holds, naming that process's run when its ledger row exists yet."""
    runs = schema.scoring_runs
    with engine.connect() as conn:
        other = conn.execute(select(runs.c.scoring_run_id, runs.c.started_at, runs.c.as_of)
                             .where(runs.c.job == job.name, runs.c.status == "running")
                             .order_by(runs.c.started_at.desc()).limit(1)).first()
    which = (f" (run {other.scoring_run_id}, as of {other.as_of:%Y-%m-%d %H:%M}, started "
             f"{other.started_at:%Y-%m-%d %H:%M:%S} UTC)" if other is not None else "")
    return RunInProgress(f"another 'leadval score {job.name}' is writing {job.name} scores to this CRM{which}; this "
                         "one stopped without writing. Run it again when that one has finished (a run that was "
                         "killed is resumed by the next)")


@contextmanager
def job_lock(engine: Engine, job: Job) -> Iterator[None]:
    """Hold the job's lock for the ``with`` block; raises :class:`RunInProgress` when another process holds it."""
    path = _lock_file(engine)
    if path is not None:
        try:
            handle = open(f"{path}.{job.name}.lock", "a")  # noqa: SIM115 - closed below, after the run
        except OSError as exc:
            raise DatabaseUnavailable(f"cannot create the run lock {path}.{job.name}.lock beside the SQLite CRM "
                                      f"{path}: {exc.strerror}; give this user write access to its folder") from None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise _in_progress(engine, job) from None
            yield
        return
    if engine.dialect.name != "postgresql":
        yield  # in-memory SQLite: one process only
        return
    with engine.connect() as conn:
        database, schema_name = conn.execute(text("SELECT current_database(), current_schema()")).one()
        key = _advisory_key(job, database, schema_name)
        taken = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar_one()
        conn.commit()  # a session lock outlives the transaction; no transaction stays open while the run works
        if not taken:
            raise _in_progress(engine, job)
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            conn.commit()


def plan_run(engine: Engine, job: Job, model: ModelIdentity, as_of: datetime | None,
             now: datetime | None = None) -> RunPlan:
    """Decide the run's as-of and settle dead runs; call it holding :func:`job_lock`.

    Every ``running`` row of the job is a dead process's. Without ``as_of``, the latest default-as-of run of the
    same model version is resumed (its recorded as-of is taken) when it did not succeed and started within
    :data:`RESUME_WITHIN`; every other dead run, but the one this run continues, is marked failed and described
    in ``abandoned``.
    """
    now = now or utc_now()
    given = as_of
    runs = schema.scoring_runs
    resumed = None
    with engine.begin() as conn:
        if as_of is None:
            same_model = (runs.c.model_version.is_(None) if model.version is None
                          else runs.c.model_version == model.version)
            last = conn.execute(select(runs.c.scoring_run_id, runs.c.as_of, runs.c.status, runs.c.started_at)
                                .where(runs.c.job == job.name, runs.c.model_name == model.name, same_model,
                                       runs.c.as_of_source == "now")
                                .order_by(runs.c.started_at.desc()).limit(1)).first()
            if last is not None and last.status != "succeeded" and now - last.started_at <= RESUME_WITHIN:
                resumed = last.scoring_run_id
                as_of = last.as_of
        as_of = as_of or now
        mine = scoring_run_id(job, model, as_of)
        dead = conn.execute(select(runs.c.scoring_run_id, runs.c.as_of, runs.c.started_at, runs.c.model_name,
                                   runs.c.model_version)
                            .where(runs.c.job == job.name, runs.c.status == "running",
                                   runs.c.scoring_run_id != mine)).all()
        abandoned = tuple(
            f"run {row.scoring_run_id} ({row.model_name} v{row.model_version}, as of {row.as_of:%Y-%m-%d %H:%M}, "
            f"started {row.started_at:%Y-%m-%d %H:%M:%S} UTC) had stopped without finishing; marked failed "
            "(a run is resumed by the same command, same model version, within 24 h)" for row in dead)
        if dead:
            error = f"interrupted: its process stopped before the run finished (found at {now:%Y-%m-%d %H:%M:%S} UTC)"
            conn.execute(runs.update().where(runs.c.scoring_run_id.in_([row.scoring_run_id for row in dead]))
                         .values(status="failed", finished_at=now, error=error))
    return RunPlan(as_of, "now" if resumed or given is None else "given", resumed, abandoned)
