"""Benchmark `leadval report`: time to read the CRM, compute every KPI and render the page, and peak memory.

Writes a synthetic CRM with plain pandas into SQLite (default: 5,000 leads, 250,000 activities, two years of
daily spend on six channels, lead and customer scores), then times, in a fresh process per size (so peak
RSS belongs to that run alone):

- read: ``serving.cli.report.read_crm`` (every table the report uses);
- kpis: ``build_report`` (channel and trend tables, attribution incl. Markov, content, predictive KPIs, targets);
- render: ``render_html`` (about a dozen inline SVG charts and the tables);
- peak RSS of the process.

The baseline is the same CRM at a tenth of the size, side by side, so the ratios show how the report scales.
``--simulated`` times the simulator's demo CRM (``features.simulate.generate``, 5,000 leads, seed 42) instead of the
synthetic one. Figures are noisy: the machine has 2 cores shared with other work.

    .venv/bin/python benchmarks/bench_report.py [--leads 5000] [--activities 250000] [--simulated]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.crm import schema
from features.crm.store import connect, create_schema, insert_frame
from features.kpi.tables import report_window
from features.kpi.targets import read_targets
from serving.cli.report import read_crm
from serving.report.data import build_report
from serving.report.page import render_html

REPO_ROOT = Path(__file__).resolve().parents[1]
CHANNELS = ("paid_search", "paid_social", "organic_search", "email", "referral", "events")
ACTIVITY_CHANNELS = {"web_session": "web", "page_view": "web", "pricing_page_view": "web", "email_sent": "email",
                     "email_open": "email", "email_click": "email", "form_submit": "web",
                     "content_download": "web", "webinar_register": "event", "webinar_attend": "event",
                     "demo_request": "web", "social_engagement": "social"}
ACTIVITY_SHARES = (0.18, 0.30, 0.03, 0.20, 0.08, 0.03, 0.03, 0.03, 0.02, 0.01, 0.01, 0.08)


def synthetic_crm(url: str, n_leads: int, n_activities: int, seed: int = 0) -> None:
    """A CRM shaped like a real one: leads, their activities, conversions, orders, spend and score rows."""
    rng = np.random.default_rng(seed)
    start, days = pd.Timestamp("2024-01-01"), 730
    created = start + pd.to_timedelta(rng.uniform(0, days - 30, n_leads), unit="D")
    channel = rng.choice(CHANNELS, n_leads, p=(0.25, 0.2, 0.2, 0.15, 0.1, 0.1))
    converts = rng.random(n_leads) < 0.12
    converted_at = created + pd.to_timedelta(rng.uniform(1, 90, n_leads), unit="D")
    lead_ids = [f"L{i:06d}" for i in range(n_leads)]
    leads = pd.DataFrame({
        "lead_id": lead_ids, "created_at": created, "source_channel": channel,
        "campaign": [f"{c}_{k}" for c, k in zip(channel, rng.integers(0, 3, n_leads))],
        "converted_at": pd.Series(converted_at).where(converts),
        "customer_id": [f"C{i:06d}" if c else None for i, c in enumerate(converts)],
    })
    owner = rng.integers(0, n_leads, n_activities)
    types = rng.choice(list(ACTIVITY_CHANNELS), n_activities, p=ACTIVITY_SHARES)
    activities = pd.DataFrame({
        "activity_id": [f"A{i:08d}" for i in range(n_activities)], "lead_id": np.asarray(lead_ids)[owner],
        "occurred_at": created[owner] + pd.to_timedelta(rng.exponential(20, n_activities), unit="D"),
        "activity_type": types, "channel": [ACTIVITY_CHANNELS[t] for t in types],
        "content_id": rng.choice([f"/page-{i}" for i in range(40)], n_activities),
    })
    won = leads[converts]
    customers = pd.DataFrame({"customer_id": won["customer_id"], "lead_id": won["lead_id"],
                              "created_at": won["converted_at"], "acquisition_channel": won["source_channel"]})
    n_orders = len(customers) * 4
    buyer = rng.integers(0, len(customers), n_orders)
    orders = pd.DataFrame({
        "order_id": [f"O{i:07d}" for i in range(n_orders)], "customer_id": customers["customer_id"].to_numpy()[buyer],
        "ordered_at": customers["created_at"].to_numpy()[buyer] + pd.to_timedelta(rng.exponential(60, n_orders),
                                                                                  unit="D").to_numpy(),
        "amount": rng.gamma(2.0, 150.0, n_orders).round(2),
    })
    day = pd.date_range(start, periods=days).date
    spend = pd.DataFrame([(d, c, f"{c}_{k}") for d in day for c in CHANNELS for k in range(3)],
                         columns=["date", "channel", "campaign"])
    spend["spend"] = rng.gamma(2.0, 15.0, len(spend)).round(2)
    spend["impressions"] = rng.integers(100, 5000, len(spend))
    spend["clicks"] = rng.binomial(spend["impressions"], 0.02)
    probability = rng.beta(1.5, 9, n_leads)
    lead_scores = pd.DataFrame({
        "lead_id": lead_ids, "score": (100 * probability).round().astype(int), "probability": probability,
        "band": np.select([probability > 0.4, probability > 0.2, probability > 0.1], ["A", "B", "C"], "D"),
        "reasons": [["Visited the pricing page", "Business email"]] * n_leads,
        "expected_value": probability * 900, "model_name": "bench", "as_of": start + pd.Timedelta(days=days - 60),
        "scored_at": start + pd.Timedelta(days=days - 60),
    })
    alive = rng.beta(3, 2, len(customers))
    customer_scores = pd.DataFrame({
        "customer_id": customers["customer_id"], "expected_purchases": 2 * alive, "p_alive": alive,
        "expected_order_value": 300.0, "clv": rng.gamma(2, 400, len(customers)) * alive,
        "segment": rng.choice(["champions", "loyal", "promising", "at_risk", "lost"], len(customers)),
        "horizon_days": 365, "model_name": "bench", "scored_at": start + pd.Timedelta(days=days),
    })
    engine = connect(url)
    create_schema(engine)
    with engine.begin() as conn:
        for table, frame in ((schema.leads, leads), (schema.activities, activities), (schema.customers, customers),
                             (schema.orders, orders), (schema.marketing_spend, spend),
                             (schema.lead_scores, lead_scores), (schema.customer_scores, customer_scores)):
            insert_frame(conn, table, frame)
    engine.dispose()


def simulated_crm(url: str) -> None:
    """The simulator's demo CRM (``leadval demo`` defaults)."""
    from features.simulate.config import SimulationConfig
    from features.simulate.generate import generate_crm

    engine = connect(url)
    create_schema(engine)
    generate_crm(engine, SimulationConfig(n_leads=5_000, n_customers=1_000, seed=42), replace=True)
    engine.dispose()


