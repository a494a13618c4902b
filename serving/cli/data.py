"""The data commands: ``leadval generate`` (a simulated CRM) and ``leadval import`` (a real export)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from features.errors import InvalidInput
from features.settings import load_settings
from serving.cli.console import progress_bar, report, tell
from serving.cli.options import DAY_FORMATS, DbOption, JsonOption


def generate(
    db: DbOption = None,
    leads: Annotated[int, typer.Option("--leads", min=1, help="Number of leads to simulate.")] = 5_000,
    customers: Annotated[
        int, typer.Option("--customers", min=0, help="Customers not from tracked leads, besides converted leads.")
    ] = 1_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed and --end, same CRM.")] = 0,
    end: Annotated[
        str | None, typer.Option("--end", help="When the CRM ends (UTC, e.g. 2025-12-31T00:00:00): its latest events "
                                               "fall just before it [default: now, to the second].")
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Delete the CRM's existing rows first (otherwise a non-empty CRM is an error).")
    ] = False,
    scenario: Annotated[
        str, typer.Option("--scenario", help="stationary (the same process throughout) or drift (one channel's lead "
                                             "quality halves, a new campaign and country appear, new customers churn "
                                             "faster from --change-date on; truth in truth_drift).")
    ] = "stationary",
    change_date: Annotated[
        datetime | None, typer.Option("--change-date", formats=DAY_FORMATS, metavar="YYYY-MM-DD",
                                      help="When the drift starts; inside the CRM's period "
                                           "[default: 6 months before --end].")
    ] = None,
    steady_calendar: Annotated[
        bool, typer.Option("--steady-calendar", help="Run every campaign over the whole timeline, so the source mix "
                                                     "does not move (by default campaigns launch part-way and events "
                                                     "come in bursts, which leadval monitor rightly reports).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Write a realistic simulated CRM ending now (or at --end), with its ground truth in separate truth_* tables."""
    from features.crm.store import connect, create_schema
    from features.crm.urls import safe_url
    from features.simulate.config import DEFAULT_CHANNELS, SimulationConfig, current_end
    from features.simulate.config import steady_calendar as steady
    from features.simulate.generate import generate_crm

    settings = load_settings(db=db)
    ends_at = current_end() if end is None else _instant("--end", end)
    engine = connect(settings.db)
    create_schema(engine)
    config = SimulationConfig(n_leads=leads, n_customers=customers, seed=seed, end=ends_at, scenario=scenario,
                              change_date=None if change_date is None else change_date.date(),
                              channels=steady() if steady_calendar else DEFAULT_CHANNELS)
    with progress_bar(total=leads, desc="simulating leads", unit="leads") as bar:
        counts = generate_crm(engine, config, progress=bar.update, replace=replace)
    lines = ", ".join(f"{n:,} {t}" for t, n in counts.items())
    stamp = config.end.isoformat()
    changes = "" if config.change_date is None else f"; drift from {config.change_date.isoformat()} (truth_drift)"
    report({"db": safe_url(settings.db), "seed": seed, "end": stamp, "start": config.starts_at.isoformat(),
            "scenario": scenario, "change_date": config.change_date and config.change_date.isoformat(),
            "steady_calendar": steady_calendar, "rows": counts},
           f"Generated {lines} in {safe_url(settings.db)}, from {config.starts_at:%Y-%m-%d} to {stamp} UTC{changes}"
           f"{'; every campaign runs throughout' if steady_calendar else ''} (the same flags with --end {stamp} write "
           "the same CRM)", as_json)


def _instant(flag: str, value: str) -> datetime:
    """``value`` (ISO 8601; an offset is converted to UTC, none means UTC) as a naive UTC datetime."""
    from features.lead_features import as_of_timestamp

    try:
        return as_of_timestamp(value).to_pydatetime()
    except InvalidInput:
        raise InvalidInput(f"{flag} {value!r}: not a date or time; expected e.g. 2025-12-31T00:00:00") from None


def import_table(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet export to load.", exists=True, dir_okay=False)],
    table: Annotated[str, typer.Option("--table", help="Target table: leads, activities, customers, orders, "
                                                       "marketing_spend, experiment_assignments.")],
    db: DbOption = None,
    mapping: Annotated[
        list[str] | None, typer.Option("--map", help="Rename an export column: their_col=our_col (repeatable).")
    ] = None,
    mapping_file: Annotated[
        Path | None, typer.Option("--mapping-file", help="TOML/JSON/CSV file of their_col -> our_col.", exists=True)
    ] = None,
    allow_dates_from: Annotated[
        datetime | None, typer.Option("--allow-dates-from", formats=DAY_FORMATS, metavar="YYYY-MM-DD",
                                      help="Earliest date the export's dates may fall on [default: 1990-01-01].")
    ] = None,
    max_amount: Annotated[
        float | None, typer.Option("--max-amount", min=0, help="Largest amount of money one cell may hold "
                                                               "(orders.amount, marketing_spend.spend) [default: 1e9].")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Validate a CRM export and load it in one transaction; re-importing the same rows is a no-op.

    Dates must fall between 1990-01-01 (or --allow-dates-from) and a day after now, amounts of money be at most
    --max-amount (1e9), text hold no control characters. Unnamed empty columns at the end of the header are
    dropped, with a note on stderr.
    """
    from features.crm.imports import import_file, import_plausibility, parse_mapping
    from features.crm.store import connect, create_schema
    from features.crm.urls import safe_url

    settings = load_settings(db=db)
    column_map = parse_mapping(mapping or [], mapping_file)
    plausibility = import_plausibility(dates_from=allow_dates_from, max_amount=max_amount)
    engine = connect(settings.db)
    create_schema(engine)
    summary = import_file(engine, table, file, column_map, plausibility=plausibility)
    for note in summary["notes"]:
        tell(f"note: {note}")
    report(summary, f"Imported {summary['rows']:,} rows into {table} ({safe_url(settings.db)})", as_json)
