"""The CRM contract: tables, columns and their meaning, shared by the store, import, features and scoring.

Column names are public: CRM exports are mapped onto them, and the README documents each one from the
``doc`` given here. All timestamps are naive UTC (``timestamp without time zone``).

A column's value rule (``minimum``, ``maximum``, ``allowed`` values) is declared once, on the column: it is
kept in ``Column.info``, where the import and every other check read it (``features.crm.rules``), and the
table's ``CHECK`` constraint is generated from it, so the database and the checks enforce the same rule.
A column can also be marked as an amount of money (``money``): the import holds such amounts to a plausible
maximum it is told (``--max-amount``); a limit that varies by business and by file is no fact of the schema,
so it makes no ``CHECK``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

ACTIVITY_TYPES: tuple[str, ...] = (
    "web_session",
    "page_view",
    "pricing_page_view",
    "email_sent",
    "email_open",
    "email_click",
    "form_submit",
    "content_download",
    "webinar_register",
    "webinar_attend",
    "demo_request",
    "social_engagement",
)
"""Every behaviour event the CRM records; ``activities.activity_type`` takes one of these."""

SCORE_BANDS: tuple[str, ...] = ("A", "B", "C", "D")
"""Lead score bands, best first."""

RUN_STATUSES: tuple[str, ...] = ("running", "succeeded", "failed")

RULE_KEYS: frozenset[str] = frozenset({"minimum", "maximum", "allowed"})
"""The keys of ``Column.info`` that hold a column's declared value rule."""

metadata = MetaData()


def _col(
    name: str,
    type_,
    doc: str,
    *constraints,
    minimum: float | None = None,
    maximum: float | None = None,
    allowed: tuple[str, ...] | None = None,
    check: str | None = None,
    money: bool = False,
    **kwargs,
) -> Column:
    """A column whose ``doc`` is the README's description of it, with its value rule if it has one.

    ``minimum``, ``maximum`` (inclusive) and ``allowed`` are the rule; ``check`` names the ``CHECK`` constraint
    :func:`_table` generates from it (default ``ck_<table>_<column>``; columns naming the same one share it).
    ``money`` marks an amount of money, held to a plausible maximum on import (no ``CHECK``).
    """
    rule = {"minimum": minimum, "maximum": maximum, "allowed": allowed, "check": check, "money": money or None}
    return Column(name, type_, *constraints, info={"doc": doc} | {k: v for k, v in rule.items() if v is not None},
                  **kwargs)


def _table(name: str, *items) -> Table:
    """A table of ``metadata`` with the ``CHECK`` constraints generated from its columns' declared rules."""
    checks: dict[str, list[Column]] = {}
    for item in items:
        if isinstance(item, Column) and RULE_KEYS & item.info.keys():
            checks.setdefault(item.info.get("check", f"ck_{name}_{item.name}"), []).append(item)
    generated = [CheckConstraint(" AND ".join(_rule_sql(c) for c in columns), name=check)
                 for check, columns in checks.items()]
    return Table(name, metadata, *items, *generated)


def _rule_sql(column: Column) -> str:
    """The SQL condition of a column's declared rule, e.g. ``amount >= 0`` or ``band IN ('A', 'B')``."""
    clauses = [f"{column.name} {op} {column.info[key]!r}" for key, op in (("minimum", ">="), ("maximum", "<="))
               if key in column.info]
    if "allowed" in column.info:
        clauses.append(f"{column.name} IN ({_sql_texts(column.info['allowed'])})")
    condition = " AND ".join(clauses)
    if not column.nullable:
        return condition
    return f"{column.name} IS NULL OR " + (f"({condition})" if len(clauses) > 1 else condition)


def _sql_texts(values: Sequence[str]) -> str:
    return ", ".join("'" + value.replace("'", "''") + "'" for value in values)


leads = _table(
    "leads",
    _col("lead_id", String(64), "Lead identifier from the CRM.", primary_key=True),
    _col("created_at", DateTime(), "When the lead entered the CRM (UTC).", nullable=False),
    _col("source_channel", String(64), "Channel that brought the lead (e.g. paid_search, organic, referral).",
         nullable=False),
    _col("campaign", String(128), "Campaign that brought the lead, if any."),
    _col("country", String(64), "Country of the lead (ISO code or name as the CRM holds it)."),
    _col("industry", String(64), "Industry of the lead's company."),
    _col("company_size", String(32), "Company size band (e.g. 1-10, 11-50, 51-200, 201-1000, 1000+)."),
    _col("job_seniority", String(32), "Seniority of the contact (e.g. individual, manager, director, vp, c_level)."),
    _col("email_domain_type", String(32), "Kind of email domain: business, free or edu."),
    _col("converted_at", DateTime(), "When the lead became a customer (UTC); empty while open."),
    _col("customer_id", String(64), "The customer this lead became; empty while open."),
    Index("ix_leads_created_at", "created_at"),
    Index("ix_leads_converted_at", "converted_at"),
)

