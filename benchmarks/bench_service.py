"""Benchmark the scoring API on 127.0.0.1: start-up time, requests/s and latency, overhead against in-process.

A simulated CRM and its two champions are trained into a temporary MLflow store (or ``--tracking-uri``
and ``--db`` are used), then the real server is started exactly as ``leadval serve`` starts it (one
worker). The load generator is bounded (a fixed number of requests over a fixed number of keep-alive
connections) and light: raw HTTP/1.1 over asyncio sockets, so the client takes little of the CPU the
server needs. Workloads:

- single lead (with its activities) per request, one connection (latency) and 8 connections (throughput);
- 1,000 leads per request, one connection: activities as objects, and as columns (``activity_columns``);
- one customer (RFM summary) per ``/predict_clv`` request.

Each reports requests/s, p50/p99/max latency and the requests slower than 100 ms (the "stalls"), and
the lead workloads the ratio of the service's p50 to the in-process p50 of the same scoring function
on the same leads (parsing, validation, HTTP and JSON included), and to the in-process p50 of the API
path itself (:func:`api_path`: validation, scoring and the JSON answer, without HTTP). Start-up is the
time from launching ``leadval serve`` to the first 200 from ``/readyz``: on a registry unchanged since its last
start (it hands over the champions it kept then) and on one that changed (its kept champions removed first, so it
loads them from MLflow), beside BentoML's server alone (its worker loads the champions from MLflow) and a minimal
BentoML service, the peer, in alternating starts. Targets (issue 5):
single p50 <= 5 ms, p99 <= 25 ms, >= 300 single requests/s per worker, 1,000-lead p99 <= 100 ms, ready <= 5 s;
issue 18: 1,000-lead p99 <= 80 ms, ready <= 3 s.

The machine has 2 cores shared with other work: figures are noisy, compare runs side by side. The
"machine steadiness" line times the same pure-Python work 100 times: its p99 / p50 is the spread the
machine alone puts into any p99 here.

    .venv/bin/python benchmarks/bench_service.py [--requests 3000] [--tracking-uri URI --db URL]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import httpx  # noqa: E402

if TYPE_CHECKING:
    from serving.api.champions import ServedModels

STALL_MS = 100.0
STARTS = {"leadval-cold": "leadval serve, registry changed (loads from MLflow)",
          "leadval": "leadval serve, registry unchanged since its last start",
          "bentoml": "BentoML alone, worker loads from MLflow", "minimal": "minimal BentoML service (peer)"}
"""The servers whose start-up is timed (:func:`server_launch`), with how the figures name them."""


@dataclass(frozen=True)
class LoadResult:
    """Latencies (ms) of one bounded run and how long it took."""

    name: str
    latencies_ms: list[float]
    seconds: float
    errors: int

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def line(self, per_request: int = 1) -> str:
        rate = len(self.latencies_ms) / self.seconds
        stalls = sum(ms > STALL_MS for ms in self.latencies_ms)
        extra = f" ({rate * per_request:,.0f} rows/s)" if per_request > 1 else ""
        return (f"{self.name:<34} {len(self.latencies_ms):>6} req  {rate:>7.1f} req/s{extra}  "
                f"p50 {self.quantile(0.5):7.2f} ms  p99 {self.quantile(0.99):7.2f} ms  "
                f"max {max(self.latencies_ms):7.2f} ms  >{STALL_MS:.0f} ms: {stalls}  errors: {self.errors}")


def _request_bytes(path: str, body: bytes, api_key: str | None) -> bytes:
    auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{auth}"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _connection(port: int, requests: Sequence[bytes], latencies: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for request in requests:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append((time.perf_counter() - started) * 1000)
            if head[9:12] != b"200":
                errors.append(int(head[9:12]))
    finally:
        writer.close()


def run_load(name: str, port: int, path: str, bodies: Sequence[bytes], requests: int, connections: int,
             api_key: str | None = None) -> LoadResult:
    """Send ``requests`` POSTs (cycling through ``bodies``) over ``connections`` keep-alive connections."""
    encoded = [_request_bytes(path, body, api_key) for body in bodies]
    per_connection = [[encoded[(c + i * connections) % len(encoded)] for i in range(requests // connections)]
                      for c in range(connections)]
    latencies: list[float] = []
    errors: list[int] = []

    async def all_connections() -> None:
        await asyncio.gather(*(_connection(port, share, latencies, errors) for share in per_connection))

    started = time.perf_counter()
    asyncio.run(all_connections())
    return LoadResult(name, latencies, time.perf_counter() - started, len(errors))


def in_process_ms(call: Callable[[], object], repeat: int) -> list[float]:
    """Latencies (ms) of ``repeat`` in-process calls after one warm-up call."""
    call()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times


MINIMAL_SERVICE = '''import bentoml


@bentoml.service(workers=1)
class Minimal:
    @bentoml.api
    def echo(self, value: int) -> int:
        return value
'''
"""The peer of the start-up figure: a BentoML service with no models and no imports of its own."""


def server_launch(how: str, tracking_uri: str, port: int, workdir: Path) -> list[str]:
    """The command line of a server: ``leadval`` (``leadval serve``, which hands its workers the champions it
    loaded or kept), ``leadval-cold`` (the same, its kept champions removed first), ``bentoml`` (its BentoML server
    alone: the worker loads the champions from the registry, as in a container) or ``minimal``
    (:data:`MINIMAL_SERVICE` under ``bentoml serve``)."""
    from serving.cli.serve import server_command

    if how == "leadval-cold":
        import shutil

        from serving.api.champion_handover import kept_champions_folder

        shutil.rmtree(kept_champions_folder(tracking_uri), ignore_errors=True)
    if how.startswith("leadval"):
        return [str(Path(sys.executable).parent / "leadval"), "serve", "--port", str(port),
                "--tracking-uri", tracking_uri]
    if how == "minimal":
        (workdir / "minimal_service.py").write_text(MINIMAL_SERVICE)
        return [sys.executable, "-m", "bentoml", "serve", "minimal_service:Minimal", "--working-dir", str(workdir),
                "--host", "127.0.0.1", "--port", str(port)]
    return server_command("127.0.0.1", port)


def start_server(tracking_uri: str, port: int, workdir: Path, extra_env: dict[str, str] | None = None,
                 how: str = "leadval") -> tuple[subprocess.Popen, float]:
    """A server started as :func:`server_launch` says, and the seconds until ``/readyz`` answered 200."""
    from serving.cli.serve import server_environment

    env = server_environment(tracking_uri, workers=1)
    env.pop("LEADVAL_API_KEY", None)
    if how == "minimal":
        env.pop("BENTOML_CONFIG_OVERRIDES")
    env.update(extra_env or {})
    log = (workdir / f"server-{port}.log").open("wb")
    started = time.perf_counter()
    process = subprocess.Popen(server_launch(how, tracking_uri, port, workdir), env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    while True:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}; see {log.name}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process, time.perf_counter() - started
        except httpx.TransportError:
            pass
        time.sleep(0.02)


def stop_server(process: subprocess.Popen) -> None:
    """Stop the server (the arbiter stops its workers); kill what is left of ours after 20 s."""
    import psutil

    ours = psutil.Process(process.pid).children(recursive=True)
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for leftover in psutil.wait_procs(ours, timeout=10)[1]:
        leftover.kill()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def summary_line(name: str, latencies: Sequence[float]) -> str:
    return (f"{name:<34} {len(latencies):>6} calls p50 {statistics.median(latencies):7.2f} ms  "
            f"p99 {sorted(latencies)[int(0.99 * (len(latencies) - 1))]:7.2f} ms  max {max(latencies):7.2f} ms")


def prepare_store(workdir: Path, leads: int = 5_000, customers: int = 1_000) -> tuple[str, str]:
    """A simulated CRM and both champions trained on it, in ``workdir``; returns (tracking URI, CRM URL)."""
    from features.crm.store import connect
    from features.simulate.config import SimulationConfig
    from features.simulate.generate import generate_crm
    from training.clv.job import train_from_crm
    from training.leads.data.splits import CrmTrainingConfig, crm_splits
    from training.leads.job import train_and_register

    db, tracking_uri, artifacts = (f"sqlite:///{workdir / 'crm.db'}", f"sqlite:///{workdir / 'mlflow.db'}",
                                   str(workdir / "artifacts"))
    engine = connect(db)
    generate_crm(engine, SimulationConfig(n_leads=leads, n_customers=customers, seed=7))
    config = CrmTrainingConfig()
    train_and_register(crm_splits(engine, config), config, tracking_uri, artifacts)
    engine.dispose()
    train_from_crm(db, tracking_uri, artifacts)
    return tracking_uri, db


def lead_requests(db: str, count: int) -> tuple[list[dict], object, object, object]:
    """``count`` open leads of the CRM as request items, with the frames and as-of the batch job would use."""
    from features.crm.store import connect
    from features.lead_features import PROFILE_FEATURES
    from features.lead_history import crm_period, load_crm_frames

    engine = connect(db)
    _, as_of = crm_period(engine)
    frames = load_crm_frames(engine, as_of, open_only=True)
    engine.dispose()
    leads = frames.leads.sort_values("lead_id").head(count).reset_index(drop=True)
    activities = frames.activities[frames.activities["lead_id"].isin(leads["lead_id"])]
    by_lead = dict(iter(activities.groupby("lead_id")))
    items = []
    for lead in leads.itertuples(index=False):
        events = by_lead.get(lead.lead_id, activities.iloc[:0])
        items.append({
            "lead_id": lead.lead_id, "created_at": lead.created_at.isoformat(),
            **{c: None if pd_isna(getattr(lead, c)) else str(getattr(lead, c)) for c in PROFILE_FEATURES},
            "activities": [{"activity_type": e.activity_type, "occurred_at": e.occurred_at.isoformat(),
                            "duration_seconds": None if pd_isna(e.duration_seconds) else float(e.duration_seconds)}
                           for e in events.itertuples(index=False)],
        })
    return items, leads, activities, as_of


def as_columns(item: dict) -> dict:
    """A request lead with its activities sent as columns (``activity_columns``) instead of objects."""
    lead = {k: v for k, v in item.items() if k != "activities"}
    lead["activity_columns"] = {name: [activity[name] for activity in item["activities"]]
                                for name in ("activity_type", "occurred_at", "duration_seconds")}
    return lead


def pd_isna(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def fixed_cpu_work() -> int:
    """~50-70 ms of pure Python work, always the same: its spread is the machine's, not the service's."""
    total = 0
    for i in range(1_000_000):
        total += i * i % 7
    return total


def api_path(served: ServedModels, body: bytes) -> bytes:
    """What the server does with a ``/score_leads`` body, in-process: read (as the server does), score, write the JSON
    answer; for a large body with the garbage collector paused, as :class:`serving.api.limits.RequestLimits` does."""
    from serving.api.large_requests import FAST_DECODERS, read_body
    from serving.api.limits import LARGE_REQUEST_BYTES
    from serving.api.schemas import ScoreLeadsRequest
    from serving.api.service import lead_scores

    paused = len(body) >= LARGE_REQUEST_BYTES and gc.isenabled()
    if paused:
        gc.disable()
    try:
        request = read_body(ScoreLeadsRequest, body, FAST_DECODERS["/score_leads"])
        return lead_scores(served, request).model_dump_json().encode()
    finally:
        if paused:
            gc.enable()


def run(tracking_uri: str, db: str, workdir: Path, requests: int, batch_requests: int, startups: int) -> None:
    """Start the server, load it with each workload, and print the figures next to in-process ones."""
    import pandas as pd

    from serving.api.champions import load_champions
    from training.leads.pyfunc import score_leads

    items, leads, activities, as_of = lead_requests(db, 1_000)
    when = as_of.isoformat()
    singles = [json.dumps({"leads": [item], "as_of": when}).encode() for item in items[:200]]
    batch = json.dumps({"leads": items, "as_of": when}).encode()
    batch_columns = json.dumps({"leads": [as_columns(item) for item in items], "as_of": when}).encode()
    customer = json.dumps({"customers": [{"customer_id": "c1", "frequency": 3, "recency_days": 120.0,
                                          "age_days": 300.0, "monetary_value": 80.0}]}).encode()
    activities_per_lead = sum(len(i["activities"]) for i in items) / len(items)
    print(f"leads: {len(items):,} open leads as of {when}, {activities_per_lead:.1f} activities each on average; "
          f"single-lead bodies ~{sum(map(len, singles)) / len(singles) / 1024:.1f} KiB, "
          f"1,000-lead body {len(batch) / 2**20:.1f} MiB ({len(batch_columns) / 2**20:.1f} MiB as columns)")

    pd.set_option("mode.string_storage", "python")  # as the service sets it
    served = load_champions(tracking_uri)
    model = served.get("lead-scoring").model
    first = leads["lead_id"].iloc[:200].tolist()
    single_frames = [(leads[leads["lead_id"] == i], activities[activities["lead_id"] == i]) for i in first]
    cycle = iter(range(10**9))
    local_single = in_process_ms(lambda: score_leads(model, *single_frames[next(cycle) % 200], as_of), 500)
    local_batch = in_process_ms(lambda: score_leads(model, leads, activities, as_of), 20)
    from features.lead_features import lead_feature_arrays

    matrix = model.spec.crm_matrix(lead_feature_arrays(leads, activities, as_of))
    lightgbm_batch = in_process_ms(lambda: model.booster.predict(matrix, raw_score=True), 30)
    parse_batch = in_process_ms(lambda: json.loads(batch), 30)
    gc.collect()
    gc.freeze()  # as the service does once its models are loaded
    api_single = in_process_ms(lambda: api_path(served, singles[next(cycle) % 200]), 500)
    api_batch = in_process_ms(lambda: api_path(served, batch), 30)
    api_columns = in_process_ms(lambda: api_path(served, batch_columns), 30)
    steadiness = in_process_ms(fixed_cpu_work, 100)

    ready_s: dict[str, list[float]] = {how: [] for how in STARTS}
    for _ in range(startups):
        for how in STARTS:  # alternating, so a busy moment weighs on all alike
            process, seconds = start_server(tracking_uri, free_port(), workdir, how=how)
            stop_server(process)
            ready_s[how].append(seconds)
    port = free_port()
    process, _ = start_server(tracking_uri, port, workdir)
    try:
        run_load("warm-up", port, "/score_leads", singles, 200, 1)
        results = [
            (run_load("single lead, 1 connection", port, "/score_leads", singles, requests, 1), 1, local_single,
             api_single),
            (run_load("single lead, 8 connections", port, "/score_leads", singles, requests, 8), 1, None, None),
            (run_load("1,000 leads, 1 connection", port, "/score_leads", [batch], batch_requests, 1), 1_000,
             local_batch, api_batch),
            (run_load("1,000 leads as columns, 1 connection", port, "/score_leads", [batch_columns], batch_requests,
                      1), 1_000, local_batch, api_columns),
            (run_load("one customer CLV, 1 connection", port, "/predict_clv", [customer], requests, 1), 1, None,
             None),
        ]
    finally:
        stop_server(process)
    print(f"machine steadiness: the same {statistics.median(steadiness):.0f} ms of Python work, p99 / p50 = "
          f"{sorted(steadiness)[98] / statistics.median(steadiness):.2f}x (how much of a p99 is the machine)")
    for how, label in STARTS.items():
        seconds = ready_s[how]
        print(f"start-up, {label}: ready {statistics.median(seconds):.2f} s after launch (median of {len(seconds)}: "
              f"{', '.join(f'{s:.2f}' for s in seconds)}); / minimal BentoML service = "
              f"{statistics.median(seconds) / statistics.median(ready_s['minimal']):.2f}x")
    print(summary_line("in-process score_leads, 1 lead", local_single))
    print(summary_line("in-process score_leads, 1,000 leads", local_batch))
    print(summary_line("in-process API path, 1 lead", api_single))
    print(summary_line("in-process API path, 1,000 leads", api_batch))
    print(summary_line("in-process API path, 1,000 as columns", api_columns))
    print(summary_line("peer: LightGBM predict, 1,000 leads", lightgbm_batch))
    print(summary_line("floor: json.loads of the objects body", parse_batch))
    for result, per_request, local, api in results:
        print(result.line(per_request))
        if local is not None:
            print(f"{'':<34} overhead: service p50 / in-process score_leads p50 = "
                  f"{result.quantile(0.5) / statistics.median(local):.2f}x; "
                  f"/ in-process API path p50 = {result.quantile(0.5) / statistics.median(api):.2f}x")
        if per_request == 1_000:
            print(f"{'':<34} peer: service p50 / LightGBM predict p50 (features ready, no reasons) = "
                  f"{result.quantile(0.5) / statistics.median(lightgbm_batch):.1f}x")


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tracking-uri`` and ``--db``: an MLflow store with both champions and its CRM, instead of fresh ones."""
    parser.add_argument("--tracking-uri", help="MLflow store with both champions (default: train a fresh one)")
    parser.add_argument("--db", help="CRM the leads are taken from (with --tracking-uri)")


def on_a_store(args: argparse.Namespace, prefix: str, work: Callable[[str, str, Path], None]) -> None:
    """``work(tracking_uri, crm_url, workdir)`` on the store ``args`` name, or a fresh one in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        workdir = Path(tmp)
        tracking_uri, db = (args.tracking_uri, args.db) if args.tracking_uri else prepare_store(workdir)
        work(tracking_uri, db, workdir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="single-record requests per workload")
    parser.add_argument("--batch-requests", type=int, default=100, help="1,000-lead requests")
    parser.add_argument("--startups", type=int, default=3, help="server starts timed to /readyz")
    add_store_arguments(parser)
    args = parser.parse_args()
    on_a_store(args, "bench_service_", lambda tracking_uri, db, workdir: run(
        tracking_uri, db, workdir, args.requests, args.batch_requests, args.startups))


if __name__ == "__main__":
    main()
