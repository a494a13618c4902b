"""``leadval demo``: the end-to-end job on embedded defaults (SQLite CRM, SQLite-backed MLflow).

It runs the same subcommands a user would, in order: generate a CRM that ends now, train and register both
models, score every open lead and every customer back into the CRM as the nightly cron line does (as of
now, which is the CRM's end), and write the KPI report with the example targets (deadlines relative to the
report's last day, so they move with the CRM).
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from features.crm.urls import safe_url
from features.settings import load_settings

DEMO_LEADS = 5_000
DEMO_CUSTOMERS = 1_000
DEMO_SEED = 42
REPORT_PATH = Path("reports/kpi_report.html")
TARGETS_PATH = Path("targets.example.toml")
DEMO_STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Simulate a CRM that ends now", ("generate", "--leads", str(DEMO_LEADS), "--customers", str(DEMO_CUSTOMERS),
                                      "--seed", str(DEMO_SEED), "--replace")),
    ("Train and register the lead-scoring model", ("train", "leads")),
    ("Train and register the CLV model", ("train", "clv")),
    ("Score every open lead back into the CRM", ("score", "leads")),
    ("Score every customer back into the CRM", ("score", "customers")),
    ("Backtest the lead model: bands against what happened at past dates", ("backtest", "leads")),
    ("Write the KPI report", ("report", "--out", str(REPORT_PATH), "--targets", str(TARGETS_PATH))),
)
"""Each step's title and ``leadval`` arguments. No step pins a date: the CRM ends when the demo runs, and
the scoring steps score as of now, as ``leadval score`` does from cron."""


def run_demo(app: typer.Typer) -> None:
    """Run every step through ``app`` (the ``leadval`` command itself) and say where to look."""
    started = time.perf_counter()
    settings = load_settings()
    for number, (title, args) in enumerate(DEMO_STEPS, start=1):
        print(f"\n[{number}/{len(DEMO_STEPS)}] {title}: leadval {' '.join(args)}", flush=True)
        app(args=list(args), prog_name="leadval", standalone_mode=False)

    print(f"\nDone in {time.perf_counter() - started:.0f} s. Where to look:")
    print(f"  KPI report:   {REPORT_PATH.resolve()}")
    print(f"  CRM:          {safe_url(settings.db)}  (tables lead_scores, customer_scores, scoring_runs)")
    print("  Best leads:   .venv/bin/leadval leads top --n 20")
    print(f"  MLflow UI:    .venv/bin/mlflow ui --backend-store-uri {safe_url(settings.tracking_uri)}")
    print("  Serve:        .venv/bin/leadval serve   (then, in another shell:)")
    print("  Sample call:  curl -s -X POST http://127.0.0.1:3000/predict_clv -H 'Content-Type: application/json' \\")
    print("                  -d '{\"customers\": [{\"customer_id\": \"c1\", \"frequency\": 3, \"recency_days\": 200, "
          "\"age_days\": 300, \"monetary_value\": 80.0}]}'")
