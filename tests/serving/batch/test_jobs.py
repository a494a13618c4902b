"""The nightly write-back jobs end to end: real CRM, real MLflow registry, the `leadval` command.

The commands run in this process (:func:`tests.leadval_cli.run_leadval`, the console script's own entry point)
on the session's champions (``trained_store``); the kill -9 test runs a real `leadval` process, as only a
process can be killed midway.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select

from features.crm import schema
from features.crm.store import connect, read_frame
from features.lead_history import crm_period, load_crm_frames
from serving.batch.jobs import STALE_AFTER_DAYS, score_lead_chunk
from tests.leadval_cli import LEADVAL, last_json, run_leadval
from tests.serving.batch.conftest import batch_crm
from training.clv.predict import CLVParameters
from training.registry import load_registered
from training.tracking import use_tracking


def _count(url: str, table) -> int:
    engine = connect(url)
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_scores_every_open_lead_and_customer_idempotently(registry: dict[str, str], db_url: str) -> None:
    as_of = batch_crm(db_url)
    env = registry | {"LEADVAL_DB": db_url}
    first = last_json(run_leadval("score", "leads", "--as-of", as_of, "--chunk-size", "300", "--json", env=env))
    engine = connect(db_url)
    open_ids = load_crm_frames(engine, as_of, open_only=True).leads["lead_id"]
    scores = read_frame(engine, schema.lead_scores)
    assert first["scored"] == len(open_ids) == len(scores) and set(scores["lead_id"]) == set(open_ids)
    assert scores["score"].between(0, 100).all() and scores["band"].isin(list("ABCD")).all()
    assert scores["expected_value"].notna().all() and (scores["expected_value"] >= 0).all()
    assert all(set(json.loads(r) if isinstance(r, str) else r) == {"up", "down"} for r in scores["reasons"])

    assert (first["written"], first["already"], first["already_finished_at"]) == (len(open_ids), 0, None)
    ledger = read_frame(engine, schema.scoring_runs)

    rerun_result = run_leadval("score", "leads", "--as-of", as_of, "--json", env=env)
    again = last_json(rerun_result)
    assert again["run_id"] == first["run_id"]
    assert (again["scored"], again["written"], again["already"], again["total"]) == (0, 0, len(open_ids),
                                                                                     len(open_ids))
    finished = ledger["finished_at"].iloc[0]
    assert again["already_finished_at"] == finished.isoformat()
    assert (f"{len(open_ids):,} leads as of {as_of} 00:00 already scored by run {first['run_id']} at "
            f"{finished:%Y-%m-%d %H:%M:%S} UTC") in rerun_result.stdout
    assert "nothing written" in rerun_result.stdout and "Scored" not in rerun_result.stdout
    rerun = read_frame(engine, schema.lead_scores)
    pd.testing.assert_frame_equal(scores.sort_values("lead_id").reset_index(drop=True),
                                  rerun.sort_values("lead_id").reset_index(drop=True))
    assert _count(db_url, schema.lead_score_history) == len(open_ids)
    pd.testing.assert_frame_equal(read_frame(engine, schema.scoring_runs), ledger)  # the ledger row untouched

    customers = last_json(run_leadval("score", "customers", "--as-of", as_of, "--json", env=env))
    clv = read_frame(engine, schema.customer_scores)
    assert customers["scored"] == len(clv) == _count(db_url, schema.customers)
    assert clv["p_alive"].between(0, 1).all() and (clv["clv"] >= 0).all()
    ledger = read_frame(engine, schema.scoring_runs)
    assert sorted(ledger["status"]) == ["succeeded", "succeeded"]


def test_batch_scores_equal_in_process_scores(registry: dict[str, str], sqlite_url: str) -> None:
    as_of = batch_crm(sqlite_url)
    run_leadval("score", "leads", "--as-of", as_of, env=registry | {"LEADVAL_DB": sqlite_url})
    use_tracking(registry["MLFLOW_TRACKING_URI"])
    model = load_registered("models:/lead-scoring@champion")
    clv: CLVParameters = load_registered("models:/clv@champion").unwrap_python_model().params
    frames = load_crm_frames(connect(sqlite_url), as_of, open_only=True)
    expected = score_lead_chunk(model, clv, frames.leads, frames.activities, pd.Timestamp(as_of).to_pydatetime())
    written = read_frame(connect(sqlite_url), schema.lead_scores).set_index("lead_id").loc[expected["lead_id"]]
    assert written["score"].tolist() == expected["score"].tolist()
    assert written["probability"].tolist() == expected["probability"].tolist()
    assert written["expected_value"].tolist() == expected["expected_value"].tolist()


@pytest.mark.slow  # a real `leadval` process, killed midway
def test_killed_run_is_completed_by_the_next(registry: dict[str, str], sqlite_url: str) -> None:
    as_of = batch_crm(sqlite_url)
    env = registry | {"LEADVAL_DB": sqlite_url}
    proc = subprocess.Popen([LEADVAL, "score", "leads", "--as-of", as_of, "--chunk-size", "20"],
                            env=os.environ | env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    engine = connect(sqlite_url)
    deadline = time.monotonic() + 180
    written = 0
    while time.monotonic() < deadline and proc.poll() is None:
        with engine.connect() as conn:
            written = conn.execute(select(func.count()).select_from(schema.lead_score_history)).scalar_one()
        if written >= 40:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert written >= 40, "the run finished or stalled before it could be killed"
    crashed = read_frame(engine, schema.scoring_runs).iloc[0]
    assert crashed["status"] == "running" and pd.isna(crashed["finished_at"])
    assert _count(sqlite_url, schema.lead_scores) == _count(sqlite_url, schema.lead_score_history) < crashed["rows_total"]

    already = _count(sqlite_url, schema.lead_score_history)
    resumed = run_leadval("score", "leads", "--as-of", as_of, "--json", env=env)
    result = last_json(resumed)
    ledger = read_frame(engine, schema.scoring_runs)
    assert len(ledger) == 1 and ledger["status"].tolist() == ["succeeded"]
    assert _count(sqlite_url, schema.lead_scores) == result["total"] == _count(sqlite_url, schema.lead_score_history)
    assert (result["already"], result["written"]) == (already, result["total"] - already)
    assert f"resumed: {already:,} already written by an earlier attempt" in resumed.stdout


def test_a_stale_as_of_is_scored_with_a_warning(registry: dict[str, str], sqlite_url: str) -> None:
    as_of = batch_crm(sqlite_url)
    env = registry | {"LEADVAL_DB": sqlite_url}
    engine = connect(sqlite_url)
    last_activity = crm_period(engine)[1]
    last_order = read_frame(engine, schema.orders)["ordered_at"].max()
    fresh = run_leadval("score", "leads", "--as-of", as_of, "--dry-run", "--json", env=env)
    assert last_json(fresh)["warnings"] == [] and "warning" not in fresh.stderr

    late = last_activity + timedelta(days=STALE_AFTER_DAYS + 6)
    stale = run_leadval("score", "leads", "--as-of", f"{late:%Y-%m-%d}", "--json", env=env)
    (warning,) = last_json(stale)["warnings"]
    assert warning == (f"stale CRM: the as-of ({late:%Y-%m-%d} 00:00) is {(late.normalize() - last_activity).days} "
                       f"days after its last activity ({last_activity:%Y-%m-%d %H:%M}), so every open lead is "
                       "scored as if nothing had happened since; check that the CRM is still being updated, or "
                       f"pass --as-of {last_activity:%Y-%m-%dT%H:%M:%S} to score as of its last activity")
    assert stale.stderr.count("warning: stale CRM") == 1 and f"warning: {warning}\n" in stale.stderr
    assert last_json(stale)["written"] > 0, "a stale as-of is still scored"

    customers = run_leadval("score", "customers", "--json", env=env)  # as of now: a year after this CRM's end
    (warning,) = last_json(customers)["warnings"]
    assert f"after its last order ({last_order:%Y-%m-%d %H:%M}), so every customer is valued" in warning
    assert "warning: stale CRM" in customers.stderr


def test_the_cron_line_on_a_crm_that_ends_now_scores_without_warnings(registry: dict[str, str],
                                                                      sqlite_url: str) -> None:
    """The README's cron line (no --as-of) on a CRM written now, as `leadval demo` writes it."""
    batch_crm(sqlite_url, end=datetime.now(UTC).replace(tzinfo=None, microsecond=0) - timedelta(hours=1))
    env = registry | {"LEADVAL_DB": sqlite_url}
    for job in ("leads", "customers"):
        result = run_leadval("score", job, "--json", env=env)
        out = last_json(result)
        assert out["warnings"] == [] and "warning" not in result.stderr, result.stderr
        assert out["written"] == out["scored"] == out["total"] > 0


