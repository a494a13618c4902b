"""The CRM schema and store on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import inspect, select, text

from features.crm import schema
from features.crm.store import (
    connect,
    create_schema,
    insert_frame,
    missing_tables,
    read_frame,
    safe_url,
    upsert_frame,
)
from features.errors import DatabaseUnavailable


def _lead(lead_id: str, channel: str = "paid_search") -> dict:
    return {
        "lead_id": lead_id,
        "created_at": pd.Timestamp("2025-01-02 03:04:05"),
        "source_channel": channel,
        "campaign": "spring",
        "country": "DE",
        "industry": "software",
        "company_size": "51-200",
        "job_seniority": "manager",
        "email_domain_type": "business",
        "converted_at": pd.NaT,
        "customer_id": None,
    }


def test_schema_creation_is_idempotent(db_url: str) -> None:
    engine = connect(db_url)
    assert set(missing_tables(engine)) == set(schema.metadata.tables)
    create_schema(engine)
    create_schema(engine)
    assert missing_tables(engine) == []
    columns = {c["name"] for c in inspect(engine).get_columns("lead_scores")}
    assert {"lead_id", "score", "probability", "band", "reasons", "expected_value", "model_name",
            "model_version", "run_id", "scored_at"} <= columns


def test_round_trip_keeps_types_and_nulls(db_url: str) -> None:
    engine = connect(db_url)
    create_schema(engine)
    frame = pd.DataFrame([_lead("L1"), _lead("L2", "organic")])
    with engine.begin() as conn:
        assert insert_frame(conn, schema.leads, frame) == 2
    back = read_frame(engine, schema.leads).sort_values("lead_id").reset_index(drop=True)
    assert back["created_at"].tolist() == [pd.Timestamp("2025-01-02 03:04:05")] * 2
    assert back["converted_at"].isna().all()
    assert back["customer_id"].isna().all()
    assert back["source_channel"].tolist() == ["paid_search", "organic"]


def test_upsert_replaces_instead_of_duplicating(db_url: str) -> None:
    engine = connect(db_url)
    create_schema(engine)
    with engine.begin() as conn:
        upsert_frame(conn, schema.leads, pd.DataFrame([_lead("L1")]))
        upsert_frame(conn, schema.leads, pd.DataFrame([_lead("L1", "referral"), _lead("L2")]))
    back = read_frame(engine, schema.leads).sort_values("lead_id")
    assert back["lead_id"].tolist() == ["L1", "L2"]
    assert back["source_channel"].tolist() == ["referral", "paid_search"]


def test_database_constraints_reject_bad_rows(db_url: str) -> None:
    engine = connect(db_url)
    create_schema(engine)
    with engine.begin() as conn:
        insert_frame(conn, schema.leads, pd.DataFrame([_lead("L1")]))
    bad = pd.DataFrame([{"activity_id": "A1", "lead_id": "L1", "occurred_at": pd.Timestamp("2025-01-03"),
                         "activity_type": "teleport"}])
    with pytest.raises(Exception), engine.begin() as conn:
        insert_frame(conn, schema.activities, bad)
    orphan = pd.DataFrame([{"activity_id": "A2", "lead_id": "nobody", "occurred_at": pd.Timestamp("2025-01-03"),
                            "activity_type": "page_view"}])
    with pytest.raises(Exception), engine.begin() as conn:
        insert_frame(conn, schema.activities, orphan)
    with engine.connect() as conn:
        assert conn.execute(select(schema.activities.c.activity_id)).all() == []


def test_unreachable_database_is_a_clear_error_without_password() -> None:
    url = "postgresql+psycopg://someone:s3cret@127.0.0.1:1/nowhere"
    with pytest.raises(DatabaseUnavailable) as info:
        connect(url)
    assert "s3cret" not in str(info.value)
    assert "127.0.0.1:1" in str(info.value)
    assert "s3cret" not in safe_url(url)



@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql+psycopg://pg:s3cret@db.example:5432/crm", "postgresql+psycopg://pg:***@db.example:5432/crm"),
    ("postgresql+psycopg:/pg:s3cret@db.example/crm", "postgresql+psycopg:/pg:***@db.example/crm"),  # one slash
    ("postgresql+psycopg//pg:s3cret@db.example/crm", "postgresql+psycopg//pg:***@db.example/crm"),  # no colon
    ("postgresql+psycopg:pg:s3cret@db.example/crm", "postgresql+psycopg:***@db.example/crm"),  # no slashes
    ("postgresql+psycopg://pg:s3c@ret@db.example/crm", "postgresql+psycopg://pg:***@db.example/crm"),  # unencoded @
    ("postgresql+psycopg://pg:s3c@r/et@db.example/crm", "postgresql+psycopg://pg:***@db.example/crm"),
    ("postgresql+psycopg:/pg:s3c%40ret@db.example/crm", "postgresql+psycopg:/pg:***@db.example/crm"),
    ("postgresql+psycopg://pg:s3c%ZZret@db.example/crm", "postgresql+psycopg://pg:***@db.example/crm"),
    ("foodb://pg:s3cret@db.example/crm", "foodb://pg:***@db.example/crm"),  # parses; no such driver
    ("postgresql+psycopg://pg:s3cret@db.example:port/crm", "postgresql+psycopg://pg:***@db.example:port/crm"),
    ("postgresql+psycopg://pg:s3cret", "postgresql+psycopg://pg:***"),  # no @host: the password parses as a port
    ("postgresql+psycopg://pg@db.example/crm?password=s3cret&sslmode=require",
     "postgresql+psycopg://pg@db.example/crm?password=***&sslmode=require"),
    ("sqlite:///data/crm.db", "sqlite:///data/crm.db"),
    ("sqlite:///data/a@b/c@d.db", "sqlite:///data/a@b/c@d.db"),  # two @ but no credentials
    ("postgresql:/db.example:5432/crm", "postgresql:/db.example:5432/crm"),  # unparseable, but nothing secret
])
def test_safe_url_masks_the_password_whether_the_url_parses_or_not(url: str, shown: str) -> None:
    assert safe_url(url) == shown


@pytest.mark.parametrize("url", ["postgresql+psycopg:/pg:s3cret@127.0.0.1:1/crm",
                                 "postgresql+psycopg://pg:s3cret@127.0.0.1:port/crm"])
def test_an_unparseable_url_is_named_masked(url: str) -> None:
    with pytest.raises(DatabaseUnavailable, match=r"cannot parse database URL '[^']*pg:\*\*\*@") as info:
        connect(url)
    assert "s3cret" not in str(info.value)


def test_an_unencoded_at_sign_is_refused_before_connecting() -> None:
    """Taken as is, ``s3c@ret@host`` would send ``ret@host`` to DNS and into the driver's message."""
    with pytest.raises(DatabaseUnavailable, match="holds more than one '@'; write an '@' in the user name, "
                                                  "password or query as %40") as info:
        connect("postgresql+psycopg://pg:s3c@ret@127.0.0.1:1/crm")
    assert "s3c" not in str(info.value) and "ret@" not in str(info.value)

