"""Score lead chunks in worker processes that die with the job, so the nightly run uses more cores than one.

Workers read their chunk on a read-only connection to the CRM, compute features and scores with the same
:func:`chunk_scores` as the in-process path, and send the frame back; the parent scores chunks too while it waits,
and alone writes, in chunk order, through :mod:`serving.batch.writeback`, so the ledger, resume and one
transaction per chunk stay as they are.

Workers start with ``spawn`` (none of the parent's connections, locks or threads are copied) and are killed by
Linux when the parent dies (``PR_SET_PDEATHSIG``; elsewhere a thread watches the parent): a ``kill -9`` of the
job leaves no worker behind, and the next run resumes. At most :data:`IN_FLIGHT_PER_WORKER` chunks per worker
are under way, so memory stays that of a few chunks whatever the number of leads.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import Engine, and_, event

from features.crm import schema
from features.crm.store import connect, read_frame
from features.errors import InvalidInput
from features.lead_features import ACTIVITY_INPUT_COLUMNS, LeadFeatureArrays, lead_feature_arrays
from features.lead_history import LEAD_COLUMNS
from training.clv.predict import CLVParameters
from training.leads.scorer import LeadScorer
from training.leads.value import lead_values

WORKERS_ENV = "LEADVAL_WORKERS"
"""Environment variable naming the processes that score chunks, the job's own included, when ``--workers`` is not
given."""

MAX_DEFAULT_WORKERS = 2
"""The default is the usable cores, at most this many processes: each holds the libraries, the model and a chunk
(~0.45 GB resident), and the nightly run is to stay within 1 GB."""

IN_FLIGHT_PER_WORKER = 2
"""Chunks handed ahead to each other process: one being scored, one waiting, so it never idles on the writer."""

READ_LEADS = 500
"""Leads whose activities are read in one query within a chunk (their rows are Python objects until framed)."""

SCORE_ROWS = 500
"""Leads scored at once within a chunk: the reason codes' working arrays grow with it (~35 MB per 1,000 leads).
With 500 and 500 (was 1,000 and 1,000) the 1M-lead nightly run peaks at 958-959 MB over both processes against
1,028-1,049 MB, as fast (134.8-140.0 s against 134.8-142.4 s, three runs each, ``benchmarks/bench_batch.py``)."""

PR_SET_PDEATHSIG = 1
"""Linux ``prctl`` option: the signal a process gets when its parent dies."""


def default_workers() -> int:
    """``LEADVAL_WORKERS`` when set, else the usable cores capped at :data:`MAX_DEFAULT_WORKERS`."""
    given = os.environ.get(WORKERS_ENV, "").strip()
    if given:
        if not given.isdigit() or int(given) < 1:
            raise InvalidInput(f"{WORKERS_ENV}={given!r}: expected a whole number of processes, 1 or more")
        return int(given)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_WORKERS))


def lead_chunk_frames(engine: Engine, ids: list[str], as_of: datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The CRM rows of these leads and their activities up to ``as_of``.

    ``ids`` come in the database's order (as :func:`serving.batch.jobs.open_lead_ids` returns them), so the chunk
    is read as the id range from its first to its last id, and then cut to ``ids``: an index range scan, where
    PostgreSQL plans a 5,000-value ``IN`` list on a large table as a full scan (~3 s per chunk at 36M
    activities, against ~0.3 s). Activities are read :data:`READ_LEADS` leads' range at a time: the driver's
    rows cost ~150 MB per 5,000 leads until they are a frame.
    """
    leads_t, acts_t = schema.leads, schema.activities
    leads = read_frame(engine, leads_t, LEAD_COLUMNS, leads_t.c.lead_id.between(ids[0], ids[-1]))
    parts = [read_frame(engine, acts_t, ACTIVITY_INPUT_COLUMNS,
                        and_(acts_t.c.lead_id.between(part[0], part[-1]), acts_t.c.occurred_at <= as_of))
             for part in (ids[start : start + READ_LEADS] for start in range(0, len(ids), READ_LEADS))]
    found = [part for part in parts if len(part)] or parts[:1]
    activities = found[0] if len(found) == 1 else pd.concat(found, ignore_index=True)
    wanted = pd.Index(ids)
    leads = leads[leads["lead_id"].isin(wanted)].reset_index(drop=True)
    activities = activities[activities["lead_id"].isin(wanted)].reset_index(drop=True)
    later = leads["converted_at"] > pd.Timestamp(as_of)
    leads.loc[later, ["converted_at", "customer_id"]] = None
    return leads, activities


