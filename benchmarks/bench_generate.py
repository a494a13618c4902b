"""Benchmark ``leadval generate``: seconds, leads/s, activities/s and peak memory per CRM size and database.

Each run happens in a fresh child process so its peak RSS is its own; ``cpu s`` is that process's CPU
time during the run (not the PostgreSQL server's), less noisy than wall time on a busy machine. The
baseline writes the same CRM through ``crm_store.insert_frame`` (SQLAlchemy executemany) instead of the
simulator's ``bulk_insert`` (SQLite multi-row INSERTs / PostgreSQL COPY), side by side at the smallest
size.

    .venv/bin/python benchmarks/bench_generate.py                       # demo size and 100k, both DBs
    .venv/bin/python benchmarks/bench_generate.py --leads 1000000 --db sqlite

PostgreSQL: LEADVAL_BENCH_PG_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test), in a
fresh schema dropped afterwards. The machine is shared (2 cores): figures are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def run_one(url: str, leads: int, customers: int, chunk_leads: int, writer: str) -> dict:
    """Generate one CRM in this process; returns its figures."""
    from features.crm.store import connect, create_schema, insert_frame
    from features.simulate import generate as simulator

    write = simulator.bulk_insert if writer == "bulk_insert" else insert_frame
    writing = {"seconds": 0.0}

    def timed_write(conn, table, frame):
        started = time.perf_counter()
        try:
            return write(conn, table, frame)
        finally:
            writing["seconds"] += time.perf_counter() - started

    simulator.bulk_insert = timed_write
    engine = connect(url)
    create_schema(engine)
    config = simulator.SimulationConfig(n_leads=leads, n_customers=customers, seed=0, chunk_leads=chunk_leads)
    started, cpu_started = time.perf_counter(), time.process_time()
    counts = simulator.generate_crm(engine, config, replace=True)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    engine.dispose()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "write_seconds": writing["seconds"],
        "counts": counts,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def in_child(url: str, leads: int, customers: int, chunk_leads: int, writer: str) -> dict:
    command = [sys.executable, __file__, "--child", url, "--leads", str(leads), "--customers", str(customers),
               "--chunk-leads", str(chunk_leads), "--writer", writer]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


class PostgresSchema:
    """A fresh schema on the benchmark PostgreSQL, dropped on exit."""

    def __init__(self, base_url: str) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        self.name = f"lvbench_{uuid.uuid4().hex[:10]}"
        self.admin = create_engine(base_url)
        self.url = make_url(base_url).update_query_dict({"options": f"-csearch_path={self.name}"}).render_as_string(
            hide_password=False)

    def __enter__(self) -> str:
        from sqlalchemy import text

        with self.admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.name}"'))
        return self.url

    def __exit__(self, *exc) -> None:
        from sqlalchemy import text

        with self.admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{self.name}" CASCADE'))
        self.admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, action="append", help="CRM size(s) in leads (repeatable).")
    parser.add_argument("--customers", type=int, help="Customers not from leads (default: leads / 5, 1,000 min).")
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--chunk-leads", type=int, default=50_000)
    parser.add_argument("--no-baseline", action="store_true", help="Skip the insert_frame baseline.")
    parser.add_argument("--writer", default="bulk_insert", help=argparse.SUPPRESS)
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        leads = args.leads[0]
        print(json.dumps(run_one(args.child, leads, args.customers, args.chunk_leads, args.writer)))
        return

    sizes = args.leads or [5_000, 100_000]
    databases = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    print(f"{'db':<11}{'writer':<13}{'leads':>10}{'customers':>10}{'activities':>12}{'orders':>10}"
          f"{'seconds':>9}{'cpu s':>8}{'write s':>9}{'leads/s':>9}{'acts/s':>10}{'peak MB':>9}{'x base':>8}")
    for database in databases:
        for position, leads in enumerate(sizes):
            customers = args.customers if args.customers is not None else max(1_000, leads // 5)
            writers = ["bulk_insert"] if args.no_baseline or position else ["insert_frame", "bulk_insert"]
            baseline = None
            for writer in writers:
                ratio = "-"
                with tempfile.TemporaryDirectory() as folder:
                    if database == "sqlite":
                        result = in_child(f"sqlite:///{Path(folder) / 'crm.db'}", leads, customers, args.chunk_leads,
                                          writer)
                    else:
                        with PostgresSchema(os.environ.get("LEADVAL_BENCH_PG_URL", DEFAULT_PG_URL)) as url:
                            result = in_child(url, leads, customers, args.chunk_leads, writer)
                counts, seconds = result["counts"], result["seconds"]
                if writer == "insert_frame":
                    baseline = seconds
                elif baseline:
                    ratio = f"{baseline / seconds:.1f}"
                print(f"{database:<11}{writer:<13}{leads:>10,}{counts['customers']:>10,}{counts['activities']:>12,}"
                      f"{counts['orders']:>10,}{seconds:>9.1f}{result['cpu_seconds']:>8.1f}{result['write_seconds']:>9.1f}"
                      f"{leads / seconds:>9,.0f}{counts['activities'] / seconds:>10,.0f}"
                      f"{result['peak_mb']:>9,.0f}{ratio:>8}", flush=True)


if __name__ == "__main__":
    main()