def time_report(url: str, out: Path) -> dict[str, float]:
    """Read, compute and render once: wall and CPU seconds per stage, rows, page size and peak RSS."""
    targets = read_targets(REPO_ROOT / "targets.example.toml")
    usable = tuple(t for t in targets if t.dimension in ("all", "segment"))  # channel names differ per CRM
    engine = connect(url)
    stamps = [(time.perf_counter(), time.process_time())]
    crm = read_crm(engine)
    stamps.append((time.perf_counter(), time.process_time()))
    built = build_report(crm, report_window(crm), usable)
    stamps.append((time.perf_counter(), time.process_time()))
    page = render_html(built)
    out.write_text(page, encoding="utf-8")
    stamps.append((time.perf_counter(), time.process_time()))
    figures = {"leads": len(crm.leads), "activities": len(crm.activities)}
    for i, stage in enumerate(("read", "kpis", "render")):
        figures[f"{stage}_s"] = stamps[i + 1][0] - stamps[i][0]
        figures[f"{stage}_cpu_s"] = stamps[i + 1][1] - stamps[i][1]
    figures["total_s"] = stamps[-1][0] - stamps[0][0]
    figures["total_cpu_s"] = stamps[-1][1] - stamps[0][1]
    figures["page_kb"] = len(page.encode()) / 1024
    figures["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return figures


def _run(*flags: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, *flags], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _measure(folder: Path, name: str, *crm_flags: str) -> dict[str, float]:
    """Write the CRM in one process, time the report in a fresh one (peak RSS is the report's alone)."""
    url = f"sqlite:///{folder / name}.db"
    subprocess.run([sys.executable, __file__, "--write", url, *crm_flags], check=True)
    return _run("--time", url, "--out", str(folder / f"{name}.html"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=5_000)  # the baseline run has a tenth of each
    parser.add_argument("--activities", type=int, default=250_000)
    parser.add_argument("--simulated", action="store_true")
    parser.add_argument("--write", help=argparse.SUPPRESS)
    parser.add_argument("--time", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write and args.simulated:
        simulated_crm(args.write)
        return
    if args.write:
        synthetic_crm(args.write, args.leads, args.activities)
        return
    if args.time:
        print(json.dumps(time_report(args.time, Path(args.out))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        baseline = _measure(folder, "baseline", "--leads", str(args.leads // 10), "--activities",
                            str(args.activities // 10))
        full = _measure(folder, "full", *(["--simulated"] if args.simulated else
                                           ["--leads", str(args.leads), "--activities", str(args.activities)]))
    print(f"{'':>12} {'baseline':>10} {'this run':>10} {'ratio':>7}")
    for key in ("leads", "activities", "read_s", "read_cpu_s", "kpis_s", "kpis_cpu_s", "render_s", "render_cpu_s",
                "total_s", "total_cpu_s", "page_kb", "peak_mb"):
        ratio = full[key] / baseline[key] if baseline[key] else float("nan")
        print(f"{key:>12} {baseline[key]:>10,.2f} {full[key]:>10,.2f} {ratio:>6.1f}x")
    print(f"activities/s through the KPIs (CPU): {full['activities'] / full['kpis_cpu_s']:,.0f} "
          f"(baseline {baseline['activities'] / baseline['kpis_cpu_s']:,.0f})")
    print("Noisy: 2 cores shared with other work; CPU seconds are the steadier figure when the machine is busy.")


if __name__ == "__main__":
    main()
