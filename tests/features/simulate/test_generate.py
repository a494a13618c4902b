"""The CRM simulator: determinism, integrity, a timeline without leaks that ends at its end, and its ground truth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lifetimes import BetaGeoFitter, GammaGammaFitter
from sklearn.metrics import roc_auc_score
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from features.crm import schema
from features.crm.schema import ACTIVITY_TYPES
from features.crm.store import connect, create_schema, insert_frame, read_frame
from features.errors import InvalidInput
from features.lead_history import crm_period
from features.simulate.config import OrderValue, PurchaseProcess, SimulationConfig
from features.simulate.content import content_catalog
from features.simulate.generate import TRUTH_TABLES, generate_crm
from features.simulate.leads import simulate_leads
from features.simulate.marketing import plan_leads
from features.simulate.orders import simulate_orders
from tests.leadval_cli import last_json, run_leadval

TABLES = (*schema.CRM_TABLES, *TRUTH_TABLES)
END = pd.Timestamp("2025-12-31")
TINY = SimulationConfig(n_leads=240, n_customers=40, seed=3, chunk_leads=100, end=END)
AFTERNOON = datetime(2025, 6, 18, 14, 37, 12)
"""An end that is not a midnight: the CRM's last day is cut short there."""


def crm(url: str) -> dict[str, pd.DataFrame]:
    """Every CRM and truth table, rows in key order."""
    engine = connect(url)
    frames = {}
    for table in TABLES:
        key = [c.name for c in table.primary_key.columns]
        frames[table.name] = read_frame(engine, table).sort_values(key).reset_index(drop=True)
    engine.dispose()
    return frames


def assert_same_crm(left: dict[str, pd.DataFrame], right: dict[str, pd.DataFrame]) -> None:
    for name in left:
        pd.testing.assert_frame_equal(left[name], right[name], check_exact=True, obj=name)


def generate(url: str, config: SimulationConfig, replace: bool = False) -> dict[str, int]:
    engine = connect(url)
    create_schema(engine)
    try:
        return generate_crm(engine, config, replace=replace)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def demo_crm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    """A 2,400-lead CRM written in three chunks, read back whole."""
    url = f"sqlite:///{tmp_path_factory.mktemp('crm') / 'crm.db'}"
    finished: list[int] = []
    engine = connect(url)
    create_schema(engine)
    counts = generate_crm(engine, SimulationConfig(n_leads=2_400, n_customers=400, seed=11, chunk_leads=800,
                                                   end=END), progress=finished.append)
    assert finished == [800, 800, 800]
    frames = crm(url)
    assert counts == {name: len(frames[name]) for name in counts}
    return frames


@pytest.fixture(scope="module")
def tiny_crm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    """The TINY CRM as written to a fresh SQLite file (three chunks), read back whole."""
    url = f"sqlite:///{tmp_path_factory.mktemp('tiny') / 'crm.db'}"
    generate(url, TINY)
    return crm(url)


