"""Benchmark the nightly write-back jobs end to end: read, features, score (with reasons), write.

Models: a lead and a CLV champion trained on a simulated CRM of ``--train-leads`` leads (default 50,000)
into a temporary MLflow store, or into ``--tracking-uri`` if it has no champions yet (then reused). CRM: ``--db`` (generated with ``--leads`` leads if it holds none; reused if it does,
so a 1M-lead CRM is generated once). Each engine (``--engines pandas,pandas-1,spark``) scores every open lead
and every customer as of the CRM's end, after the score tables are emptied so every run does all the work.
``pandas`` scores chunks in ``--workers`` processes, this one included (it alone writes them); ``pandas-1``,
its peer, does everything in this process, as the job did before it had workers; each other engine's wall is
given against ``pandas``.

Per run: wall seconds, rows/s, CPU seconds of this process and its children (Spark's JVM and Python
workers included; sampled), and peak resident MB of the whole process tree. The Spark engine runs
``local[N]`` on this machine: it shows the overhead of the engine at equal hardware, not a cluster's gain.

The machine has 2 cores shared with other work: figures are noisy, compare runs side by side.

    .venv/bin/python benchmarks/bench_batch.py --db sqlite:////work/bench/crm1m.db [--leads 100000]
        [--engines pandas,pandas-1,spark] [--workers N] [--tracking-uri URI]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import psutil  # noqa: E402
from sqlalchemy import delete, func, select  # noqa: E402

from features.crm import schema  # noqa: E402
from features.crm.store import connect, create_schema  # noqa: E402
from features.lead_history import crm_period  # noqa: E402
from features.simulate.config import SimulationConfig  # noqa: E402
from features.simulate.generate import generate_crm  # noqa: E402

if TYPE_CHECKING:  # the jobs and training import MLflow: imported where used, as the pandas engine's worker
    from serving.batch.jobs import BatchResult  # processes (spawned: they import this script again) need neither

SCORE_TABLES = (schema.lead_score_history, schema.lead_scores, schema.customer_score_history,
                schema.customer_scores, schema.scoring_runs)


@dataclass(frozen=True)
class Measured:
    """One job run: what it did and what it cost."""

    result: BatchResult
    wall: float
    cpu: float
    peak_mb: float


class TreeSampler:
    """Peak RSS and CPU time of this process and all its descendants, sampled in a thread.

    CPU: each process's own time as last sampled, plus the time of this process's children it has reaped (worker
    processes, short-lived ones never sampled) less what was sampled of those children, so none counts twice.
    """

    def __init__(self, every: float = 0.25) -> None:
        self.every, self.peak, self.cpu_seen, self.children = every, 0.0, {}, set()
        self.reaped = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        rss = 0
        own = me.cpu_times()
        self.reaped = own.children_user + own.children_system
        self.children.update(child.pid for child in me.children())
        for proc in [me, *me.children(recursive=True)]:
            try:
                rss += proc.memory_info().rss
                times = proc.cpu_times()
                self.cpu_seen[proc.pid] = times.user + times.system
            except psutil.NoSuchProcess:
                continue
        self.peak = max(self.peak, rss / 2**20)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def __enter__(self) -> TreeSampler:
        self._sample()
        self.start_cpu, self.start_reaped = dict(self.cpu_seen), self.reaped
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def cpu(self) -> float:
        alive = {child.pid for child in psutil.Process().children()}
        gone = sum(self.cpu_seen[pid] - self.start_cpu.get(pid, 0.0) for pid in self.children - alive
                   if pid in self.cpu_seen)
        sampled = sum(v - self.start_cpu.get(pid, 0.0) for pid, v in self.cpu_seen.items())
        return sampled + max(0.0, self.reaped - self.start_reaped - gone)


def measure(job: Callable[[], BatchResult]) -> Measured:
    started = time.perf_counter()
    with TreeSampler() as sampler:
        result = job()
    return Measured(result, time.perf_counter() - started, sampler.cpu(), sampler.peak)


def train_models(tracking_uri: str, artifact_root: str, workdir: Path, leads: int) -> None:
    """Both champions from a simulated CRM of ``leads`` leads (the benchmark measures scoring, not training)."""
    from training.clv.job import train_from_crm
    from training.leads.data.splits import CrmTrainingConfig, crm_splits
    from training.leads.job import train_and_register

    url = f"sqlite:///{workdir / 'train.db'}"
    engine = connect(url)
    generate_crm(engine, SimulationConfig(n_leads=leads, n_customers=leads // 5, seed=1))
    config = CrmTrainingConfig()
    train_and_register(crm_splits(engine, config), config, tracking_uri, artifact_root)
    train_from_crm(url, tracking_uri, artifact_root)
    engine.dispose()


def crm_size(url: str, leads: int, seed: int) -> tuple[int, int, int]:
    """(leads, activities, customers) of the CRM, generating ``leads`` leads first if it has none."""
    engine = connect(url)
    create_schema(engine)
    with engine.connect() as conn:
        existing = conn.execute(select(func.count()).select_from(schema.leads)).scalar_one()
    if existing == 0:
        started = time.perf_counter()
        generate_crm(engine, SimulationConfig(n_leads=leads, n_customers=leads // 5, seed=seed))
        print(f"generated {leads:,} leads in {time.perf_counter() - started:.0f} s", flush=True)
    with engine.connect() as conn:
        counts = tuple(conn.execute(select(func.count()).select_from(t)).scalar_one()
                       for t in (schema.leads, schema.activities, schema.customers))
    return counts


def clear_scores(url: str) -> None:
    with connect(url).begin() as conn:
        for table in SCORE_TABLES:
            conn.execute(delete(table))


def line(label: str, m: Measured, unit: str) -> str:
    rate = m.result.scored / m.wall if m.wall else 0.0
    return (f"  {label:<22} {m.result.scored:>10,} {unit:<9} {m.wall:9.1f} s wall {rate:10,.0f} {unit}/s "
            f"{m.cpu:9.1f} s cpu  peak {m.peak_mb:7,.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="CRM URL [default: a temporary SQLite file]")
    parser.add_argument("--leads", type=int, default=100_000, help="leads to generate if the CRM is empty")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--engines", default="pandas,pandas-1,spark",
                        help="pandas: --workers processes score, this one writes; pandas-1: all in this process (the "
                             "job before it had workers); spark: local Spark")
    parser.add_argument("--workers", type=int, help="the pandas engine's scoring processes, this one included "
                                                    "[default: the job's, the usable cores, at most 2]")
    parser.add_argument("--tracking-uri", help="MLflow store to use (trained into first if it has no champions)")
    parser.add_argument("--train-leads", type=int, default=50_000)
    parser.add_argument("--artifact-root", help="with --tracking-uri: where its artifacts go")
    parser.add_argument("--spark-master", default="local[2]")
    args = parser.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    from serving.batch.jobs import score_customers, score_open_leads
    from serving.batch.pool import default_workers
    from training.registry import champion_version
    from training.tracking import use_tracking

    workers = args.workers or default_workers()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        tracking_uri = args.tracking_uri or f"sqlite:///{workdir / 'mlflow.db'}"
        use_tracking(tracking_uri)
        if champion_version("lead-scoring") is None or champion_version("clv") is None:
            started = time.perf_counter()
            train_models(tracking_uri, args.artifact_root or str(workdir / "artifacts"), workdir, args.train_leads)
            print(f"trained both models on {args.train_leads:,} leads in {time.perf_counter() - started:.0f} s")
        url = args.db or f"sqlite:///{workdir / 'crm.db'}"
        n_leads, n_activities, n_customers = crm_size(url, args.leads, args.seed)
        engine = connect(url)
        as_of = crm_period(engine)[1].to_pydatetime()
        print(f"CRM {engine.url.get_backend_name()}: {n_leads:,} leads, {n_activities:,} activities, "
              f"{n_customers:,} customers; as of {as_of:%Y-%m-%d}; {os.cpu_count()} cores; pandas engine {workers} "
              "scoring processes", flush=True)
        runs: dict[str, tuple[Measured, Measured]] = {}
        for name in engines:
            clear_scores(url)
            if name in ("pandas", "pandas-1"):
                pool = workers if name == "pandas" else 1
                leads = measure(lambda: score_open_leads(engine, as_of=as_of, workers=pool))
                customers = measure(lambda: score_customers(engine, as_of=as_of))
            else:
                from serving.batch.spark_jobs import score_customers_spark, score_open_leads_spark
                from serving.batch.spark_source import load_spark_settings, spark_session

                settings = load_spark_settings(master=args.spark_master)
                started = time.perf_counter()
                spark = spark_session(settings)
                print(f"  spark session up in {time.perf_counter() - started:.1f} s", flush=True)
                leads = measure(lambda: score_open_leads_spark(engine, url, spark, settings, as_of=as_of))
                customers = measure(lambda: score_customers_spark(engine, url, spark, settings, as_of=as_of))
                spark.stop()
            runs[name] = (leads, customers)
            print(line(f"{name}: open leads", leads, "leads"), flush=True)
            print(line(f"{name}: customers", customers, "customers"), flush=True)
        if "pandas" in runs:
            base_leads, base_customers = runs["pandas"]
            for name, (leads, customers) in runs.items():
                if name != "pandas":
                    print(f"  {name} / pandas wall: leads {leads.wall / base_leads.wall:.2f}x, "
                          f"customers {customers.wall / base_customers.wall:.2f}x")


if __name__ == "__main__":
    main()