def test_every_column_is_documented_in_readme() -> None:
    from tests.conftest import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    for table in schema.metadata.tables.values():
        for column in table.columns:
            assert column.info.get("doc"), f"{table.name}.{column.name} has no doc"
            assert f"`{column.name}`" in readme, f"README does not document {table.name}.{column.name}"


def test_connect_without_create_refuses_a_missing_sqlite_file_and_creates_nothing(tmp_path) -> None:
    from features.crm.store import connect

    url = f"sqlite:///{tmp_path / 'typo' / 'crm.db'}"
    with pytest.raises(DatabaseUnavailable) as caught:
        connect(url, create=False)
    assert str(caught.value) == (f"no CRM database at {tmp_path / 'typo' / 'crm.db'} ({url}); create it with "
                                 "leadval generate or leadval import")
    assert list(tmp_path.iterdir()) == []
    connect(url).dispose()  # the writing commands create it, folder and all
    connect(url, create=False).dispose()
    assert (tmp_path / "typo" / "crm.db").exists()


def test_read_only_and_locked_sqlite_messages_name_the_file(tmp_path) -> None:
    from pathlib import Path

    from features.crm.store import sqlite_file_problem
    from features.crm.urls import sqlite_file

    path = Path("data/crm.db")
    assert sqlite_file("sqlite:///data/crm.db") == path
    assert sqlite_file("sqlite:///file:data/crm.db?mode=ro&uri=true") == path
    assert sqlite_file("sqlite://") is None and sqlite_file("postgresql+psycopg://u:p@h/db") is None
    readonly = sqlite_file_problem("attempt to write a readonly database", path, "sqlite:///data/crm.db")
    assert readonly.startswith("cannot write to the SQLite database data/crm.db (sqlite:///data/crm.db): it is "
                               "read-only")
    assert "another process holds it locked" in sqlite_file_problem("database is locked", path, "sqlite:///x")
    assert sqlite_file_problem("no such table: leads", path, "sqlite:///x") is None


def test_create_schema_adds_the_columns_a_newer_leadval_added(db_url: str) -> None:
    """A CRM created before ``scoring_runs.as_of_source`` existed gets the column, its rows kept."""
    engine = connect(db_url)
    create_schema(engine)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE scoring_runs DROP COLUMN as_of_source"))
        conn.execute(text("INSERT INTO scoring_runs (scoring_run_id, job, model_name, as_of, started_at, status, "
                          "rows_scored) VALUES ('leads-1', 'leads', 'm', '2025-01-01', '2025-01-01', 'succeeded', 0)"))
    create_schema(engine)
    create_schema(engine)  # idempotent
    assert "as_of_source" in {c["name"] for c in inspect(engine).get_columns("scoring_runs")}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT scoring_run_id, as_of_source FROM scoring_runs")).all() == [("leads-1", None)]
