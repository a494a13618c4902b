"""Benchmark the scoring API under bursts of large requests: status codes, probe latency, memory, slow connections.

The real server is started as ``leadval serve`` starts it (one worker, the default limits) on a simulated CRM's
champions (trained into a temporary MLflow store, or ``--tracking-uri`` and ``--db``). Each burst sends
``--requests`` (default 40) large requests at once, each on its own connection: ~30 MB ``/score_leads`` bodies
(about 6,500 of the CRM's open leads with ~45 activities each) and, every ``--clv-every``-th one, a ~30 MB
``/predict_clv`` body (72 customers with 8,000 orders each). Meanwhile a probe thread asks ``GET /livez`` every
100 ms on a fresh connection, and a sampler reads the resident memory (RSS) of the server and its children
(psutil) every 100 ms. Per burst it prints the status codes per endpoint, the slowest answer, the ``/livez``
latency (max and p99), and RSS before the burst, at its peak, and after the answers plus ``--settle`` seconds.

Then two slow connections: one that connects and sends nothing, one that sends headers announcing a 1 MB
body and then one byte a second; each line says when (if at all, within 40 s) the server closed it.

The load stays on 127.0.0.1 and is bounded: ``--bursts`` bursts of ``--requests`` requests, each with a 120 s
client timeout.

    .venv/bin/python benchmarks/bench_burst.py [--bursts 6] [--requests 40] [--tracking-uri URI --db URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from bench_service import add_store_arguments, free_port, lead_requests, on_a_store, start_server, stop_server

CLIENT_TIMEOUT_S = 120.0
SAMPLE_EVERY_S = 0.1
SLOW_CONNECTION_WATCH_S = 40.0


@dataclass
class Answer:
    """What one request got: its endpoint, status (or the error instead), and seconds until the answer."""

    path: str
    status: str
    seconds: float


@dataclass
class Sampler:
    """A thread calling ``sample`` every 100 ms until stopped, keeping what it returns."""

    sample: Callable[[], float]
    values: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.values.append(self.sample())
            self._stop.wait(SAMPLE_EVERY_S)

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join()
        return self.values


def server_rss_mb(pid: int) -> float:
    """Resident memory (MB) of the server process and all its children."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 1e6


def livez_ms(url: str) -> float:
    """Milliseconds for one ``GET /livez`` on a new connection (the client timeout, 30 s, when it failed)."""
    started = time.perf_counter()
    try:
        httpx.get(f"{url}/livez", timeout=30).raise_for_status()
    except httpx.HTTPError:
        return 30_000.0
    return (time.perf_counter() - started) * 1000


class _Answered(asyncio.Protocol):
    """Keeps every byte the server sends and notes when it closes, so an answer sent before a reset still counts."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.received += data

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def _post(port: int, path: str, body: bytes) -> Answer:
    """POST ``body`` on a new connection; the status the server sent (its first line), even if it then reset."""
    started = time.perf_counter()
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    try:
        transport, answered = await loop.create_connection(_Answered, "127.0.0.1", port)
    except OSError as exc:
        return Answer(path, type(exc).__name__, time.perf_counter() - started)
    transport.write(head + body)
    try:
        await asyncio.wait_for(answered.closed, CLIENT_TIMEOUT_S)
    except asyncio.TimeoutError:
        transport.abort()
        return Answer(path, "client timeout", time.perf_counter() - started)
    status_line = bytes(answered.received).split(b"\r\n", 1)[0].split()
    status = status_line[1].decode() if len(status_line) > 1 else "closed without answer"
    return Answer(path, status, time.perf_counter() - started)


def burst(port: int, bodies: list[tuple[str, bytes]]) -> list[Answer]:
    """Send all ``bodies`` at once, each on its own connection; their answers."""

    async def all_at_once() -> list[Answer]:
        return list(await asyncio.gather(*(_post(port, path, body) for path, body in bodies)))

    return asyncio.run(all_at_once())


def seconds_until_closed(port: int, first: bytes, trickle: bytes | None) -> float | None:
    """Send ``first``, then one byte of ``trickle`` a second; seconds until the server closed (None: still open)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.settimeout(1.0)
        if first:
            connection.sendall(first)
        position = 0
        while time.monotonic() - started < SLOW_CONNECTION_WATCH_S:
            try:
                if connection.recv(65_536) == b"":
                    return time.monotonic() - started
            except TimeoutError:
                pass
            except OSError:
                return time.monotonic() - started
            if trickle is not None and position < len(trickle):
                try:
                    connection.sendall(trickle[position:position + 1])
                except OSError:
                    return time.monotonic() - started
                position += 1
    return None


