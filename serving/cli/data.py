"""The data commands: ``leadval generate`` (a simulated CRM) and ``leadval import`` (a real export)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from features.settings import load_settings
from serving.cli.console import progress_bar, report
from serving.cli.options import DbOption, JsonOption


def generate(
    db: DbOption = None,
    leads: Annotated[int, typer.Option("--leads", min=1, help="Number of leads to simulate.")] = 5_000,
    customers: Annotated[
        int, typer.Option("--customers", min=0, help="Customers not from tracked leads, besides converted leads.")
    ] = 1_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same CRM.")] = 0,
    replace: Annotated[
        bool, typer.Option("--replace", help="Delete the CRM's existing rows first (otherwise a non-empty CRM is an error).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Write a realistic simulated CRM, with its ground truth in separate truth_* tables."""
    from features.crm.store import connect, create_schema, safe_url
    from features.simulate.config import SimulationConfig
    from features.simulate.generate import generate_crm

    settings = load_settings(db=db)
    engine = connect(settings.db)
    create_schema(engine)
    config = SimulationConfig(n_leads=leads, n_customers=customers, seed=seed)
    with progress_bar(total=leads, desc="simulating leads", unit="leads") as bar:
        counts = generate_crm(engine, config, progress=bar.update, replace=replace)
    lines = ", ".join(f"{n:,} {t}" for t, n in counts.items())
    report({"db": safe_url(settings.db), "seed": seed, "rows": counts}, f"Generated {lines} in {safe_url(settings.db)}", as_json)


def import_table(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet export to load.", exists=True, dir_okay=False)],
    table: Annotated[str, typer.Option("--table", help="Target table: leads, activities, customers, orders, marketing_spend.")],
    db: DbOption = None,
    mapping: Annotated[
        list[str] | None, typer.Option("--map", help="Rename an export column: their_col=our_col (repeatable).")
    ] = None,
    mapping_file: Annotated[
        Path | None, typer.Option("--mapping-file", help="TOML/JSON/CSV file of their_col -> our_col.", exists=True)
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Validate a CRM export and load it in one transaction; re-importing the same rows is a no-op."""
    from features.crm.imports import import_file, parse_mapping
    from features.crm.store import connect, create_schema, safe_url

    settings = load_settings(db=db)
    column_map = parse_mapping(mapping or [], mapping_file)
    engine = connect(settings.db)
    create_schema(engine)
    summary = import_file(engine, table, file, column_map)
    report(summary, f"Imported {summary['rows']:,} rows into {table} ({safe_url(settings.db)})", as_json)
