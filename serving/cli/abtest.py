"""``leadval abtest``: the CRM's A/B tests compared, variant by variant, with the peeking caution on every output.

A thin wrapper: the CRM is read here (only the tables the metric needs) and every figure comes from
``features.kpi.experiments``. Read-only: a CRM that does not exist is an error, and nothing is created.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer

from features.errors import InvalidInput
from features.settings import load_settings
from serving.cli.console import printable, tell
from serving.cli.console import report as print_result
from serving.cli.options import DbOption, JsonOption

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy import Engine

    from features.kpi.experiments import ExperimentResult
    from features.kpi.tables import KpiTables

METRIC_NOTES = {
    "conversion": "conversion: share of assigned leads converting after assignment, by as_of",
    "ctr": "ctr: share of assigned leads opening an email after assignment who also clicked one (click-to-open); "
           "n counts the openers",
    "revenue": "revenue: order revenue per assigned lead after assignment, by as_of (Welch's t-test)",
}


def abtest(
    db: DbOption = None,
    experiment: Annotated[str | None, typer.Option("--experiment", help="Only this experiment [default: all].")]
    = None,
    metric: Annotated[str, typer.Option("--metric", help="conversion, ctr (email click-to-open) or revenue (per "
                                                         "lead).")] = "conversion",
    as_of: Annotated[str | None, typer.Option("--as-of", help="Count assignments and outcomes up to this date/time "
                                                              "(UTC) [default: now].")] = None,
    as_json: JsonOption = False,
) -> None:
    """Compare the variants of the CRM's A/B tests: rates, intervals, p-values, P(best) and sample size needed."""
    import pandas as pd

    from features.crm.store import connect, missing_tables
    from features.crm.urls import safe_url
    from features.kpi.experiments import METRICS, PEEKING_CAUTION, experiment_results, experiment_trials
    from features.lead_features import as_of_timestamp

    if metric not in METRICS:
        raise InvalidInput(f"--metric {metric!r} is unknown; expected one of {', '.join(METRICS)}")
    try:
        moment = as_of_timestamp(as_of) if as_of is not None else pd.Timestamp.now(tz="UTC").tz_localize(None)
    except InvalidInput:
        raise InvalidInput(f"--as-of {as_of!r}: not a date or time; expected e.g. 2025-12-31T00:00:00") from None
    url = load_settings(db=db).db
    engine = connect(url, create=False)
    if "experiment_assignments" in missing_tables(engine):
        raise InvalidInput(f"the CRM at {safe_url(url)} has no experiment_assignments table (it predates A/B tests); "
                           "load assignments with `leadval import --table experiment_assignments FILE`")
    crm = _read(engine, metric)
    known = sorted(crm.experiment_assignments["experiment"].unique().tolist())
    if not known:
        raise InvalidInput(f"no experiments in the CRM at {safe_url(url)} yet; load assignments with "
                           "`leadval import --table experiment_assignments FILE`")
    if experiment is not None and experiment not in known:
        raise InvalidInput(f"no experiment {experiment!r} in the CRM; known: {', '.join(known)}")
    trials = experiment_trials(crm, metric, pd.Timestamp(moment))
    if experiment is not None:
        trials = trials[trials["experiment"] == experiment]
    results = experiment_results(trials, metric, pd.Timestamp(moment))
    warnings = [w for r in results for w in r.warnings]
    if trials.empty:
        warnings.append(f"no lead was assigned by {moment:%Y-%m-%d %H:%M}: nothing to compare")
    for warning in warnings:
        tell(f"warning: {warning}")
    notes = [PEEKING_CAUTION, METRIC_NOTES[metric]]
    payload = {"db": safe_url(url), "as_of": moment, "metric": metric,
               "experiments": [asdict(r) for r in results], "warnings": warnings, "notes": notes}
    print_result(payload, _text(results, metric, moment, PEEKING_CAUTION), as_json)


def _read(engine: Engine, metric: str) -> KpiTables:
    """The assignments and the tables ``metric`` needs, with only the columns it uses."""
    from features.crm import schema
    from features.crm.store import read_frame
    from features.kpi.tables import kpi_tables

    frames = {
        "experiment_assignments": read_frame(engine, schema.experiment_assignments),
        "leads": read_frame(engine, schema.leads, ["lead_id", "created_at", "source_channel", "converted_at"]),
    }
    if metric == "ctr":
        emails = schema.activities.c.activity_type.in_(["email_open", "email_click"])
        frames["activities"] = read_frame(engine, schema.activities, ["lead_id", "occurred_at", "activity_type"],
                                          emails)
    if metric == "revenue":
        frames["customers"] = read_frame(engine, schema.customers, ["customer_id", "lead_id", "created_at"])
        frames["orders"] = read_frame(engine, schema.orders, ["customer_id", "ordered_at", "amount"])
    return kpi_tables(**frames)


def _value(value: float | None, metric: str, signed: bool = False) -> str:
    """A rate in percent (points for differences) or revenue in money; '-' when missing."""
    if value is None:
        return "-"
    sign = "+" if signed else ""
    if metric == "revenue":
        return f"{value:{sign},.2f}"
    return f"{value * 100:{sign}.1f}" + (" pts" if signed else "%")


def _text(results: list[ExperimentResult], metric: str, as_of: pd.Timestamp, caution: str) -> str:
    """A small table per experiment, the comparison, and the caution line."""
    lines = [f"A/B tests on {metric}, as of {as_of:%Y-%m-%d %H:%M} UTC"]
    for r in results:
        lines.append("")
        lines.append(f"{printable(r.experiment)} ({r.status}, assigned {r.first_assigned:%Y-%m-%d} to "
                     f"{r.last_assigned:%Y-%m-%d}; control: {printable(r.control)})")
        lines.append(f"  {'variant':<20} {'n':>7} {'rate':>9} {'95% interval':>21} {'P(best)':>8}")
        for v in r.variants:
            interval = f"{_value(v['ci_low'], metric)} to {_value(v['ci_high'], metric)}"
            best = "-" if v.get("prob_best") is None else f"{v['prob_best']:.1%}"
            lines.append(f"  {printable(v['variant']):<20} {v['n']:>7,} {_value(v['rate'], metric):>9} "
                         f"{interval:>21} {best:>8}")
        if r.difference is not None:
            lines.append(f"  {printable(str(r.compared))} - {printable(r.control)}: {_value(r.difference, metric, True)} "
                         f"({_value(r.ci_low, metric, True)} to {_value(r.ci_high, metric, True)}), "
                         f"p = {r.p_value:.3g}: {printable(r.verdict_text)}")
        else:
            lines.append(f"  {printable(r.verdict_text)}")
        if r.needed_per_variant is not None:
            more = (f"{r.more_needed_per_variant:,} more" if r.more_needed_per_variant else "reached")
            lines.append(f"  to detect this difference at 80% power: {r.needed_per_variant:,} per variant ({more})")
    lines.append("")
    lines.append(f"Caution: {caution}")
    return "\n".join(lines)