def test_same_seed_same_crm_and_another_seed_another(tiny_crm: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    again, other = (f"sqlite:///{tmp_path / name}" for name in ("again.db", "other.db"))
    generate(again, TINY)
    generate(other, SimulationConfig(n_leads=240, n_customers=40, seed=4, chunk_leads=100, end=END))
    assert_same_crm(crm(again), tiny_crm)
    different = crm(other)
    assert not different["leads"].equals(tiny_crm["leads"])
    assert not different["orders"].equals(tiny_crm["orders"])


def test_postgresql_gets_the_same_crm_as_sqlite(tiny_crm: dict[str, pd.DataFrame], pg_url: str) -> None:
    counts = generate(pg_url, TINY)
    assert counts == {name: len(tiny_crm[name]) for name in counts}
    assert_same_crm(crm(pg_url), tiny_crm)


def test_a_non_empty_crm_needs_replace_and_replace_starts_afresh(
    tiny_crm: dict[str, pd.DataFrame], db_url: str
) -> None:
    generate(db_url, SimulationConfig(n_leads=120, n_customers=20, seed=9, end=END))
    engine = connect(db_url)
    with engine.begin() as conn:
        insert_frame(conn, schema.scoring_runs, pd.DataFrame([{
            "scoring_run_id": "R1", "job": "leads", "model_name": "lead-scoring", "as_of": END,
            "started_at": END, "status": "succeeded", "rows_scored": 0}]))
    before = crm(db_url)
    with pytest.raises(InvalidInput, match=r"not empty .*leads: 120 rows.*--replace"):
        generate(db_url, TINY)
    assert_same_crm(crm(db_url), before)

    generate(db_url, TINY, replace=True)
    assert_same_crm(crm(db_url), tiny_crm)
    assert read_frame(engine, schema.scoring_runs).empty
    engine.dispose()


def test_an_interrupted_load_keeps_indexes_and_foreign_keys(db_url: str) -> None:
    engine = connect(db_url)
    create_schema(engine)

    def interrupt(_: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_crm(engine, TINY, progress=interrupt)
    assert len(read_frame(engine, schema.leads)) == TINY.chunk_leads
    inspector = inspect(engine)
    for table in (schema.leads, schema.activities, schema.customers, schema.orders):
        assert {i.name for i in table.indexes} <= {i["name"] for i in inspector.get_indexes(table.name)}
    assert inspector.get_foreign_keys("activities")
    orphan = pd.DataFrame([{"activity_id": "A-orphan", "lead_id": "L-unknown", "occurred_at": END,
                            "activity_type": "web_session"}])
    with pytest.raises(IntegrityError), engine.begin() as conn:
        insert_frame(conn, schema.activities, orphan)
    engine.dispose()


def test_rows_refer_to_each_other_and_respect_the_timeline(demo_crm: dict[str, pd.DataFrame]) -> None:
    leads, activities, customers, orders = (demo_crm[t] for t in ("leads", "activities", "customers", "orders"))
    start = pd.Timestamp("2024-01-01")
    assert leads["created_at"].between(start, END, inclusive="left").all()
    timeline = activities.merge(leads[["lead_id", "created_at", "converted_at"]], on="lead_id", how="left")
    assert timeline["created_at"].notna().all()
    assert (timeline["occurred_at"] >= timeline["created_at"]).all()
    assert (timeline["occurred_at"] < END).all()
    won = timeline[timeline["converted_at"].notna()]
    assert (won["occurred_at"] > won["converted_at"]).mean() < 0.15
    assert set(activities["activity_type"]) == set(ACTIVITY_TYPES)
    assert (activities["duration_seconds"].dropna() >= 0).all()

    converted = leads[leads["converted_at"].notna()]
    assert (converted["converted_at"] > converted["created_at"]).all()
    assert (converted["converted_at"] < END).all()
    assert leads["customer_id"].notna().equals(leads["converted_at"].notna())
    from_leads = customers[customers["lead_id"].notna()].merge(leads, on="lead_id", suffixes=("", "_lead"))
    assert len(from_leads) == len(converted)
    assert (from_leads["customer_id"] == from_leads["customer_id_lead"]).all()
    assert (from_leads["created_at"] == from_leads["converted_at"]).all()
    assert (from_leads["acquisition_channel"] == from_leads["source_channel"]).all()
    assert customers["lead_id"].isna().sum() == 400

    assert set(orders["customer_id"]) == set(customers["customer_id"])
    assert (orders["amount"] >= 0).all()
    firsts = orders.groupby("customer_id")["ordered_at"].min()
    assert (firsts.reindex(customers["customer_id"]).to_numpy() == customers["created_at"].to_numpy()).all()
    assert (orders["ordered_at"] < END).all()


def test_conversion_follows_the_true_function(demo_crm: dict[str, pd.DataFrame]) -> None:
    leads, activities, truth = demo_crm["leads"], demo_crm["activities"], demo_crm["truth_leads"]
    converted = leads.set_index("lead_id")["converted_at"].notna()
    assert 0.05 <= converted.mean() <= 0.15

    def rate(mask: pd.Series) -> float:
        return converted[mask].mean()

    demo = converted.index.isin(activities.loc[activities["activity_type"] == "demo_request", "lead_id"])
    assert rate(demo) > 3 * rate(~demo)
    profile = leads.set_index("lead_id")
    senior = profile["job_seniority"].isin(["director", "vp", "c_level"])
    assert rate(senior) > 2 * rate(profile["job_seniority"] == "individual")
    assert rate(profile["email_domain_type"] == "business") > 2 * rate(profile["email_domain_type"] == "free")
    assert rate(profile["source_channel"] == "referral") > rate(profile["source_channel"] == "paid_social")

    truth = truth.set_index("lead_id").loc[converted.index]
    assert truth["converted"].equals(converted.rename("converted"))
    assert roc_auc_score(truth["converted"], truth["conversion_probability"]) > 0.85
    won = truth[truth["converted"]]
    assert (won["trigger_occurred_at"] < won["converted_at"]).all()
    assert set(won["trigger_activity_type"]) <= {"demo_request", "webinar_attend", "pricing_page_view",
                                                 "form_submit", "content_download", "email_click"}


def test_marketing_spend_matches_the_leads_it_brings(demo_crm: dict[str, pd.DataFrame]) -> None:
    spend, leads = demo_crm["marketing_spend"], demo_crm["leads"]
    params = demo_crm["truth_parameters"].set_index("name")["value"]
    assert (spend[["spend", "impressions", "clicks"]] >= 0).all().all()
    assert (spend["clicks"] <= spend["impressions"]).all()
    assert "direct" not in set(spend["channel"])
    assert set(spend.loc[spend["channel"] == "organic_search", "campaign"]) == {""}
    brought = leads.groupby("source_channel").size()
    cost = spend.groupby("channel")["spend"].sum()
    for channel, total in cost.items():
        per_lead = total / brought[channel]
        assert per_lead == pytest.approx(params[f"cost_per_lead_{channel}"], rel=0.3), channel
    by_campaign = leads.dropna(subset=["campaign"]).groupby("campaign").size()
    assert set(by_campaign.index) == set(spend["campaign"]) - {""}


def test_truth_tables_describe_every_lead_and_customer(demo_crm: dict[str, pd.DataFrame]) -> None:
    assert demo_crm["truth_leads"]["lead_id"].equals(demo_crm["leads"]["lead_id"])
    truth = demo_crm["truth_customers"]
    assert truth["customer_id"].equals(demo_crm["customers"]["customer_id"])
    repeats = demo_crm["orders"].groupby("customer_id").size().reindex(truth["customer_id"]) - 1
    assert (repeats.to_numpy() == truth["repeat_purchases"].to_numpy()).all()
    assert truth["dropout_at"].isna().equals(truth["alive_at_end"])
    names = set(demo_crm["truth_parameters"]["name"])
    assert {"gg_p", "gg_q", "gg_v", "bgnbd_r_referral", "bgnbd_alpha_referral", "bgnbd_a_referral",
            "bgnbd_b_referral", "conversion_intercept", "conversion_activity_demo_request"} <= names


def test_bgnbd_process_recovers_its_parameters() -> None:
    truth = PurchaseProcess(r=0.9, alpha=60.0, a=0.9, b=4.0)
    rng = np.random.default_rng(20240101)
    horizon = rng.integers(30, 731, 30_000).astype(float)
    orders, _ = simulate_orders(horizon, truth, OrderValue(), rng)
    day = np.floor(orders["day"])
    per_customer = orders.assign(day=day).groupby("customer")["day"]
    rfm = pd.DataFrame({"frequency": per_customer.nunique() - 1, "recency": per_customer.max(), "T": horizon})
    rows = rfm.value_counts().rename("weight").reset_index()
    fitted = BetaGeoFitter().fit(rows["frequency"], rows["recency"], rows["T"], weights=rows["weight"]).params_
    for name in ("r", "alpha", "a", "b"):
        assert fitted[name] == pytest.approx(getattr(truth, name), rel=0.10), name


def test_order_values_recover_gamma_gamma_parameters() -> None:
    truth = OrderValue(p=6.0, q=3.8, v=150.0)
    rng = np.random.default_rng(7)
    orders, _ = simulate_orders(rng.integers(30, 731, 30_000).astype(float), PurchaseProcess(0.9, 60.0, 0.9, 4.0),
                                truth, rng)
    repeat = orders[orders["day"] > 0].groupby("customer")["amount"]
    fitted = GammaGammaFitter().fit(repeat.size(), repeat.mean()).params_
    for name in ("p", "q", "v"):
        assert fitted[name] == pytest.approx(getattr(truth, name), rel=0.10), name


@settings(max_examples=40, deadline=None)
@given(
    r=st.floats(0.2, 3.0), alpha=st.floats(5.0, 200.0), a=st.floats(0.2, 3.0), b=st.floats(0.5, 8.0),
    horizon=st.lists(st.floats(0.0, 800.0), min_size=1, max_size=60), seed=st.integers(0, 2**32 - 1),
)
def test_simulated_orders_keep_the_bgnbd_invariants(r, alpha, a, b, horizon, seed) -> None:
    observation = np.array(horizon)
    orders, customers = simulate_orders(observation, PurchaseProcess(r, alpha, a, b), OrderValue(),
                                        np.random.default_rng(seed))
    first = orders.groupby("customer")["day"].min()
    assert (first == 0).all() and len(first) == len(observation)
    assert (orders["day"] < np.maximum(observation[orders["customer"]], 1e-12)).all()
    assert orders.equals(orders.sort_values(["customer", "day"], kind="stable"))
    assert (orders.groupby("customer").size() - 1).tolist() == customers["repeat_purchases"].tolist()
    assert customers["dropout_day"].isna().equals(customers["alive_at_end"])
    dead = customers[~customers["alive_at_end"]]
    assert (dead["dropout_day"] < observation[dead.index]).all()
    assert (dead["repeat_purchases"] >= 1).all()
    assert (orders["amount"] >= 0).all()


@settings(max_examples=15, deadline=None)
@given(n_leads=st.integers(1, 80), seed=st.integers(0, 2**32 - 1), first=st.integers(0, 40),
       end=st.datetimes(datetime(2020, 1, 1), datetime(2030, 1, 1)))
def test_simulated_leads_never_act_outside_their_life(n_leads: int, seed: int, first: int, end: datetime) -> None:
    config = SimulationConfig(n_leads=first + n_leads, n_customers=0, seed=seed, days=120, end=end)
    rng = np.random.default_rng(seed)
    batch = simulate_leads(config, plan_leads(config, rng), content_catalog(config), first, first + n_leads, 7, rng)
    leads, activities = batch.leads, batch.activities
    assert leads["lead_id"].is_unique and len(leads) == n_leads
    assert activities["activity_id"].tolist() == [f"A{k:010d}" for k in range(8, 8 + len(activities))]
    joined = activities.merge(leads, on="lead_id")
    start = pd.Timestamp(end.date()) - pd.Timedelta(days=120)
    assert (leads["created_at"] >= start).all() and (leads["created_at"] < end).all()
    assert (joined["occurred_at"] >= joined["created_at"]).all() and (joined["occurred_at"] < end).all()
    converted = leads["converted_at"].notna()
    assert (leads.loc[converted, "converted_at"] > leads.loc[converted, "created_at"]).all()
    assert (leads.loc[converted, "converted_at"] < end).all()
    assert leads["customer_id"].notna().equals(converted)
    assert batch.truth["converted"].equals(converted.rename("converted"))
    assert batch.truth["conversion_probability"].between(0, 1).all()


def test_configuration_errors_name_the_field() -> None:
    with pytest.raises(InvalidInput, match="days"):
        SimulationConfig(days=0)
    with pytest.raises(InvalidInput, match="n_leads"):
        SimulationConfig(n_leads=-1)
    with pytest.raises(InvalidInput, match="end must be a date or datetime"):
        SimulationConfig(end="2025-12-31")


def test_the_timeline_ends_at_end_which_defaults_to_now() -> None:
    before = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    config = SimulationConfig()
    assert before <= config.end <= datetime.now(UTC).replace(tzinfo=None) and config.end.microsecond == 0
    at_midnight = SimulationConfig(end=END)
    assert (at_midnight.starts_at, at_midnight.timeline_days, at_midnight.last_day_fraction) == (
        datetime(2024, 1, 1), 730, 1.0)
    afternoon = SimulationConfig(end=AFTERNOON)
    assert afternoon.starts_at == datetime(2023, 6, 19) and afternoon.timeline_days == 731
    assert afternoon.last_day_fraction == pytest.approx((14 * 3600 + 37 * 60 + 12) / 86_400)
    aware = SimulationConfig(end=datetime(2025, 6, 18, 16, 37, 12, tzinfo=timezone(timedelta(hours=2))))
    assert aware.end == AFTERNOON


@pytest.fixture(scope="module")
def afternoon_crm(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, pd.DataFrame]]:
    """A CRM that ends at AFTERNOON, and its tables."""
    url = f"sqlite:///{tmp_path_factory.mktemp('afternoon') / 'crm.db'}"
    generate(url, SimulationConfig(n_leads=1_500, n_customers=200, seed=21, chunk_leads=600, end=AFTERNOON))
    return url, crm(url)


def test_a_crm_ends_just_before_its_end(afternoon_crm: tuple[str, dict[str, pd.DataFrame]]) -> None:
    url, tables = afternoon_crm
    stamps = {"leads": ["created_at", "converted_at"], "activities": ["occurred_at"], "customers": ["created_at"],
              "orders": ["ordered_at"], "truth_leads": ["trigger_occurred_at"], "truth_customers": ["dropout_at"]}
    for table, columns in stamps.items():
        for column in columns:
            assert (tables[table][column].dropna() < AFTERNOON).all(), f"{table}.{column}"
    assert tables["marketing_spend"]["date"].max() == AFTERNOON.date()
    engine = connect(url)
    start, end = crm_period(engine)
    engine.dispose()
    assert AFTERNOON - timedelta(hours=1) < end < AFTERNOON
    assert start >= pd.Timestamp("2023-06-19") and start.date() <= datetime(2023, 6, 25).date()
    latest_day = tables["leads"][tables["leads"]["created_at"] >= pd.Timestamp(AFTERNOON.date())]
    assert len(latest_day) > 0, "leads arrive on the end's day too, up to the end"
    params = tables["truth_parameters"].set_index("name")["value"]
    assert params["simulation_end"] == pytest.approx((AFTERNOON - datetime(1970, 1, 1)).total_seconds() / 86_400)


def test_same_seed_and_end_give_the_same_crm(afternoon_crm: tuple[str, dict[str, pd.DataFrame]],
                                             tmp_path: Path) -> None:
    _, first = afternoon_crm
    again = f"sqlite:///{tmp_path / 'again.db'}"
    generate(again, SimulationConfig(n_leads=1_500, n_customers=200, seed=21, chunk_leads=600, end=AFTERNOON))
    assert_same_crm(crm(again), first)
    later = f"sqlite:///{tmp_path / 'later.db'}"
    generate(later, SimulationConfig(n_leads=1_500, n_customers=200, seed=21, chunk_leads=600,
                                     end=AFTERNOON + timedelta(days=3)))
    assert crm(later)["activities"]["occurred_at"].max() > first["activities"]["occurred_at"].max()


def test_generate_command_writes_a_crm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    result = run_leadval("generate", "--db", url, "--leads", "300", "--customers", "50", "--seed", "1",
                         "--end", "2025-12-31T00:00:00", "--json", check=False)
    assert result.returncode == 0, result.stderr
    out = last_json(result)
    rows = out["rows"]
    assert rows["leads"] == 300
    assert rows["customers"] >= 50 and rows["activities"] > 300 * 10 and rows["orders"] >= rows["customers"]
    assert rows == {name: len(frame) for name, frame in crm(url).items() if name in rows}
    assert (out["start"], out["end"]) == ("2024-01-01T00:00:00", "2025-12-31T00:00:00")
    assert "to 2025-12-31T00:00:00 UTC (the same flags with --end 2025-12-31T00:00:00 write the same CRM)" in (
        result.stdout)
    engine = connect(url)
    assert crm_period(engine)[1].date().isoformat() == "2025-12-30"
    engine.dispose()

    steady_url = f"sqlite:///{tmp_path / 'steady.db'}"
    steady = run_leadval("generate", "--db", steady_url, "--leads", "300", "--customers", "50", "--seed", "1",
                         "--end", "2025-12-31T00:00:00", "--steady-calendar", "--json")
    assert last_json(steady)["steady_calendar"] and "UTC; every campaign runs throughout (the same" in steady.stdout
    first_year = {name: set(frame.loc[frame["created_at"] < pd.Timestamp("2025-01-01"), "campaign"].dropna())
                  for name, frame in (("default", crm(url)["leads"]), ("steady", crm(steady_url)["leads"]))}
    assert "linkedin_abm" in first_year["steady"] - first_year["default"]  # launched mid-timeline by default

    offset = run_leadval("generate", "--db", f"sqlite:///{tmp_path / 'offset.db'}", "--leads", "10",
                         "--customers", "0", "--end", "2025-12-31T02:00:00+02:00", "--json")
    assert last_json(offset)["end"] == "2025-12-31T00:00:00"
    bad = run_leadval("generate", "--db", f"sqlite:///{tmp_path / 'bad.db'}", "--end", "yesterday", check=False)
    assert bad.returncode == 1 and "--end 'yesterday': not a date or time" in bad.stderr