def test_dry_run_writes_nothing(registry: dict[str, str], sqlite_url: str) -> None:
    as_of = batch_crm(sqlite_url)
    out = last_json(run_leadval("score", "leads", "--as-of", as_of, "--dry-run", "--json",
                                env=registry | {"LEADVAL_DB": sqlite_url}))
    assert out["dry_run"] and out["scored"] > 0
    assert _count(sqlite_url, schema.lead_scores) == 0 == _count(sqlite_url, schema.scoring_runs)


def test_missing_model_or_database_is_a_clear_error_and_writes_nothing(registry: dict[str, str],
                                                                       sqlite_url: str) -> None:
    as_of = batch_crm(sqlite_url)
    env = registry | {"LEADVAL_DB": sqlite_url}
    bad_model = run_leadval("score", "leads", "--as-of", as_of, "--model", "models:/nope@champion", env=env,
                            check=False)
    assert bad_model.returncode == 1 and "models:/nope@champion" in bad_model.stderr
    assert "Traceback" not in bad_model.stderr
    assert _count(sqlite_url, schema.lead_scores) == 0 == _count(sqlite_url, schema.scoring_runs)
    no_db = run_leadval("score", "customers", "--db", "postgresql+psycopg://x@127.0.0.1:1/none", env=env,
                        check=False)
    assert no_db.returncode == 1 and no_db.stderr.startswith("error: cannot reach database")


