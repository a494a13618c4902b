"""Nightly write-back jobs: score every open lead and every customer into the CRM.

Both jobs read in chunks, score through the same functions as the service (:func:`training.leads.value.lead_values`,
:func:`training.clv.predict.predict_clv`), and write through
:mod:`serving.batch.writeback`, which makes reruns idempotent and a killed run resumable. Each result says
what this invocation scored and wrote, what an earlier attempt of the same run had written, and warns when
the as-of is more than :data:`STALE_AFTER_DAYS` after the CRM's last activity (leads) or order (customers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
from sqlalchemy import Column, Engine, and_, func, or_, select

from features.crm import schema
from features.crm.store import create_schema, read_frame
from features.errors import InvalidInput
from features.lead_features import as_of_timestamp
from features.rfm import rfm_summary
from serving.batch.pool import ChunkScorer, LeadChunkPool, chunk_scores, default_workers
from serving.batch.pool import lead_chunk_frames as lead_chunk_frames  # monitoring reads the job's chunks
from serving.batch.runs import RunPlan, job_lock, plan_run
from serving.batch.writeback import CUSTOMER_JOB, LEAD_JOB, ModelIdentity, RunState, run_batch, utc_now, write_scored
from training.clv.predict import CLVParameters, predict_clv, rfm_in_days
from training.leads.pyfunc import scorer_of
from training.registry import CLV_MODEL_URI, LEAD_MODEL_URI, ModelNotFound, load_registered, registered_identity

STALE_AFTER_DAYS = 14
"""An as-of more than this many days after the CRM's last activity (or order) gets a warning."""


@dataclass(frozen=True)
class BatchResult:
    """What a batch run did, for the summary line and ``--json``.

    ``scored``: rows this invocation scored (a dry run scores but writes nothing); ``written``: rows it wrote;
    ``already``: rows an earlier attempt of the same run had written (a resumed run, or a rerun of work
    already done); ``total``: rows the run covers. ``already_finished_at`` is when an earlier attempt
    finished the run, for a rerun that found it done (then nothing is scored or written).
    """

    job: str
    scoring_run_id: str | None
    scored: int
    total: int
    model_name: str
    model_version: str | None
    as_of: datetime
    dry_run: bool
    seconds: float
    written: int = 0
    already: int = 0
    already_finished_at: datetime | None = None
    as_of_source: str = "given"
    warnings: tuple[str, ...] = ()


def written_result(job: str, run: RunState, written: int, total: int, identity: ModelIdentity, plan: RunPlan,
                   started: datetime, warnings: tuple[str, ...]) -> BatchResult:
    """The result of a run that wrote back ``written`` of ``total`` rows (the rest an earlier attempt wrote), with
    what it found of dead runs and newer scores among the warnings."""
    kept = ()
    if not run.writes_scores:
        tables = LEAD_JOB if job == LEAD_JOB.name else CUSTOMER_JOB
        kept = (f"{tables.scores.name} holds scores as of {run.newer_as_of:%Y-%m-%d %H:%M}, later than this run's "
                f"as-of ({plan.as_of:%Y-%m-%d %H:%M}): they were kept, and this run's scores went to "
                f"{tables.history.name} only; pass --backfill to replace them",)
    return BatchResult(job, run.scoring_run_id, written, total, identity.name, identity.version, plan.as_of, False,
                       (utc_now() - started).total_seconds(), written=written, already=total - written,
                       already_finished_at=run.previous_finished_at if run.already_finished and not written else None,
                       as_of_source=plan.source, warnings=plan.abandoned + kept + warnings)


def dry_result(job: str, scored: int, total: int, identity: ModelIdentity, as_of: datetime, started: datetime,
               warnings: tuple[str, ...]) -> BatchResult:
    """The result of a dry run: scored, nothing written, no run recorded."""
    return BatchResult(job, None, scored, total, identity.name, identity.version, as_of, True,
                       (utc_now() - started).total_seconds(), warnings=warnings)


def given_as_of(as_of: datetime | str | None) -> datetime | None:
    """``--as-of`` as a naive UTC datetime, or None for "as of the run's start" (resolved once, in the ledger)."""
    return None if as_of is None else as_of_timestamp(as_of).to_pydatetime()


