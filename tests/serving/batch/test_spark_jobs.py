"""The Spark engine of the nightly jobs on a real local Spark (local[2]), reading SQLite and PostgreSQL over JDBC.

Parity is exact: the Spark engine writes the same rows as the pandas engine, column for column. The tests that
start Spark are marked slow; they share the test session's Spark (``spark``, tests/serving/conftest.py).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import delete, func, select

from features.crm import schema
from features.crm.store import connect, read_frame
from features.simulate.config import SimulationConfig
from serving.batch.jobs import score_customers, score_open_leads
from serving.batch.spark_jobs import score_customers_spark, score_open_leads_spark
from serving.batch.spark_source import jdbc_options, load_spark_settings, time_slices
from tests.leadval_cli import last_json, run_leadval
from tests.serving.conftest import TrainedStore, simulated_crm
from training.tracking import use_tracking

SCORE_TABLES = (schema.lead_score_history, schema.lead_scores, schema.customer_score_history,
                schema.customer_scores, schema.scoring_runs)


def _crm(url: str) -> str:
    return simulated_crm(url, SimulationConfig(n_leads=700, n_customers=120, seed=5, end=datetime(2025, 12, 31)))


def _scores(url: str) -> dict[str, pd.DataFrame]:
    engine = connect(url)
    out = {}
    for table, key in ((schema.lead_scores, "lead_id"), (schema.customer_scores, "customer_id"),
                       (schema.lead_score_history, "lead_id"), (schema.customer_score_history, "customer_id")):
        frame = read_frame(engine, table).drop(columns=["scored_at", "history_id"], errors="ignore")
        out[table.name] = frame.sort_values(key).reset_index(drop=True)
    return out


def _clear_scores(url: str) -> None:
    with connect(url).begin() as conn:
        for table in SCORE_TABLES:
            conn.execute(delete(table))


def _count(url: str, table) -> int:
    with connect(url).connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


@pytest.mark.slow  # starts Spark
def test_spark_engine_writes_exactly_the_pandas_engine_rows(trained_store: TrainedStore, db_url: str,
                                                           spark: object) -> None:
    as_of = _crm(db_url)
    use_tracking(trained_store.tracking_uri)
    engine = connect(db_url)
    pandas_leads = score_open_leads(engine, as_of=as_of, chunk_size=250)
    score_customers(engine, as_of=as_of)
    expected = _scores(db_url)
    _clear_scores(db_url)

    settings = load_spark_settings(master="local[2]")
    spark_leads = score_open_leads_spark(engine, db_url, spark, settings, as_of=as_of, chunk_size=250)
    spark_customers = score_customers_spark(engine, db_url, spark, settings, as_of=as_of)
    got = _scores(db_url)

    assert spark_leads.scored == pandas_leads.scored == len(expected["lead_scores"]) > 300
    assert spark_leads.written == spark_leads.total == pandas_leads.written and spark_leads.already == 0
    assert spark_leads.warnings == pandas_leads.warnings == ()
    assert spark_leads.scoring_run_id == pandas_leads.scoring_run_id
    assert spark_customers.scored == len(expected["customer_scores"]) > 100
    for name, frame in expected.items():
        pd.testing.assert_frame_equal(got[name], frame, check_exact=True, obj=name)
    ledger = read_frame(engine, schema.scoring_runs)
    assert sorted(ledger["status"]) == ["succeeded", "succeeded"]
    assert (ledger["rows_scored"] == ledger["rows_total"]).all()


@pytest.mark.slow  # starts Spark
def test_spark_engine_completes_a_run_that_failed_midway(trained_store: TrainedStore, sqlite_url: str,
                                                        spark: object) -> None:
    as_of = _crm(sqlite_url)
    use_tracking(trained_store.tracking_uri)
    engine = connect(sqlite_url)
    chunks: list[int] = []

    def crash_after_two_chunks(rows: int) -> None:
        chunks.append(rows)
        if len(chunks) == 3:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        score_open_leads(engine, as_of=as_of, chunk_size=100, progress=crash_after_two_chunks)
    failed = read_frame(engine, schema.scoring_runs).iloc[0]
    assert failed["status"] == "failed" and failed["rows_scored"] == 200 < failed["rows_total"]

    written: list[int] = []
    result = score_open_leads_spark(engine, sqlite_url, spark, load_spark_settings(master="local[2]"),
                                    as_of=as_of, chunk_size=100, progress=written.append)
    assert written[0] == 200, "the resumed run starts from what the failed one wrote"
    assert sum(written) == result.total == _count(sqlite_url, schema.lead_scores)
    assert (result.already, result.written, result.scored) == (200, result.total - 200, result.total - 200)
    assert _count(sqlite_url, schema.lead_score_history) == result.total
    ledger = read_frame(engine, schema.scoring_runs)
    assert ledger["status"].tolist() == ["succeeded"] and ledger["rows_scored"].tolist() == [result.total]


@pytest.mark.slow  # starts Spark
def test_spark_engine_reads_parquet_exports(trained_store: TrainedStore, sqlite_url: str, spark: object,
                                            tmp_path: Path) -> None:
    as_of = _crm(sqlite_url)
    use_tracking(trained_store.tracking_uri)
    engine = connect(sqlite_url)
    for table in (schema.leads, schema.activities, schema.orders):
        read_frame(engine, table).to_parquet(tmp_path / f"{table.name}.parquet", index=False)
    score_open_leads(engine, as_of=as_of)
    expected = _scores(sqlite_url)["lead_scores"]
    _clear_scores(sqlite_url)

    settings = load_spark_settings(master="local[2]", parquet=tmp_path)
    score_open_leads_spark(engine, sqlite_url, spark, settings, as_of=as_of)
    pd.testing.assert_frame_equal(_scores(sqlite_url)["lead_scores"], expected, check_exact=True)

    late = pd.Timestamp(as_of) + pd.Timedelta(days=30)  # the Parquet export's last activity is the CRM's
    spark_late = score_open_leads_spark(engine, sqlite_url, spark, settings, as_of=late, dry_run=True)
    pandas_late = score_open_leads(engine, as_of=late, dry_run=True)
    assert len(spark_late.warnings) == 1 and spark_late.warnings == pandas_late.warnings
    assert "days after its last activity" in spark_late.warnings[0]


@pytest.mark.slow  # starts Spark
def test_cli_spark_dry_run_writes_nothing(trained_store: TrainedStore, sqlite_url: str, spark: object) -> None:
    """The command in this process: it finds the session's Spark running (``spark``) and stops it when done."""
    as_of = _crm(sqlite_url)
    env = {"MLFLOW_TRACKING_URI": trained_store.tracking_uri, "LEADVAL_DB": sqlite_url}
    result = run_leadval("score", "leads", "--engine", "spark", "--as-of", as_of, "--dry-run", "--json", env=env,
                         check=False)
    assert result.returncode == 0, result.stderr
    out = last_json(result)
    assert out["dry_run"] and out["scored"] == out["total"] > 300
    assert all(_count(sqlite_url, table) == 0 for table in SCORE_TABLES)


