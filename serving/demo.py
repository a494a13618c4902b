"""``leadval demo``: the end-to-end job on embedded defaults (SQLite CRM, SQLite-backed MLflow)."""

from __future__ import annotations

import time

from features.console import progress_bar
from features.crm_store import connect, create_schema, safe_url
from features.settings import load_settings

DEMO_LEADS = 5_000
DEMO_CUSTOMERS = 1_000
DEMO_SEED = 42


def run_demo() -> None:
    """Generate the demo CRM (later steps: train, register, score back, report) and say where to look."""
    from features.simulator import SimulationConfig, generate_crm

    started = time.perf_counter()
    settings = load_settings()
    engine = connect(settings.db)
    create_schema(engine)
    config = SimulationConfig(n_leads=DEMO_LEADS, n_customers=DEMO_CUSTOMERS, seed=DEMO_SEED)
    with progress_bar(total=DEMO_LEADS, desc="simulating leads", unit="leads") as bar:
        counts = generate_crm(engine, config, progress=bar.update, replace=True)
    print(f"1/1 Generated the demo CRM: " + ", ".join(f"{n:,} {t}" for t, n in counts.items()))
    print()
    print(f"Done in {time.perf_counter() - started:.0f} s. Where to look:")
    print(f"  CRM database:   {safe_url(settings.db)}  (e.g. sqlite3 data/crm.db '.tables')")
    print("  Next:           .venv/bin/leadval --help")