activities = _table(
    "activities",
    _col("activity_id", String(64), "Event identifier.", primary_key=True),
    _col("lead_id", String(64), "Lead who did it.", ForeignKey("leads.lead_id"), nullable=False),
    _col("occurred_at", DateTime(), "When it happened (UTC).", nullable=False),
    _col("activity_type", String(32), "One of: " + ", ".join(ACTIVITY_TYPES) + ".", nullable=False,
         allowed=ACTIVITY_TYPES, check="ck_activities_type"),
    _col("channel", String(64), "Channel it came through (web, email, social, event, ...)."),
    _col("content_id", String(128), "Page, email, asset or webinar involved, if any."),
    _col("duration_seconds", Float, "Engagement time in seconds, where measured (sessions, page views, webinars).",
         minimum=0, check="ck_activities_duration"),
    Index("ix_activities_lead_time", "lead_id", "occurred_at"),
    Index("ix_activities_occurred_at", "occurred_at"),
)

customers = _table(
    "customers",
    _col("customer_id", String(64), "Customer identifier.", primary_key=True),
    _col("lead_id", String(64), "Lead the customer came from; empty for customers not from tracked leads.",
         ForeignKey("leads.lead_id")),
    _col("created_at", DateTime(), "When the customer was created (UTC), normally the first order.", nullable=False),
    _col("acquisition_channel", String(64), "Channel that acquired the customer."),
    _col("country", String(64), "Country of the customer."),
)

orders = _table(
    "orders",
    _col("order_id", String(64), "Order identifier.", primary_key=True),
    _col("customer_id", String(64), "Customer who ordered.", ForeignKey("customers.customer_id"), nullable=False),
    _col("ordered_at", DateTime(), "When the order was placed (UTC).", nullable=False),
    _col("amount", Float, "Order value in the account currency, >= 0.", nullable=False, minimum=0, money=True),
    Index("ix_orders_customer_time", "customer_id", "ordered_at"),
)

marketing_spend = _table(
    "marketing_spend",
    _col("date", Date, "Day of the spend (UTC).", primary_key=True),
    _col("channel", String(64), "Marketing channel.", primary_key=True),
    _col("campaign", String(128), "Campaign ('' where the spend is not tied to one).", primary_key=True),
    _col("spend", Float, "Money spent that day, >= 0.", nullable=False, minimum=0, check="ck_spend_nonnegative",
         money=True),
    _col("impressions", Integer, "Ad impressions or sends, >= 0.", nullable=False, minimum=0,
         check="ck_spend_nonnegative"),
    _col("clicks", Integer, "Clicks, >= 0.", nullable=False, minimum=0, check="ck_spend_nonnegative"),
)

experiment_assignments = _table(
    "experiment_assignments",
    _col("experiment", String(128), "Experiment (A/B test) name, e.g. nurture_subject_line.", primary_key=True),
    _col("lead_id", String(64), "Lead assigned to one of its variants.", ForeignKey("leads.lead_id"),
         primary_key=True),
    _col("variant", String(64), "Variant the lead saw; the control is the one called control (else A, else the "
         "first by name).", nullable=False),
    _col("assigned_at", DateTime(), "When the lead was assigned (UTC); only what it did after this counts for the "
         "experiment.", nullable=False),
    Index("ix_experiment_assignments_lead", "lead_id"),
)

scoring_runs = _table(
    "scoring_runs",
    _col("scoring_run_id", String(64), "Identifier of one batch scoring run.", primary_key=True),
    _col("job", String(16), "What was scored: leads or customers.", nullable=False),
    _col("model_name", String(128), "Registered model name.", nullable=False),
    _col("model_version", String(32), "Registered model version."),
    _col("model_uri", String(512), "Model URI the run loaded (e.g. models:/lead-scoring@champion)."),
    _col("as_of", DateTime(), "Point in time the features were computed at (UTC).", nullable=False),
    _col("as_of_source", String(8), "now: the run scored as of its own start (no --as-of), and the same command "
         "resumes it after a crash; given: --as-of. Empty for runs recorded before this column existed."),
    _col("started_at", DateTime(), "When the run started (UTC).", nullable=False),
    _col("finished_at", DateTime(), "When the run finished (UTC); empty while running or after a crash."),
    _col("status", String(16), "running, succeeded or failed.", nullable=False, allowed=RUN_STATUSES),
    _col("rows_total", Integer, "Rows the run set out to score."),
    _col("rows_scored", Integer, "Rows written so far.", nullable=False, default=0),
    _col("error", Text, "Error message of a failed run."),
)

