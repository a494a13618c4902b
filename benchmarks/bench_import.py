"""Benchmark `leadval import` on a synthetic export: validation and write speed, peak memory, against plain pandas.

Generates leads, customers, 1M activities and 1M orders (CSV, and activities also as Parquet) in a temp
folder, then imports each big file into SQLite and PostgreSQL (a fresh schema of its own, dropped after)
in a separate process per run, so peak RSS belongs to that run alone. Each run reports:

- validate: reading the file, mapping, parsing and every check, including the foreign-key lookups;
- write: the chunked upsert and the commit;
- re-import: the same file again (everything unchanged, so nothing is written);
- peak RSS of the process.

The baseline is plain pandas on the same file and database: ``pd.read_csv(parse_dates=...)`` (no checks)
against validate, and ``DataFrame.to_sql(append, chunksize=50_000)`` into the same empty table (same indexes,
keys and constraints; default SQLite page cache) against write.
Figures are noisy: the machine has 2 cores shared with other work.

    .venv/bin/python benchmarks/bench_import.py [--activities 1000000] [--orders 1000000] [--leads 20000]
    LEADVAL_BENCH_PG_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test (default)
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

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from features.crm.imports import crm_table, import_file, import_transaction, load_rows, validate_export
from features.crm.schema import ACTIVITY_TYPES
from features.crm.store import connect, create_schema

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DATE_COLUMNS = {"activities": ["occurred_at"], "orders": ["ordered_at"]}
PREREQUISITES = {"activities": ["leads"], "orders": ["leads", "customers"]}


def generate_export(
    folder: Path, n_leads: int, n_customers: int, n_activities: int, n_orders: int, seed: int = 0
) -> dict[str, str]:
    """Write leads, customers, activities and orders CSVs (and activities.parquet) shaped like a CRM export."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("2024-01-01T00:00:00", "s")
    span = int((np.datetime64("2025-12-31T00:00:00", "s") - start).astype(int))
    lead_ids = pd.Series(np.arange(n_leads)).map("L{:07d}".format)
    leads = pa.table({
        "lead_id": lead_ids,
        "created_at": start + rng.integers(0, span // 2, n_leads).astype("timedelta64[s]"),
        "source_channel": rng.choice(["paid_search", "organic", "referral", "social", "email"], n_leads),
        "campaign": rng.choice(["", "spring", "summer", "webinar_q3"], n_leads),
        "country": rng.choice(["DE", "US", "FR", "GB"], n_leads),
    })
    customers = pa.table({
        "customer_id": pd.Series(np.arange(n_customers)).map("C{:07d}".format),
        "lead_id": pa.array([None] * n_customers, pa.string()),
        "created_at": start + rng.integers(0, span // 2, n_customers).astype("timedelta64[s]"),
        "acquisition_channel": rng.choice(["paid_search", "organic", "referral"], n_customers),
    })
    duration = rng.exponential(60.0, n_activities).round(1)
    activities = pa.table({
        "activity_id": pd.Series(np.arange(n_activities)).map("A{:08d}".format),
        "lead_id": lead_ids.to_numpy()[rng.integers(0, n_leads, n_activities)],
        "occurred_at": start + rng.integers(span // 2, span, n_activities).astype("timedelta64[s]"),
        "activity_type": rng.choice(list(ACTIVITY_TYPES), n_activities),
        "channel": rng.choice(["web", "email", "social", "event"], n_activities),
        "content_id": pd.Series(rng.integers(0, 500, n_activities)).map("page-{}".format),
        "duration_seconds": pa.array(np.where(rng.random(n_activities) < 0.4, np.nan, duration), from_pandas=True),
    })
    orders = pa.table({
        "order_id": pd.Series(np.arange(n_orders)).map("O{:08d}".format),
        "customer_id": pd.Series(rng.integers(0, n_customers, n_orders)).map("C{:07d}".format),
        "ordered_at": start + rng.integers(span // 2, span, n_orders).astype("timedelta64[s]"),
        "amount": rng.gamma(2.0, 60.0, n_orders).round(2),
    })
    files = {}
    for name, table in {"leads": leads, "customers": customers, "activities": activities, "orders": orders}.items():
        files[name] = folder / f"{name}.csv"
        pa_csv.write_csv(table, files[name])
    files["activities.parquet"] = folder / "activities.parquet"
    pq.write_table(activities, files["activities.parquet"])
    return {k: str(v) for k, v in files.items()}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(kind: str, url: str, table_name: str, path: str, files: dict) -> dict:
    """One measured run in this process: ``leadval`` (validate, write, re-import) or the pandas ``baseline``."""
    engine = connect(url)
    create_schema(engine)
    for prerequisite in PREREQUISITES[table_name]:
        import_file(engine, prerequisite, Path(files[prerequisite]), {})
    before = peak_rss_mb()
    if kind == "leadval":
        t0 = time.perf_counter()
        with import_transaction(engine) as conn:
            rows = validate_export(conn, table_name, Path(path), {})
            t1 = time.perf_counter()
            counts = load_rows(conn, crm_table(table_name), rows)
        t2 = time.perf_counter()
        again = import_file(engine, table_name, Path(path), {})
        t3 = time.perf_counter()
        assert again["unchanged"] == len(rows) == counts["inserted"], (counts, again)
        return {"rows": len(rows), "validate_s": t1 - t0, "write_s": t2 - t1, "reimport_s": t3 - t2,
                "rss_start_mb": before, "peak_rss_mb": peak_rss_mb()}
    t0 = time.perf_counter()
    if path.endswith(".parquet"):
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(path, parse_dates=DATE_COLUMNS[table_name])
    t1 = time.perf_counter()
    with engine.begin() as conn:
        frame.to_sql(table_name, conn, if_exists="append", index=False, chunksize=50_000)
    t2 = time.perf_counter()
    return {"rows": len(frame), "validate_s": t1 - t0, "write_s": t2 - t1, "reimport_s": float("nan"),
            "rss_start_mb": before, "peak_rss_mb": peak_rss_mb()}


def fresh_database(backend: str, folder: Path, pg_url: str) -> tuple[str, str | None]:
    """A URL to an empty database: a new SQLite file, or a new PostgreSQL schema (returned to drop later)."""
    if backend == "sqlite":
        return f"sqlite:///{folder / f'crm_{uuid.uuid4().hex[:8]}.db'}", None
    schema = f"bench_import_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    url = make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False), schema


def drop_schema(pg_url: str, schema: str) -> None:
    admin = create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def measure(kind: str, backend: str, table_name: str, path: str, files: dict, folder: Path, pg_url: str) -> dict:
    url, schema = fresh_database(backend, folder, pg_url)
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--one", json.dumps([kind, url, table_name, path, files])],
            capture_output=True, text=True, check=True,
        )
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"{kind} run failed:\n{exc.stderr}") from None
    finally:
        if schema:
            drop_schema(pg_url, schema)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=20_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--activities", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*json.loads(args.one))))
        return
    pg_url = os.environ.get("LEADVAL_BENCH_PG_URL", DEFAULT_PG_URL)
    with tempfile.TemporaryDirectory(prefix="bench_import_") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        files = generate_export(folder, args.leads, args.customers, args.activities, args.orders)
        sizes = ", ".join(f"{Path(p).name} {Path(p).stat().st_size / 1e6:.0f} MB" for p in files.values())
        print(f"generated in {time.perf_counter() - t0:.1f}s: {sizes}")
        print("figures are noisy: 2 shared cores. rows/s; ratio = leadval / pandas baseline (time; < 1 is faster)")
        print("leadval writes upsert through features.crm.store.upsert_frame (SQLite with a 64 MiB page cache);"
              " to_sql appends plainly. re-import = the same file again, validated and compared, nothing written")
        header = (f"{'backend':<10} {'file':<19} {'rows':>9} | {'validate r/s':>12} {'pandas read':>11} {'ratio':>6} | "
                  f"{'write r/s':>9} {'to_sql r/s':>10} {'ratio':>6} | {'re-import s':>11} | "
                  f"{'peak MB':>7} {'pandas MB':>9}")
        print(header)
        print("-" * len(header))
        runs = [("activities", "activities"), ("activities", "activities.parquet"), ("orders", "orders")]
        for backend in args.backends.split(","):
            for table_name, file_key in runs:
                ours = measure("leadval", backend, table_name, files[file_key], files, folder, pg_url)
                base = measure("baseline", backend, table_name, files[file_key], files, folder, pg_url)
                n = ours["rows"]
                print(
                    f"{backend:<10} {Path(files[file_key]).name:<19} {n:>9,} | "
                    f"{n / ours['validate_s']:>12,.0f} {n / base['validate_s']:>11,.0f} "
                    f"{ours['validate_s'] / base['validate_s']:>6.2f} | "
                    f"{n / ours['write_s']:>9,.0f} {n / base['write_s']:>10,.0f} "
                    f"{ours['write_s'] / base['write_s']:>6.2f} | "
                    f"{ours['reimport_s']:>11.1f} | {ours['peak_rss_mb']:>7.0f} {base['peak_rss_mb']:>9.0f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