def latest_time(engine: Engine, column: Column) -> datetime | None:
    """The latest value of a CRM time column (e.g. the last activity), or None for an empty table."""
    with engine.connect() as conn:
        value = conn.execute(select(func.max(column))).scalar()
    return None if value is None else pd.Timestamp(value).to_pydatetime()


STALE_WORDS = {"leads": ("activity", "open lead is scored"), "customers": ("order", "customer is valued")}
"""Per job: the CRM event its staleness is measured from, and what the warning says of each scored row."""


def staleness_warnings(job: str, as_of: datetime, last: datetime | None) -> tuple[str, ...]:
    """A warning when ``as_of`` is more than :data:`STALE_AFTER_DAYS` after the CRM's ``last`` activity (leads)
    or order (customers).

    Features and RFM are computed as of ``as_of``, so every lead (or customer) of a CRM that stopped being
    updated looks silent since its last event: scores fall for no reason a salesperson could see.
    """
    if last is None or as_of - last <= timedelta(days=STALE_AFTER_DAYS):
        return ()
    event, scored = STALE_WORDS[job]
    days = (as_of - last).days
    return (f"stale CRM: the as-of ({as_of:%Y-%m-%d %H:%M}) is {days:,} days after its last {event} "
            f"({last:%Y-%m-%d %H:%M}), so every {scored} as if nothing had happened since; check that the CRM is "
            f"still being updated, or pass --as-of {last:%Y-%m-%dT%H:%M:%S} to score as of its last {event}",)


def model_identity(uri: str) -> tuple[ModelIdentity, object]:
    """The loaded model and who it is; a URI that names nothing fails here, before anything is written."""
    name, version, run_id = registered_identity(uri)
    return ModelIdentity(name, version, run_id, uri), load_registered(uri)


def open_lead_ids(engine: Engine, as_of: datetime, created_after: datetime | None = None) -> list[str]:
    """Leads created by ``as_of`` (and after ``created_after``, when given) and not converted by then, in id order."""
    leads = schema.leads
    open_then = and_(leads.c.created_at <= as_of, or_(leads.c.converted_at.is_(None), leads.c.converted_at > as_of))
    if created_after is not None:
        open_then = and_(open_then, leads.c.created_at > created_after)
    query = select(leads.c.lead_id).where(open_then).order_by(leads.c.lead_id)
    with engine.connect() as conn:
        return list(conn.execute(query).scalars())


def score_lead_chunk(lead_model: object, clv_params: CLVParameters | None, leads: pd.DataFrame,
                     activities: pd.DataFrame, as_of: datetime) -> pd.DataFrame:
    """Scores plus the value-weighted ``expected_value`` of these CRM leads as of ``as_of``."""
    return chunk_scores(scorer_of(lead_model), clv_params, leads, activities, as_of)


def optional_clv_parameters(uri: str) -> CLVParameters | None:
    """The CLV model's parameters for ``expected_value``, or None when there is no such model."""
    try:
        return load_registered(uri).unwrap_python_model().params
    except ModelNotFound:
        return None


def score_open_leads(
    engine: Engine,
    model_uri: str = LEAD_MODEL_URI,
    clv_model_uri: str = CLV_MODEL_URI,
    as_of: datetime | str | None = None,
    chunk_size: int = 5_000,
    dry_run: bool = False,
    progress: Callable[[int], object] | None = None,
    backfill: bool = False,
    workers: int | None = None,
) -> BatchResult:
    """Score every open lead as of ``as_of`` (default: the run's start, UTC) into ``lead_scores`` and its history.

    ``expected_value`` needs the CLV model; without one it is left empty. A rerun of work already done
    scores and writes nothing (see :class:`BatchResult`); one run per job at a time, and a crashed default
    run is resumed (:mod:`serving.batch.runs`). Chunks are scored in ``workers`` processes, this one included
    (default :func:`serving.batch.pool.default_workers`; 1: this one alone), and written by this one, in order.
    """
    started = utc_now()
    identity, model = model_identity(model_uri)
    clv_params = optional_clv_parameters(clv_model_uri)
    create_schema(engine)
    workers = default_workers() if workers is None else workers

    def pool(at: datetime) -> LeadChunkPool:
        return LeadChunkPool(ChunkScorer(engine, scorer_of(model), clv_params, at), workers)

    def stale(at: datetime) -> tuple[str, ...]:
        return staleness_warnings("leads", at, latest_time(engine, schema.activities.c.occurred_at))

    if dry_run:
        at = given_as_of(as_of) or started
        ids = open_lead_ids(engine, at)
        with pool(at) as chunks:
            scored = sum(len(scores) for scores in chunks.scored(ids, chunk_size))
        return dry_result("leads", scored, len(ids), identity, at, started, stale(at))
    with job_lock(engine, LEAD_JOB):
        plan = plan_run(engine, LEAD_JOB, identity, given_as_of(as_of), started)
        ids = open_lead_ids(engine, plan.as_of)
        with pool(plan.as_of) as chunks:
            run, written = write_scored(engine, LEAD_JOB, identity, plan.as_of, ids,
                                        lambda todo: chunks.scored(todo, chunk_size), progress,
                                        as_of_source=plan.source, backfill=backfill)
    return written_result("leads", run, written, len(ids), identity, plan, started, stale(plan.as_of))