lead_scores = _table(
    "lead_scores",
    _col("lead_id", String(64), "Scored lead.", primary_key=True),
    _col("score", Integer, "Likelihood to convert as a rank 1-99: the percentile of the lead's probability among the "
         "model's validation leads (models saved before scorer format 2: probability x 100).", nullable=False,
         minimum=0, maximum=100),
    _col("probability", Float, "Calibrated probability of converting within the model's horizon.", nullable=False),
    _col("band", String(1), "Score band A (best) to D: score ranges holding fixed shares of validation leads (by "
         "default A 91-99 = the top 10%, B 71-90, C 41-70, D 1-40).", nullable=False, allowed=SCORE_BANDS),
    _col("reasons", JSON, "Top factors raising and lowering the score, worded for sales (JSON)."),
    _col("expected_value", Float, "Probability x predicted CLV of a new customer like this lead."),
    _col("trend", String(8), "up, steady or down against the lead's previous score by the same model "
         "version; new on its first score by a model version; empty when its current score is as of a later date (a "
         "backfill)."),
    _col("previous_score", Integer, "The lead's score before this one."),
    _col("model_name", String(128), "Registered model that scored it.", nullable=False),
    _col("model_version", String(32), "Its version."),
    _col("run_id", String(64), "MLflow run that trained the model."),
    _col("scoring_run_id", String(64), "Batch run that wrote the row.", ForeignKey("scoring_runs.scoring_run_id")),
    _col("as_of", DateTime(), "Point in time of the features (UTC)."),
    _col("scored_at", DateTime(), "When it was scored (UTC).", nullable=False),
)

customer_scores = _table(
    "customer_scores",
    _col("customer_id", String(64), "Scored customer.", primary_key=True),
    _col("expected_purchases", Float, "Expected purchases over the horizon.", nullable=False),
    _col("p_alive", Float, "Probability the customer is still active.", nullable=False),
    _col("expected_order_value", Float, "Expected value of a future order (Gamma-Gamma)."),
    _col("clv", Float, "Discounted customer lifetime value over the horizon."),
    _col("segment", String(32), "Marketing segment (champions, loyal, promising, at_risk, lost).", nullable=False),
    _col("horizon_days", Integer, "Horizon of expected_purchases and clv, in days.", nullable=False),
    _col("model_name", String(128), "Registered model that scored it.", nullable=False),
    _col("model_version", String(32), "Its version."),
    _col("run_id", String(64), "MLflow run that trained the model."),
    _col("scoring_run_id", String(64), "Batch run that wrote the row.", ForeignKey("scoring_runs.scoring_run_id")),
    _col("as_of", DateTime(), "Point in time of the RFM summary (UTC)."),
    _col("scored_at", DateTime(), "When it was scored (UTC).", nullable=False),
)


def _history(name: str, key: str, scores: Table) -> Table:
    """Append-only copy of a score table: one row per entity per scoring run.

    The copied columns keep their docs but not their value rules: history tables were created without the
    score tables' ``CHECK`` constraints, and a rule the database does not hold would make the two disagree.
    """
    copied = [
        Column(c.name, c.type, nullable=c.nullable, info={"doc": c.info["doc"]})
        for c in scores.columns
        if c.name != "scoring_run_id"
    ]
    return Table(
        name,
        metadata,
        _col("history_id", Integer, "Row number.", primary_key=True, autoincrement=True),
        _col("scoring_run_id", String(64), "Batch run that wrote the row.",
             ForeignKey("scoring_runs.scoring_run_id"), nullable=False),
        *copied,
        UniqueConstraint("scoring_run_id", key, name=f"uq_{name}_run_{key}"),
        Index(f"ix_{name}_{key}", key, "scored_at"),
    )


lead_score_history = _history("lead_score_history", "lead_id", lead_scores)
customer_score_history = _history("customer_score_history", "customer_id", customer_scores)

BACKTEST_MODELS: tuple[str, ...] = ("retrain", "current")
"""How a backtest scores past leads: a model retrained by the champion's recipe on data before each as-of date,
or the current champion (optimistic: it was trained on data overlapping the backtest period)."""