@pytest.mark.parametrize(("args", "message"), [
    (["--parquet", "."], "--parquet: need --engine spark"),
    (["--spark-master", "local[1]"], "--spark-master: need --engine spark"),
    (["--engine", "spark", "--spark-conf", "no-equals"], "--spark-conf 'no-equals': expected spark.some.key=value"),
    (["--engine", "spark", "--parquet", "/nonexistent"], "--parquet /nonexistent: expected a directory"),
])
def test_spark_flags_are_checked_before_anything_runs(trained_store: TrainedStore, sqlite_url: str,
                                                      args: list[str], message: str) -> None:
    env = {"MLFLOW_TRACKING_URI": trained_store.tracking_uri, "LEADVAL_DB": sqlite_url}
    result = run_leadval("score", "leads", *args, env=env, check=False)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr


def test_jdbc_options_follow_the_database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sqlite = jdbc_options(f"sqlite:///{tmp_path / 'crm.db'}")
    assert sqlite == {"url": f"jdbc:sqlite:{tmp_path / 'crm.db'}", "driver": "org.sqlite.JDBC"}
    pg = jdbc_options("postgresql+psycopg://crm:s3cret@db.internal:6543/sales?options=-csearch_path%3Dlv_1")
    assert pg == {"url": "jdbc:postgresql://db.internal:6543/sales?currentSchema=lv_1",
                  "driver": "org.postgresql.Driver", "user": "crm", "password": "s3cret"}
    with pytest.raises(Exception, match="SQLite or PostgreSQL over JDBC, not mysql"):
        jdbc_options("mysql://root@127.0.0.1/test")
    monkeypatch.setenv("LEADVAL_SPARK_MASTER", "spark://cluster:7077")
    assert load_spark_settings().master == "spark://cluster:7077"
    assert load_spark_settings(master="local[1]").master == "local[1]"


def test_time_slices_cover_the_range_once() -> None:
    first, last = datetime(2024, 1, 1), datetime(2024, 1, 5)
    slices = time_slices(first, last, 4, "occurred_at")
    assert slices == ["occurred_at < '2024-01-02 00:00:00'",
                      "occurred_at >= '2024-01-02 00:00:00' AND occurred_at < '2024-01-03 00:00:00'",
                      "occurred_at >= '2024-01-03 00:00:00' AND occurred_at < '2024-01-04 00:00:00'",
                      "occurred_at >= '2024-01-04 00:00:00'"]
    assert time_slices(first, first, 3, "t") == ["t < '2024-01-01 00:00:00'",
                                                  "t >= '2024-01-01 00:00:00' AND t < '2024-01-01 00:00:00'",
                                                  "t >= '2024-01-01 00:00:00'"]
    assert time_slices(first, last, 1, "t") == ["1=1"]