def chunk_scores(scorer: LeadScorer, clv_params: CLVParameters | None, leads: pd.DataFrame,
                 activities: pd.DataFrame, as_of: datetime) -> pd.DataFrame:
    """Scores plus ``expected_value`` of these CRM leads as of ``as_of``: what the job writes for a chunk.

    The leads are scored :data:`SCORE_ROWS` at a time (each lead's score and reasons are its own), so the
    working arrays of the reason codes stay small whatever the chunk size.
    """
    features = lead_feature_arrays(leads, activities, as_of)

    def part(rows: slice) -> pd.DataFrame:
        scores, values = lead_values(scorer, clv_params, LeadFeatureArrays(
            features.lead_ids[rows], features.profile[rows], features.behaviour[rows]))
        return scores.frame("lead_id", features.lead_ids[rows]).assign(expected_value=values)

    parts = [part(slice(start, start + SCORE_ROWS)) for start in range(0, max(len(features.lead_ids), 1), SCORE_ROWS)]
    return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)


@dataclass(frozen=True)
class ChunkScorer:
    """What scoring a chunk needs: the CRM (read only), the model, the CLV parameters and the as-of."""

    engine: Engine
    scorer: LeadScorer
    clv_params: CLVParameters | None
    as_of: datetime

    def __call__(self, ids: list[str]) -> pd.DataFrame:
        """The scores of these leads (a chunk in the database's id order)."""
        leads, activities = lead_chunk_frames(self.engine, ids, self.as_of)
        return chunk_scores(self.scorer, self.clv_params, leads, activities, self.as_of)


_worker: ChunkScorer | None = None
"""In a worker process: its chunk scorer, set once by :func:`_start_worker`."""


def _die_with(parent: int) -> None:
    """End this process when ``parent`` dies: ``PR_SET_PDEATHSIG`` on Linux, else a thread watching the parent."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(1)

        threading.Thread(target=watch, daemon=True, name="leadval-parent-watch").start()
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os._exit(1)


def read_only(engine: Engine) -> Engine:
    """``engine`` with every connection refusing writes (SQLite ``query_only``, a read-only PostgreSQL session)."""
    sqlite = engine.dialect.name == "sqlite"
    statement = "PRAGMA query_only=ON" if sqlite else "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"

    def refuse_writes(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute(statement)
        cursor.close()
        dbapi_conn.commit()

    event.listen(engine, "connect", refuse_writes)
    engine.dispose()  # the connection `connect` opened to check the database predates the listener
    return engine


def _start_worker(parent: int, url: str, scorer: LeadScorer, clv_params: CLVParameters | None,
                  as_of: datetime) -> None:
    """A worker's initializer: die with ``parent``, then open the CRM read-only."""
    global _worker
    _die_with(parent)
    _worker = ChunkScorer(read_only(connect(url, create=False)), scorer, clv_params, as_of)


def _score_in_worker(ids: list[str]) -> pd.DataFrame:
    """A worker's task: the scores of one chunk."""
    assert _worker is not None, "the worker's initializer did not run"
    return _worker(ids)


class LeadChunkPool:
    """Scores chunks of leads in ``workers`` processes, this one included (alone, for one worker or one chunk).

    This process writes the chunks in order and, whenever the next one is not back from a worker yet, scores a
    later one itself, so it neither idles nor starves the workers, and no process sits waiting with its memory.
    Use it as a context manager: the other processes start at the first chunk that needs them and are shut down
    on leaving the block, whatever happened; they die with this process in any case.
    """

    def __init__(self, here: ChunkScorer, workers: int) -> None:
        self.here, self.workers = here, workers
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> LeadChunkPool:
        return self

    def __exit__(self, *_: object) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _started(self, helpers: int) -> ProcessPoolExecutor:
        """The other processes, started on first use."""
        if self._executor is None:
            here = self.here
            self._executor = ProcessPoolExecutor(
                helpers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                initargs=(os.getpid(), here.engine.url.render_as_string(hide_password=False), here.scorer,
                          here.clv_params, here.as_of))
        return self._executor

    def scored(self, ids: list[str], chunk_size: int) -> Iterator[pd.DataFrame]:
        """The scores of ``ids`` chunk by chunk, in chunk order, at most a few chunks per process under way."""
        chunks = [ids[start : start + chunk_size] for start in range(0, len(ids), chunk_size)]
        helpers = min(self.workers, len(chunks)) - 1
        if helpers < 1:
            yield from map(self.here, chunks)
            return
        executor = self._started(helpers)
        ahead = IN_FLIGHT_PER_WORKER * helpers
        under_way: dict[int, Future[pd.DataFrame]] = {}
        ready: dict[int, pd.DataFrame] = {}
        handed_out = 0
        for index in range(len(chunks)):
            while True:
                while handed_out < len(chunks) and len(under_way) < ahead:
                    under_way[handed_out] = executor.submit(_score_in_worker, chunks[handed_out])
                    handed_out += 1
                if (index in ready or under_way[index].done() or handed_out == len(chunks)
                        or len(ready) >= ahead):
                    break
                ready[handed_out] = self.here(chunks[handed_out])
                handed_out += 1
            yield ready.pop(index) if index in ready else under_way.pop(index).result()
