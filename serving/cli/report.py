"""The reporting commands: ``leadval report`` (the KPI page), ``leadval segments`` and ``leadval leads top``.

Plain typer-annotated functions; ``serving.cli.app`` mounts them. Reading the CRM happens here, at the edge;
every figure is computed by the pure functions of ``features.kpi`` (metrics, attribution, targets, predictive).
Conversion by band comes from the latest stored backtest (``leadval backtest leads``); the report and the top leads
say when the lead scores are as of. What the CLV model behind the customer scores warned about at training (a
degenerate fit, Gamma-Gamma's doubts, segments by value and recency) comes from its MLflow run (``run_id`` of
``customer_scores``, at ``--tracking-uri``); without it the report says so and infers the segment basis from the
scores' P(alive).
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from features.errors import InvalidInput
from features.settings import load_settings
from serving.cli.console import printable, progress_bar, tell
from serving.cli.console import report as print_result
from serving.cli.options import DbOption, JsonOption, TrackingOption

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy import Engine

    from serving.report.data import KPIReport, StoredBacktest

DEFAULT_REPORT = Path("reports/kpi_report.html")
EXPORT_FORMATS = (".csv", ".parquet")


def _engine(db: str | None, tables: tuple[str, ...]) -> tuple[Engine, str]:
    from features.crm.store import connect, missing_tables
    from features.crm.urls import safe_url

    settings = load_settings(db=db)
    engine = connect(settings.db, create=False)
    absent = [name for name in tables if name in missing_tables(engine)]
    if absent:
        raise InvalidInput(f"the CRM at {safe_url(settings.db)} has no table(s) {', '.join(absent)}; run "
                           "`leadval generate` or `leadval import` first")
    return engine, settings.db


def read_backtest(engine: Engine) -> StoredBacktest | None:
    """The latest stored backtest of the lead model, or None when there is none."""
    from serving.report.data import StoredBacktest
    from training.leads.backtest import latest_backtest

    found = latest_backtest(engine)
    return None if found is None else StoredBacktest(*found)


def read_monitoring(engine: Engine) -> pd.DataFrame:
    """Every row of ``monitoring_runs`` (empty in a CRM without the table or without monitoring yet)."""
    import pandas as pd

    from features.crm import schema
    from features.crm.store import missing_tables, read_frame

    if schema.monitoring_runs.name in missing_tables(engine):
        return pd.DataFrame()
    return read_frame(engine, schema.monitoring_runs)


def read_clv_recorded(customer_scores: pd.DataFrame, tracking_uri: str) -> dict | None:
    """What the training run of the CLV model behind most customer scores recorded (None without scores)."""
    if customer_scores.empty or "run_id" not in customer_scores or customer_scores["run_id"].isna().all():
        return None
    from training.clv.pyfunc import recorded_notes

    return recorded_notes(str(customer_scores["run_id"].mode().iloc[0]), tracking_uri)


def _day(value: str | None, flag: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{flag} {value!r} is not a date; expected YYYY-MM-DD") from None


def report(
    db: DbOption = None,
    out: Annotated[Path, typer.Option("--out", help="Where to write the HTML page.", dir_okay=False)] = DEFAULT_REPORT,
    from_: Annotated[str | None, typer.Option("--from", help="First day of the window, YYYY-MM-DD [default: the "
                                                            "data's first day].")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Last day of the window, included, YYYY-MM-DD [default: "
                                                        "the data's last day].")] = None,
    targets: Annotated[Path | None, typer.Option("--targets", help="SMART targets file (TOML), e.g. "
                                                 "targets.example.toml.", exists=True, dir_okay=False)] = None,
    tracking_uri: TrackingOption = None,
    brand_pattern: Annotated[str | None, typer.Option(
        "--brand-pattern", help="Regular expression (case-insensitive, found anywhere in the name) naming brand "
        "campaigns, for the branded-search share of the brand awareness proxies [default: 'brand', "
        "features.kpi.awareness.BRAND_PATTERN].", show_default=False)] = None,
    as_json: JsonOption = False,
) -> None:
    """Write the KPI report: one self-contained HTML page of channel, trend, attribution and predictive KPIs."""
    from features.crm.urls import safe_url
    from features.kpi.awareness import BRAND_PATTERN
    from features.kpi.tables import read_kpi_tables, report_window
    from features.kpi.targets import read_targets
    from serving.report.data import build_report, report_json
    from serving.report.page import render_html

    started = time.perf_counter()
    start, end = _day(from_, "--from"), _day(to, "--to")
    goals = read_targets(targets) if targets is not None else ()
    engine, url = _engine(db, ("leads", "activities", "customers", "orders", "marketing_spend", "lead_scores",
                               "customer_scores", "customer_score_history"))
    with progress_bar(total=3, desc="KPI report", unit="steps") as bar:
        crm = read_kpi_tables(engine)
        backtest = read_backtest(engine)
        recorded = read_clv_recorded(crm.customer_scores, load_settings(tracking_uri=tracking_uri).tracking_uri)
        bar.update()
        window = report_window(crm, start, end)
        built = build_report(crm, window, goals, backtest=backtest, clv_recorded=recorded,
                             brand_pattern=BRAND_PATTERN if brand_pattern is None else brand_pattern,
                             monitoring=read_monitoring(engine))
        bar.update()
        page = render_html(built)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
        bar.update()
    seconds = time.perf_counter() - started
    note = built.clv_model or {}
    warnings = [f"{_clv_name(note)}: {w}" for w in note.get("warnings", [])] + built.warnings
    for warning in warnings:
        tell(f"warning: {warning}")
    result = {**report_json(built), "out": str(out), "db": safe_url(url), "seconds": round(seconds, 2),
              "warnings": warnings}
    print_result(result, _summary(built, out, seconds), as_json)


def _clv_name(note: dict) -> str:
    version = f" v{note['model_version']}" if note.get("model_version") else ""
    return f"CLV model {note.get('model_name') or '?'}{version}"


def _clv_line(note: dict | None) -> str | None:
    """One line on the CLV model behind the customer scores and its segment basis."""
    if not note:
        return None
    from training.clv.purchases import MODEL_LABELS

    kind = f" ({MODEL_LABELS.get(note['model'], note['model'])})" if note.get("model") else ""
    basis = ("P(alive) and value" if note["segments_by"] == "p_alive"
             else "value and recency (P(alive) tells no one apart)")
    said = (f"{len(note['warnings'])} warning(s) from its training" if note["warnings_source"] == "model"
            else f"its training warnings unknown ({note['warnings_source']})")
    return f"  customer scores by {_clv_name(note)}{kind}: segments by {basis}; {said}"


def _summary(built: KPIReport, out: Path, seconds: float) -> str:
    from serving.report.cells import fmt
    from serving.report.page import scores_as_of_text

    t = built.totals
    lines = [
        f"Wrote {out} ({built.window.label}, {seconds:.1f} s)",
        f"  {fmt(t['leads'], 'count')} leads on {len(built.channels)} channels; {fmt(t['conversions'], 'count')} "
        f"converted leads (conversion rate {fmt(t['conversion_rate'], 'percent')}); {fmt(t['new_customers'], 'count')} "
        f"new customers in all (with or without a lead), {fmt(t['paid_new_customers'], 'count')} of them through "
        "channels with spend",
        f"  spend {fmt(t['spend'], 'money')}; paid CAC {fmt(t['paid_cac'], 'money')} (spend / new customers of "
        f"channels with spend); blended CAC {fmt(t['blended_cac'], 'money')} (spend / all new customers); ROI (paid) "
        f"{fmt(t['roi'], 'percent')}; CLV:CAC (paid) {fmt(t['clv_to_cac'], 'ratio')}",
    ]
    lines.append(f"  lead scores {scores_as_of_text(built.scores_as_of)}; " + _bands_line(built))
    clv_line = _clv_line(built.clv_model)
    if clv_line:
        lines.append(clv_line)
    lines.append(f"  engagement time {fmt(t['engagement_time_seconds'] / 3600, 'decimal')} h over "
                 f"{fmt(t['engagement_time_sessions'], 'count')} sessions and "
                 f"{fmt(t['engagement_time_webinars'], 'count')} webinars "
                 f"({fmt(t['engagement_time_per_engaged_lead_seconds'] / 60, 'decimal')} min per engaged lead)")
    lines.append(f"  brand proxies: branded search {fmt(t['brand_search_click_share'], 'percent')} of search clicks, "
                 f"{fmt(t['brand_search_lead_share'], 'percent')} of search leads; direct "
                 f"{fmt(t['brand_direct_lead_share'], 'percent')} of leads; social reach "
                 f"{fmt(t['brand_social_reach_impressions'], 'count')} impressions")
    lines.extend(_experiment_lines(built))
    if not built.targets.empty:
        counts = built.targets["status"].value_counts()
        lines.append("  targets: " + ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in counts.items()))
    return "\n".join(lines)


def _experiment_lines(built: KPIReport) -> list[str]:
    """One line per experiment: status and verdict on conversion; the peeking caution once."""
    if not built.experiments:
        return ["  experiments (A/B tests): none in the CRM"]
    lines = [f"  experiment {printable(r.experiment)} ({r.status}): {printable(r.verdict_text)}"
             for r in built.experiments]
    return [*lines, "  experiments compared on conversion, fixed-horizon: peeking inflates false winners"]


def _bands_line(built: KPIReport) -> str:
    from serving.report.cells import fmt

    if built.backtest is None:
        return "conversion by band: no backtest yet: run leadval backtest leads"
    about = built.backtest.summary()
    rates = ", ".join(f"{row['band']} {fmt(row['actual_rate'], 'small_percent')} (predicted "
                      f"{fmt(row['predicted_rate'], 'small_percent')})" for row in built.calibration.to_dict("records"))
    return (f"conversion by band from backtest {about['backtest_id']} ({about['model']}, "
            f"{fmt(about['as_of_from'], 'date')} to {fmt(about['as_of_to'], 'date')}): {rates}")


def segments_export(
    out: Annotated[Path, typer.Option("--out", help="File to write: .csv or .parquet.", dir_okay=False)],
    db: DbOption = None,
    segment: Annotated[str | None, typer.Option("--segment", help="Only this segment (e.g. champions, at_risk).")]
    = None,
    min_clv: Annotated[float | None, typer.Option("--min-clv", help="Only customers with a predicted CLV of at "
                                                  "least this.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Export scored customers (id, segment, CLV, P(alive), last order) for an email or ads tool."""
    from features.crm import schema
    from features.crm.store import read_frame
    from features.crm.urls import safe_url
    from features.csv_export import write_csv
    from features.kpi.predictive import customer_list

    if out.suffix.lower() not in EXPORT_FORMATS:
        raise InvalidInput(f"--out {out}: expected a file ending in {' or '.join(EXPORT_FORMATS)}")
    engine, url = _engine(db, ("customer_scores", "orders"))
    scores = read_frame(engine, schema.customer_scores, ["customer_id", "segment", "clv", "p_alive"])
    if scores.empty:
        raise InvalidInput(f"no customer scores in {safe_url(url)} yet; run `leadval score customers` first")
    orders = read_frame(engine, schema.orders, ["customer_id", "ordered_at"])
    table = customer_list(scores, orders, segment, min_clv)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        write_csv(table, out, date_format="%Y-%m-%dT%H:%M:%S")
    else:
        table.to_parquet(out, index=False)
    counts = table["segment"].value_counts().to_dict()
    warnings = [_empty_segment_note(segment, min_clv, len(scores))] if table.empty else []
    for warning in warnings:
        tell(f"note: {warning}")
    result = {"out": str(out), "rows": len(table), "segment": segment, "min_clv": min_clv, "segments": counts,
              "warnings": warnings}
    print_result(result, f"Wrote {len(table):,} customers to {out}", as_json)