def test_customers_file_mode_scores_like_the_crm_job(registry: dict[str, str], sqlite_url: str,
                                                     tmp_path: Path) -> None:
    as_of = batch_crm(sqlite_url)
    env = registry | {"LEADVAL_DB": sqlite_url}
    orders = read_frame(connect(sqlite_url), schema.orders)
    orders.rename(columns={"customer_id": "client", "ordered_at": "day", "amount": "value"}).to_csv(
        tmp_path / "orders.csv", index=False)
    out = last_json(run_leadval("score", "customers", "--table", str(tmp_path / "orders.csv"), "--out",
                                str(tmp_path / "scores.parquet"), "--customer-col", "client", "--date-col", "day",
                                "--amount-col", "value", "--as-of", as_of, "--json", env=registry))
    run_leadval("score", "customers", "--as-of", as_of, env=env)
    from_file = pd.read_parquet(tmp_path / "scores.parquet").set_index("customer_id").sort_index()
    from_crm = read_frame(connect(sqlite_url), schema.customer_scores).set_index("customer_id").sort_index()
    assert out["scored"] == len(from_file) == len(from_crm) > 100
    columns = ["expected_purchases", "p_alive", "expected_order_value", "clv", "segment", "horizon_days"]
    pd.testing.assert_frame_equal(from_file[columns], from_crm[columns], check_dtype=False)

    early = run_leadval("score", "customers", "--table", str(tmp_path / "orders.csv"), "--out",
                        str(tmp_path / "x.csv"), "--customer-col", "client", "--date-col", "day", "--amount-col",
                        "value", "--as-of", "2024-02-01", env=registry, check=False)
    assert early.returncode == 1 and "--as-of to score" in early.stderr
    assert "  - day: expected an order on or before the observation end" in early.stderr
    assert not (tmp_path / "x.csv").exists()
    wrong = run_leadval("score", "customers", "--table", str(tmp_path / "orders.csv"), "--out",
                        str(tmp_path / "x.txt"), env=registry, check=False)
    assert wrong.returncode == 1 and "expected a .csv or .parquet file name" in wrong.stderr