lead_backtests = _table(
    "lead_backtests",
    _col("backtest_id", String(64), "Identifier of one backtest; the same work gets the same id and a rerun "
         "replaces its rows.", primary_key=True),
    _col("as_of", DateTime(), "Past point in time the open leads were scored at (UTC).", primary_key=True),
    _col("model", String(16), "retrain (a model trained by the champion's recipe on data before as_of) or current "
         "(the champion itself: optimistic).", nullable=False),
    _col("model_version", String(32), "Version of the champion whose recipe or model was used."),
    _col("recipe", JSON, "Training config of the models and where it came from (JSON)."),
    _col("horizon_days", Integer, "A lead counts as converted when it converted within this many days after as_of.",
         nullable=False),
    _col("trained_to", DateTime(), "End of the last label window the retrained model learned from (UTC), at or "
         "before as_of; empty for the current champion."),
    _col("leads", Integer, "Leads open at as_of (created by then, not converted by then).", nullable=False),
    _col("conversions", Integer, "Of them, those that converted within the horizon.", nullable=False),
    _col("base_rate", Float, "conversions / leads."),
    _col("mean_probability", Float, "Mean calibrated probability the model gave them."),
    _col("roc_auc", Float, "ROC AUC of the probabilities against the outcomes; empty without both outcomes."),
    _col("pr_auc", Float, "PR AUC (average precision) of the probabilities; empty without both outcomes."),
    _col("lift_top10", Float, "Conversion rate of the top 10% by probability over the base rate."),
    _col("created_at", DateTime(), "When the backtest ran (UTC); the report shows the latest backtest.",
         nullable=False),
    Index("ix_lead_backtests_created_at", "created_at"),
)

lead_backtest_bands = _table(
    "lead_backtest_bands",
    _col("backtest_id", String(64), "Backtest the row belongs to.", primary_key=True),
    _col("as_of", DateTime(), "Past point in time the open leads were scored at (UTC).", primary_key=True),
    _col("band", String(1), "Score band A (best) to D the model gave at as_of.", primary_key=True),
    _col("leads", Integer, "Open leads in the band at as_of.", nullable=False),
    _col("conversions", Integer, "Of them, those that converted within the horizon.", nullable=False),
    _col("predicted_rate", Float, "Mean calibrated probability of the band's leads; empty for an empty band."),
    _col("actual_rate", Float, "Share of the band's leads that converted within the horizon; empty for an empty "
         "band."),
    ForeignKeyConstraint(["backtest_id", "as_of"], ["lead_backtests.backtest_id", "lead_backtests.as_of"],
                         name="fk_lead_backtest_bands_as_of"),
)

MONITORED_MODELS: tuple[str, ...] = ("lead-scoring", "clv", "kpi", "all")
"""What a monitoring check looks at: a registered model, the KPI targets, or (``overall`` only) the whole run."""
CHECK_STATUSES: tuple[str, ...] = ("ok", "no_data", "warn", "alert")

monitoring_runs = _table(
    "monitoring_runs",
    _col("run_id", String(64), "Identifier of one monitoring run: the same CRM, as-of, champions and targets give "
         "the same id, and a rerun replaces its rows.", primary_key=True),
    _col("checked_at", DateTime(), "When the run checked (UTC).", nullable=False),
    _col("as_of", DateTime(), "Point in time the run checked the CRM at (UTC).", nullable=False),
    _col("model", String(32), "What the check looks at: lead-scoring, clv (the registered model), kpi (the targets) "
         "or all (the run's overall row only).", primary_key=True, allowed=MONITORED_MODELS),
    _col("model_version", String(32), "Version of the champion checked; empty for kpi, all and a model without a "
         "champion."),
    _col("check", String(255), "Check name and, after a colon, what it looked at (realized_auc, "
         "input_drift:source_channel, kpi_target:NAME); overall holds the status of the model's checks (model all: "
         "of the whole run).", primary_key=True),
    _col("status", String(8), "ok, no_data (nothing to judge yet; counts as ok), warn or alert.", nullable=False,
         allowed=CHECK_STATUSES),
    _col("value", Float, "The check's value (e.g. realized ROC AUC); empty for no_data and overall rows."),
    _col("warn", Float, "Threshold at which the value turns warn; empty where there is none."),
    _col("alert", Float, "Threshold at which the value turns alert; empty where there is none."),
    _col("detail", Text, "One sentence for people: what was measured, on how many rows, as of when."),
    Index("ix_monitoring_runs_model_check", "model", "check", "checked_at"),
)

CRM_TABLES: tuple[Table, ...] = (leads, activities, customers, orders, marketing_spend, experiment_assignments)
"""Tables a CRM export can be imported into, in dependency order."""

SCORE_TABLES: tuple[Table, ...] = (
    scoring_runs,
    lead_scores,
    customer_scores,
    lead_score_history,
    customer_score_history,
    lead_backtests,
    lead_backtest_bands,
    monitoring_runs,
)

RFM_COLUMNS: tuple[str, ...] = ("customer_id", "frequency", "recency", "T", "monetary_value")
"""The RFM summary, in the names of Fader-Hardie and the ``lifetimes`` package."""


def table(name: str) -> Table:
    """The table called ``name``, or a clear error listing the known ones."""
    try:
        return metadata.tables[name]
    except KeyError:
        known = ", ".join(t.name for t in CRM_TABLES)
        raise KeyError(f"unknown table {name!r}; expected one of: {known}") from None