def large_bodies(db: str, target_bytes: int) -> tuple[bytes, bytes, int, int]:
    """A ``/score_leads`` body and a ``/predict_clv`` body of about ``target_bytes`` each, and their activity and
    order counts."""
    items, _, _, as_of = lead_requests(db, 1_000)
    leads: list[dict] = []
    size = 0
    copy = 0
    while size < target_bytes:
        for item in items:
            lead = {**item, "lead_id": f"{item['lead_id']}-{copy}"}
            leads.append(lead)
            size += len(json.dumps(lead)) + 2
            if size >= target_bytes:
                break
        copy += 1
    lead_body = json.dumps({"leads": leads, "as_of": as_of.isoformat()}).encode()
    orders = [{"ordered_at": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T10:00:00", "amount": 12.5 + i % 100}
              for i in range(8_000)]
    customers = max(1, target_bytes // len(json.dumps(orders)))
    clv_body = json.dumps({"customers": [{"customer_id": f"c{j}", "orders": orders} for j in range(customers)],
                           "as_of": "2025-01-01"}).encode()
    return lead_body, clv_body, sum(len(lead["activities"]) for lead in leads), customers * len(orders)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(tracking_uri: str, db: str, workdir: Path, bursts: int, requests: int, clv_every: int, settle: float,
        body_mb: float) -> None:
    """Start the server, send the bursts and the slow connections, print what happened."""
    lead_body, clv_body, activities, orders = large_bodies(db, int(body_mb * 1e6))
    print(f"bodies: /score_leads {len(lead_body) / 1e6:.1f} MB ({activities:,} activities), /predict_clv "
          f"{len(clv_body) / 1e6:.1f} MB ({orders:,} orders); {requests} requests a burst, every {clv_every}th "
          "one /predict_clv")
    bodies = [("/predict_clv", clv_body) if clv_every and i % clv_every == clv_every - 1 else ("/score_leads", lead_body)
              for i in range(requests)]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process, _ = start_server(tracking_uri, port, workdir)
    try:
        start_rss = server_rss_mb(process.pid)
        print(f"RSS at start (server and children): {start_rss:,.0f} MB")
        for number in range(1, bursts + 1):
            before = server_rss_mb(process.pid)
            memory, probes = Sampler(lambda: server_rss_mb(process.pid)), Sampler(lambda: livez_ms(url))
            started = time.perf_counter()
            answers = burst(port, bodies)
            seconds = time.perf_counter() - started
            probe_ms, peak = probes.stop(), max(memory.stop())
            time.sleep(settle)
            after = server_rss_mb(process.pid)
            counts = {path: dict(Counter(a.status for a in answers if a.path == path))
                      for path in ("/score_leads", "/predict_clv")}
            print(f"burst {number}: {seconds:5.1f} s, slowest answer {max(a.seconds for a in answers):5.1f} s; "
                  f"status /score_leads {counts['/score_leads']} /predict_clv {counts['/predict_clv']}; "
                  f"/livez max {max(probe_ms):,.0f} ms p99 {quantile(probe_ms, 0.99):,.0f} ms "
                  f"median {statistics.median(probe_ms):,.0f} ms ({len(probe_ms)} probes); "
                  f"RSS before {before:,.0f} MB, peak {peak:,.0f} MB, after {after:,.0f} MB "
                  f"({after - start_rss:+,.0f} MB on the start)")
        idle = seconds_until_closed(port, b"", None)
        slow_head = (b"POST /score_leads HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000000\r\n\r\n")
        slow = seconds_until_closed(port, slow_head, b"{" + b" " * 999_999)

        def closed(seconds: float | None) -> str:
            return f"closed after {seconds:.1f} s" if seconds is not None else f"still open after {SLOW_CONNECTION_WATCH_S:.0f} s"

        print(f"idle connection (sends nothing): {closed(idle)}")
        print(f"slow body (headers, then 1 byte/s): {closed(slow)}")
    finally:
        stop_server(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bursts", type=int, default=6)
    parser.add_argument("--requests", type=int, default=40, help="requests sent at once in each burst")
    parser.add_argument("--clv-every", type=int, default=4, help="every Nth request is /predict_clv (0: none)")
    parser.add_argument("--body-mb", type=float, default=30.0, help="size of each request body")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after a burst before RSS is read")
    add_store_arguments(parser)
    args = parser.parse_args()
    on_a_store(args, "bench_burst_", lambda tracking_uri, db, workdir: run(
        tracking_uri, db, workdir, args.bursts, args.requests, args.clv_every, args.settle, args.body_mb))

if __name__ == "__main__":
    main()