def _empty_segment_note(segment: str | None, min_clv: float | None, scored: int) -> str:
    """Why an export is empty, in words: the file holds only the header."""
    which = f"segment {segment!r}" if segment is not None else "the scored customers"
    value = f" with a predicted CLV of at least {min_clv:,.2f}" if min_clv is not None else ""
    return (f"no customers in {which}{value} (of {scored:,} scored customers); the file holds only the header, "
            "so a campaign tool reading it gets an empty list")


def leads_top(
    db: DbOption = None,
    n: Annotated[int, typer.Option("--n", min=1, help="How many leads to list.")] = 50,
    by: Annotated[str, typer.Option("--by", help="Rank by score or by expected value.")] = "score",
    as_json: JsonOption = False,
) -> None:
    """Print the best open leads for a salesperson: score, band, expected value and the reasons."""
    from features.crm import schema
    from features.crm.store import read_frame
    from features.crm.urls import safe_url
    from features.json_ready import json_ready
    from features.kpi.predictive import LEAD_ORDER, scores_as_of, top_open_leads
    from serving.report.data import records
    from serving.report.page import scores_as_of_text

    if by not in LEAD_ORDER:
        raise InvalidInput(f"--by {by!r} is unknown; expected score or value")
    engine, url = _engine(db, ("leads", "lead_scores"))
    scores = read_frame(engine, schema.lead_scores, ["lead_id", "score", "probability", "band", "reasons",
                                                      "expected_value", "as_of", "scored_at"])
    if scores.empty:
        raise InvalidInput(f"no lead scores in {safe_url(url)} yet; run `leadval score leads` first")
    leads = read_frame(engine, schema.leads, ["lead_id", "source_channel", "campaign", "created_at",
                                              "converted_at"])
    table = top_open_leads(leads, scores, n, by)
    first, last = scores_as_of(scores)
    result = {"leads": records(table), "n": len(table), "by": by,
              "scores_as_of": {"from": json_ready(first), "to": json_ready(last)}}
    print_result(result, _lead_lines(table, scores_as_of_text((first, last))), as_json)


def _lead_lines(table: pd.DataFrame, as_of: str) -> str:
    import pandas as pd

    if table.empty:
        return f"No open scored leads (scores {as_of})."
    header = f"{'#':>3}  {'lead':<14} {'score':>5} {'band':<4} {'value':>10}  {'channel':<16} reasons"
    lines = [header]
    for rank, row in enumerate(table.to_dict("records"), start=1):
        value = "-" if pd.isna(row["expected_value"]) else f"{row['expected_value']:,.0f}"
        lead, band, channel, reasons = (printable(str(row[key])) for key in ("lead_id", "band", "channel", "reasons"))
        reasons = reasons if len(reasons) <= 90 else reasons[:89] + "\u2026"
        lines.append(f"{rank:>3}  {lead:<14} {int(row['score']):>5} {band:<4} {value:>10}  {channel:<16} {reasons}")
    lines.append(f"Scores {as_of}.")
    return "\n".join(lines)