def customer_rfm(engine: Engine, as_of: datetime) -> pd.DataFrame:
    """Every customer with an order by ``as_of`` as the CLV model's input (RFM in days)."""
    orders = read_frame(engine, schema.orders, ["customer_id", "ordered_at", "amount"],
                        schema.orders.c.ordered_at <= as_of)
    if orders.empty:
        raise InvalidInput(f"orders: no orders on or before {as_of:%Y-%m-%d}; nothing to score")
    return rfm_in_days(rfm_summary(orders, as_of), "D").sort_values("customer_id").reset_index(drop=True)


def clv_model_warnings(identity: ModelIdentity, params: CLVParameters) -> tuple[str, ...]:
    """What the CLV model's training found doubtful (a degenerate fit, Gamma-Gamma's assumption, segments by
    recency), said on every run that scores with it; models saved before warnings were recorded (pyfunc format 1)
    load with none."""
    version = f" v{identity.version}" if identity.version else ""
    return tuple(f"CLV model {identity.name}{version}: {warning}" for warning in params.warnings)


def score_customers(
    engine: Engine,
    model_uri: str = CLV_MODEL_URI,
    as_of: datetime | str | None = None,
    chunk_size: int = 20_000,
    dry_run: bool = False,
    progress: Callable[[int], object] | None = None,
    backfill: bool = False,
) -> BatchResult:
    """Score every customer as of ``as_of`` (default: the run's start, UTC) into ``customer_scores`` and its history.

    A rerun of work already done scores and writes nothing (see :class:`BatchResult`); runs are locked and
    resumed as the leads job's are.
    """
    started = utc_now()
    identity, model = model_identity(model_uri)
    params = model.unwrap_python_model().params
    create_schema(engine)
    horizon = int(params.horizon_days)

    def warned(at: datetime) -> tuple[str, ...]:
        return (staleness_warnings("customers", at, latest_time(engine, schema.orders.c.ordered_at))
                + clv_model_warnings(identity, params))

    def score_chunk(rfm: pd.DataFrame, chunk: list[str]) -> pd.DataFrame:
        return predict_clv(params, rfm.loc[chunk].reset_index(drop=True)).assign(horizon_days=horizon)

    if dry_run:
        at = given_as_of(as_of) or started
        rfm = customer_rfm(engine, at).set_index("customer_id", drop=False)
        return dry_result("customers", len(score_chunk(rfm, rfm.index.tolist())), len(rfm), identity, at, started,
                          warned(at))
    with job_lock(engine, CUSTOMER_JOB):
        plan = plan_run(engine, CUSTOMER_JOB, identity, given_as_of(as_of), started)
        rfm = customer_rfm(engine, plan.as_of).set_index("customer_id", drop=False)
        ids = rfm["customer_id"].tolist()
        run, written = run_batch(engine, CUSTOMER_JOB, identity, plan.as_of, ids,
                                 lambda chunk: score_chunk(rfm, chunk), chunk_size, progress,
                                 as_of_source=plan.source, backfill=backfill)
    return written_result("customers", run, written, len(ids), identity, plan, started, warned(plan.as_of))
