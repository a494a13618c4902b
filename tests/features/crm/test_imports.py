"""Importing CRM exports: every class of bad row is named with its file lines and nothing is written;
good files (CSV or Parquet, mapped or not) load idempotently, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import gzip
import json
import re
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import CheckConstraint, Engine, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.schema import CreateTable

from features.crm import imports as crm_import
from features.crm import schema
from features.crm.exports import read_export
from features.crm.imports import import_file, parse_mapping
from features.crm.rows import parse_rows
from features.crm.rules import Plausibility, column_rules
from features.crm.store import connect, create_schema, insert_frame, read_frame
from features.errors import InvalidInput
from tests.leadval_cli import run_leadval

NOW = pd.Timestamp("2026-01-01 12:00:00")


def crm(url: str) -> Engine:
    """A CRM with two leads, two customers, one order, one activity and one day of spend."""
    engine = connect(url)
    create_schema(engine)
    t = pd.Timestamp("2025-01-02 03:04:05")
    with engine.begin() as conn:
        insert_frame(conn, schema.leads, pd.DataFrame({
            "lead_id": ["L1", "L2"], "created_at": [t, t], "source_channel": ["organic", "paid_search"]}))
        insert_frame(conn, schema.customers, pd.DataFrame({
            "customer_id": ["C1", "C2"], "lead_id": ["L1", None], "created_at": [t, t]}))
        insert_frame(conn, schema.orders, pd.DataFrame({
            "order_id": ["O1"], "customer_id": ["C1"], "ordered_at": [t], "amount": [10.0]}))
        insert_frame(conn, schema.activities, pd.DataFrame({
            "activity_id": ["A1"], "lead_id": ["L1"], "occurred_at": [t], "activity_type": ["page_view"]}))
        insert_frame(conn, schema.marketing_spend, pd.DataFrame({
            "date": [t.date()], "channel": ["paid_search"], "campaign": [""], "spend": [5.0], "impressions": [100],
            "clicks": [3]}))
    return engine


def snapshot(engine: Engine) -> dict[str, list[tuple]]:
    """Every row of every CRM table, comparable before and after an import."""
    with engine.connect() as conn:
        return {
            table.name: conn.execute(select(table).order_by(*table.primary_key.columns)).all()
            for table in schema.CRM_TABLES
        }


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


ORDERS = "order_id,customer_id,ordered_at,amount\n"
ACTIVITIES = "activity_id,lead_id,occurred_at,activity_type,duration_seconds\n"
SPEND = "date,channel,campaign,spend,impressions,clicks\n"

# (id, table, file text, column the message must name, lines it must name, words it must contain)
BAD_FILES = [
    ("missing-column", "orders", "order_id,customer_id,ordered_at\nO2,C1,2025-03-01\n", "amount", [],
     "required column is missing"),
    ("unknown-column", "orders", "order_id,customer_id,ordered_at,amount,notes\nO2,C1,2025-03-01,5,vip\n", "notes", [],
     "--map 'notes="),
    ("non-numeric-amount", "orders", ORDERS + "O2,C1,2025-03-01,5\nO3,C1,2025-03-01,12 EUR\n", "amount", [3],
     "a number"),
    ("non-numeric-impressions", "marketing_spend", SPEND + "2025-03-01,email,,1.5,many,3\n", "impressions", [2],
     "a whole number"),
    ("non-integer-clicks", "marketing_spend", SPEND + "2025-03-01,email,,1.5,100,3\n2025-03-02,email,,1.5,100,2.5\n",
     "clicks", [3], "a whole number"),
    ("unparseable-date", "orders", ORDERS + "O2,C1,31/01/2025,5\nO3,C1,2025-02-30,5\n", "ordered_at", [2, 3],
     "ISO 8601"),
    ("future-date", "orders", ORDERS + "O2,C1,2025-03-01,5\nO3,C1,2999-01-01T00:00:00Z,5\n", "ordered_at", [3],
     "no later than a day after now"),
    ("spend-day-with-time", "marketing_spend", SPEND + "2025-03-01T10:30:00,email,,1.5,100,3\n", "date", [2],
     "calendar day"),
    ("negative-amount", "orders", ORDERS + "O2,C1,2025-03-01,-5\nO3,C1,2025-03-01,5\nO4,C1,2025-03-01,-0.01\n",
     "amount", [2, 4], ">= 0"),
    ("negative-duration", "activities", ACTIVITIES + "A2,L1,2025-03-01,page_view,-3\n", "duration_seconds", [2],
     ">= 0"),
    ("negative-spend-and-clicks", "marketing_spend", SPEND + "2025-03-01,email,,-1.5,100,-3\n", "spend", [2], ">= 0"),
    ("unknown-activity-type", "activities", ACTIVITIES + "A2,L1,2025-03-01,page_view,3\nA3,L1,2025-03-01,teleport,\n",
     "activity_type", [3], "pricing_page_view"),
    ("empty-required-value", "orders", ORDERS + "O2,C1,2025-03-01,5\nO3,  ,2025-03-01,5\n", "customer_id", [3],
     "a value (required)"),
    ("duplicate-ids", "orders", ORDERS + "O2,C1,2025-03-01,5\nO3,C1,2025-03-01,5\nO2,C2,2025-03-02,6\n", "order_id",
     [2, 4], "once in the file"),
    ("duplicate-spend-keys", "marketing_spend", SPEND + "2025-03-01,email,,1,1,1\n2025-03-01,email,,2,2,2\n",
     "(date, channel, campaign)", [2, 3], "once in the file"),
    ("order-of-unknown-customer", "orders", ORDERS + "O2,C1,2025-03-01,5\nO3,C404,2025-03-01,5\n", "customer_id", [3],
     "exists in customers"),
    ("activity-of-unknown-lead", "activities", ACTIVITIES + "A2,L404,2025-03-01,page_view,\n", "lead_id", [2],
     "exists in leads"),
    ("customer-of-unknown-lead", "customers",
     "customer_id,lead_id,created_at\nC3,L2,2025-03-01\nC4,L404,2025-03-01\n", "lead_id", [3], "exists in leads"),
    ("text-too-long", "leads", "lead_id,created_at,source_channel\nL3,2025-03-01," + "x" * 65 + "\n",
     "source_channel", [2], "at most 64 characters"),
    ("wrong-field-count", "orders", ORDERS + "O2,C1,2025-03-01,5\nO3,C1,2025-03-01,5,extra\n", "(whole row)", [3],
     "4 fields"),
]


@pytest.mark.parametrize(("table", "text", "column", "lines", "words"), [c[1:] for c in BAD_FILES],
                         ids=[c[0] for c in BAD_FILES])
def test_bad_rows_are_named_and_nothing_is_written(
    db_url: str, tmp_path: Path, table: str, text: str, column: str, lines: list[int], words: str
) -> None:
    engine = crm(db_url)
    before = snapshot(engine)
    path = write(tmp_path, "export.csv", text)
    with pytest.raises(InvalidInput) as info:
        import_file(engine, table, path, {})
    message = str(info.value)
    first = message.splitlines()[0]
    assert first.startswith("export.csv: ") and first.endswith("; nothing was imported"), message
    assert f"  - {column}" in message, message
    assert words in message, message
    for line in lines:
        assert f"line {line} " in message, message
    assert snapshot(engine) == before


def test_message_counts_problems_and_rows_and_quotes_values(sqlite_url: str, tmp_path: Path) -> None:
    engine = crm(sqlite_url)
    rows = "".join(f"O{i},C1,2025-03-01,-{i}\n" for i in range(2, 12))
    path = write(tmp_path, "orders.csv", ORDERS + rows + "O99,C404,soon,abc\n")
    with pytest.raises(InvalidInput) as info:
        import_file(engine, "orders", path, {})
    lines = str(info.value).splitlines()
    assert lines[0] == "orders.csv: 4 problems in 11 rows; nothing was imported"
    negative = next(line for line in lines if ">= 0" in line)
    assert "10 rows: line 2 '-2', line 3 '-3', line 4 '-4', line 5 '-5', line 6 '-6' and 5 more" in negative
    assert any("ordered_at" in line and "line 12 'soon'" in line for line in lines)
    assert any("amount" in line and "line 12 'abc'" in line for line in lines)
    assert any("customer_id" in line and "line 12 'C404'" in line for line in lines)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -2000, "the import's page cache outlived it"


def test_line_numbers_count_blank_lines_and_quoted_newlines(sqlite_url: str, tmp_path: Path) -> None:
    engine = crm(sqlite_url)
    text = ("customer_id,lead_id,created_at,country\r\n\r\n"
            'C3,L1,2025-03-01,"Germany,\r\nBavaria"\r\n'
            "C4,L1,2025-03-01,DE\r\n\r\n"
            "C5,L1,not a date,DE\r\n")
    with pytest.raises(InvalidInput) as info:
        import_file(engine, "customers", write(tmp_path, "customers.csv", text), {})
    assert "line 7 'not a date'" in str(info.value)


def test_unknown_table_lists_the_valid_ones(sqlite_url: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="leads, activities, customers, orders, marketing_spend"):
        import_file(crm(sqlite_url), "invoices", write(tmp_path, "x.csv", ORDERS), {})


def test_unreadable_files_are_clear_errors(sqlite_url: str, tmp_path: Path) -> None:
    engine = crm(sqlite_url)
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes((ORDERS + "O2,C1,2025-03-01,5\nO3,C1,2025-03-01,5\n").replace("O3", "Ö3").encode("latin-1"))
    with pytest.raises(InvalidInput, match="not UTF-8"):
        import_file(engine, "orders", latin1, {})
    with pytest.raises(InvalidInput, match="empty"):
        import_file(engine, "orders", write(tmp_path, "empty.csv", "\n"), {})
    with pytest.raises(InvalidInput, match="not a Parquet file"):
        import_file(engine, "orders", write(tmp_path, "fake.parquet", ORDERS), {})
    with pytest.raises(InvalidInput, match="'amount' more than once"):
        import_file(engine, "orders", write(tmp_path, "twice.csv", "order_id,amount,amount\n"), {})


def test_good_export_loads_and_reimport_changes_nothing(db_url: str, tmp_path: Path) -> None:
    engine = crm(db_url)
    rows = "O2,C1,2025-03-01T10:00:00,5\nO3,C2,2025-03-02,7.25\nO1,C1,2025-01-02 03:04:05,10\n"
    path = write(tmp_path, "orders.csv", ORDERS + rows)
    first = import_file(engine, "orders", path, {})
    assert first == {"table": "orders", "file": str(path), "rows": 3, "inserted": 2, "updated": 0, "unchanged": 1,
                     "notes": []}
    after_first = snapshot(engine)
    again = import_file(engine, "orders", path, {})
    assert again["unchanged"] == 3 and again["inserted"] == again["updated"] == 0
    assert snapshot(engine) == after_first
    changed = write(tmp_path, "orders2.csv", ORDERS + "O2,C1,2025-03-01T10:00:00,6.5\nO4,C2,2025-03-03,1\n")
    progress: list[int] = []
    third = import_file(engine, "orders", changed, {}, progress=progress.append)
    assert (third["inserted"], third["updated"], third["unchanged"]) == (1, 1, 0)
    assert sum(progress) == 2
    orders = read_frame(engine, schema.orders).set_index("order_id")
    assert sorted(orders.index) == ["O1", "O2", "O3", "O4"]
    assert orders.loc["O2", "amount"] == 6.5
    assert orders.loc["O3", "amount"] == 7.25


def test_lookups_by_key_list_match_lookups_by_scan(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small files into big tables look stored rows up by key lists (composite keys too), with the same results."""
    monkeypatch.setattr(crm_import, "WHOLE_TABLE_FACTOR", 0)
    engine = crm(db_url)
    spend = write(tmp_path, "spend.csv", SPEND + "2025-01-02,paid_search,,5,100,3\n2025-01-03,email,x,1,10,1\n")
    assert import_file(engine, "marketing_spend", spend, {})["inserted"] == 1
    changed = write(tmp_path, "spend2.csv", SPEND + "2025-01-02,paid_search,,5,100,3\n2025-01-03,email,x,2,10,1\n")
    counts = import_file(engine, "marketing_spend", changed, {})
    assert (counts["inserted"], counts["updated"], counts["unchanged"]) == (0, 1, 1)
    orders = write(tmp_path, "orders.csv", ORDERS + "O1,C1,2025-01-02 03:04:05,10\nO2,C2,2025-03-01,4\n")
    counts = import_file(engine, "orders", orders, {})
    assert (counts["inserted"], counts["updated"], counts["unchanged"]) == (1, 0, 1)
    with pytest.raises(InvalidInput, match="line 2 'C9'"):
        import_file(engine, "orders", write(tmp_path, "bad.csv", ORDERS + "O3,C9,2025-03-01,4\n"), {})


def test_realistic_export_loads_in_dependency_order(db_url: str, tmp_path: Path) -> None:
    engine = connect(db_url)
    create_schema(engine)
    files = {
        "leads": "\ufefflead_id,created_at,source_channel,campaign,country,industry,company_size,job_seniority,"
                 "email_domain_type,converted_at,customer_id\r\n"
                 "L-001,2025-01-05T09:15:00+01:00,paid_search,\"Spring, DACH\",DE,software,51-200,manager,business,"
                 "2025-02-01T10:00:00Z,CU-1\r\n"
                 "L-002,2025-01-06 11:00:00,organic,,US,retail,1-10,individual,free,,\r\n"
                 "L-003,2025-01-07,referral,,,,,,,,\r\n",
        "activities": "activity_id,lead_id,occurred_at,activity_type,channel,content_id,duration_seconds\n"
                      "E1,L-001,2025-01-05T09:20:00+01:00,web_session,web,/pricing,35.5\n"
                      "E2,L-001,2025-01-06T10:00:00Z,pricing_page_view,web,/pricing,\n"
                      "E3,L-002,2025-01-07T08:00:00-05:00,email_open,email,newsletter-12,\n",
        "customers": "customer_id,lead_id,created_at,acquisition_channel,country\n"
                     "CU-1,L-001,2025-02-01T10:00:00Z,paid_search,DE\nCU-2,,2025-02-03,partner,FR\n",
        "orders": ORDERS + "OR-1,CU-1,2025-02-01T10:00:00Z,1200\nOR-2,CU-1,2025-04-01T10:00:00Z,350.5\n"
                           "OR-3,CU-2,2025-02-03,99.99\n",
        "marketing_spend": SPEND + "2025-01-05,paid_search,\"Spring, DACH\",120.5,10000,250\n"
                                   "2025-01-05,organic,,0,0,0\n",
    }
    for table, text in files.items():
        result = import_file(engine, table, write(tmp_path, f"{table}.csv", text), {})
        assert result["rows"] == result["inserted"] == text.count("\n") - 1
    leads = read_frame(engine, schema.leads).set_index("lead_id")
    assert leads.loc["L-001", "created_at"] == pd.Timestamp("2025-01-05 08:15:00")
    assert leads.loc["L-001", "campaign"] == "Spring, DACH"
    assert leads.loc["L-001", "customer_id"] == "CU-1"
    assert pd.isna(leads.loc["L-002", "converted_at"]) and pd.isna(leads.loc["L-003", "country"])
    activities = read_frame(engine, schema.activities).set_index("activity_id")
    assert activities.loc["E3", "occurred_at"] == pd.Timestamp("2025-01-07 13:00:00")
    assert pd.isna(activities.loc["E2", "duration_seconds"])
    spend = read_frame(engine, schema.marketing_spend).set_index("channel")
    assert spend.loc["organic", "campaign"] == "" and spend.loc["paid_search", "impressions"] == 10000


@pytest.mark.parametrize("delimiter", [";", "\t"], ids=["semicolon", "tab"])
def test_semicolon_and_tab_separated_exports_load(sqlite_url: str, tmp_path: Path, delimiter: str) -> None:
    engine = crm(sqlite_url)
    text = ORDERS + "O2,C1,2025-03-01,5\nO3,C1,2025-03-01,-5\n"
    with pytest.raises(InvalidInput, match="line 3 '-5'"):
        import_file(engine, "orders", write(tmp_path, "orders.csv", text.replace(",", delimiter)), {})
    good = (ORDERS + "O2,C1,2025-03-01,5\n").replace(",", delimiter)
    assert import_file(engine, "orders", write(tmp_path, "good.csv", good), {})["inserted"] == 1


def test_gzipped_csv_loads_and_names_its_bad_lines(sqlite_url: str, tmp_path: Path) -> None:
    engine = crm(sqlite_url)
    bad = tmp_path / "orders.csv.gz"
    bad.write_bytes(gzip.compress((ORDERS + "O2,C1,2025-03-01,5\n\nO3,C1,2025-03-01,-5\n").encode()))
    with pytest.raises(InvalidInput, match="line 4 '-5'"):
        import_file(engine, "orders", bad, {})
    good = tmp_path / "good.csv.gz"
    good.write_bytes(gzip.compress((ORDERS + "O2,C1,2025-03-01,5\n").encode()))
    assert import_file(engine, "orders", good, {})["inserted"] == 1


def test_spend_without_campaign_column_is_stored_as_blank(sqlite_url: str, tmp_path: Path) -> None:
    engine = crm(sqlite_url)
    path = write(tmp_path, "spend.csv", "date,channel,spend,impressions,clicks\n2025-03-01,email,1.5,100,3\n")
    import_file(engine, "marketing_spend", path, {})
    spend = read_frame(engine, schema.marketing_spend)
    assert spend.loc[spend["channel"] == "email", "campaign"].tolist() == [""]


def test_mapping_renames_and_skips_export_columns(db_url: str, tmp_path: Path) -> None:
    engine = crm(db_url)
    path = write(tmp_path, "export.csv", "Order No,Kunde,Datum,Betrag,Notiz\nX-1,C1,2025-03-01,19.9,call back\n")
    with pytest.raises(InvalidInput) as info:
        import_file(engine, "orders", path, {})
    assert "--map 'Betrag=" in str(info.value)
    mapping = parse_mapping(["Order No=order_id", "Kunde=customer_id", "Notiz="], None)
    mapping_file = write(tmp_path, "map.toml", 'Datum = "ordered_at"\nBetrag = "amount"\nKunde = "lead_id"\n')
    result = import_file(engine, "orders", path, parse_mapping(["Order No=order_id", "Kunde=customer_id", "Notiz="],
                                                               mapping_file))
    assert result["inserted"] == 1 and mapping["Notiz"] == ""
    assert read_frame(engine, schema.orders).set_index("order_id").loc["X-1", "amount"] == 19.9


def test_mapped_column_is_named_both_ways_in_problems(sqlite_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, "export.csv", "order_id,customer_id,ordered_at,Betrag\nO2,C1,2025-03-01,-1\n")
    with pytest.raises(InvalidInput, match=r"amount \(column 'Betrag' in the file\).*line 2 '-1'"):
        import_file(crm(sqlite_url), "orders", path, {"Betrag": "amount"})


def test_mapping_onto_the_same_column_twice_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, "export.csv", "order_id,customer_id,ordered_at,amount,Betrag\nO2,C1,2025-03-01,1,1\n")
    with pytest.raises(InvalidInput, match="amount from 'amount', 'Betrag'"):
        import_file(crm(sqlite_url), "orders", path, {"Betrag": "amount"})


def test_parse_mapping_reads_pairs_toml_json_and_csv(tmp_path: Path) -> None:
    assert parse_mapping(["Order Total = amount", "a=b=lead_id"], None) == {"Order Total": "amount", "a=b": "lead_id"}
    toml = write(tmp_path, "m.toml", '"Order Total" = "amount"\nKunde = "customer_id"\n')
    as_json = write(tmp_path, "m.json", json.dumps({"Order Total": "amount", "Kunde": "customer_id"}))
    with_header = write(tmp_path, "m.csv", "their,ours\nOrder Total,amount\nKunde,customer_id\n")
    without_header = write(tmp_path, "n.csv", "Order Total,amount\nKunde,customer_id\n")
    for path in (toml, as_json, with_header, without_header):
        assert parse_mapping([], path) == {"Order Total": "amount", "Kunde": "customer_id"}, path
    assert parse_mapping(["Kunde=lead_id"], toml)["Kunde"] == "lead_id"


@pytest.mark.parametrize(("pairs", "file_text", "suffix", "words"), [
    (["amount"], None, None, "expected their_column=our_column"),
    (["=amount"], None, None, "expected their_column=our_column"),
    (["Betrag=amout"], None, None, "'amout' is not a leadval column"),
    (["a=amount", "a=spend"], None, None, "maps 'a' twice"),
    ([], "Betrag = 3\n", ".toml", "must map to a column name"),
    ([], "Betrag = \n", ".toml", "cannot be read"),
    ([], "[1, 2]", ".json", "expected an object"),
    ([], "a,b,c\n", ".csv", "expected 2 columns"),
    ([], "a: amount\n", ".yaml", "expected a .toml, .json or .csv file"),
])
def test_parse_mapping_refuses_bad_syntax(
    tmp_path: Path, pairs: list[str], file_text: str | None, suffix: str | None, words: str
) -> None:
    path = write(tmp_path, f"map{suffix}", file_text) if file_text is not None else None
    with pytest.raises(InvalidInput, match=words.replace("(", r"\(")):
        parse_mapping(pairs, path)


def test_parquet_keeps_types_and_names_bad_rows_by_row_number(db_url: str, tmp_path: Path) -> None:
    engine = crm(db_url)
    good = pd.DataFrame({
        "order_id": ["P1", "P2"],
        "customer_id": ["C1", "C2"],
        "ordered_at": pd.to_datetime(["2025-03-01 12:00", "2025-03-02 12:00"]).tz_localize("Europe/Berlin"),
        "amount": [12.5, 0.0],
    })
    good.to_parquet(tmp_path / "orders.parquet")
    assert import_file(engine, "orders", tmp_path / "orders.parquet", {})["inserted"] == 2
    stored = read_frame(engine, schema.orders).set_index("order_id")
    assert stored.loc["P1", "ordered_at"] == pd.Timestamp("2025-03-01 11:00")
    before = snapshot(engine)
    bad = good.assign(order_id=["P3", "P4"], amount=[1.0, -2.0])
    bad.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(InvalidInput, match=r"bad.parquet: 1 problem in 1 row(?s:.*)amount.*row 2 '-2.0'"):
        import_file(engine, "orders", tmp_path / "bad.parquet", {})
    assert snapshot(engine) == before


def test_header_only_export_imports_nothing(sqlite_url: str, tmp_path: Path) -> None:
    result = import_file(crm(sqlite_url), "orders", write(tmp_path, "orders.csv", ORDERS), {})
    assert result["rows"] == result["inserted"] == 0


def test_rules_come_from_the_table_definitions() -> None:
    rules = {(t.name, r.name): r for t in schema.CRM_TABLES for r in column_rules(t)}
    for table in schema.CRM_TABLES:
        for column in table.columns:
            rule = rules[(table.name, column.name)]
            blank_means_empty = (table.name, column.name) == ("marketing_spend", "campaign")
            assert rule.required == (not column.nullable and not blank_means_empty)
            assert rule.allowed == column.info.get("allowed")
            if "minimum" in column.info:
                assert rule.minimum == column.info["minimum"]
    assert rules[("activities", "activity_type")].allowed == schema.ACTIVITY_TYPES
    assert rules[("orders", "amount")].minimum == 0 and rules[("orders", "amount")].kind == "number"
    assert rules[("marketing_spend", "clicks")].kind == "integer" and rules[("marketing_spend", "clicks")].minimum == 0
    assert rules[("activities", "duration_seconds")].minimum == 0
    assert rules[("orders", "customer_id")].references == ("customers", "customer_id")
    assert rules[("leads", "customer_id")].references is None
    assert rules[("leads", "lead_id")].max_length == 64


CHECKS_OF_EXISTING_DATABASES = {
    "activities": {
        "ck_activities_type": "activity_type IN (" + ", ".join(f"'{t}'" for t in schema.ACTIVITY_TYPES) + ")",
        "ck_activities_duration": "duration_seconds IS NULL OR duration_seconds >= 0",
    },
    "orders": {"ck_orders_amount": "amount >= 0"},
    "marketing_spend": {"ck_spend_nonnegative": "spend >= 0 AND impressions >= 0 AND clicks >= 0"},
    "scoring_runs": {"ck_scoring_runs_status": "status IN ('running', 'succeeded', 'failed')"},
    "lead_scores": {"ck_lead_scores_score": "score >= 0 AND score <= 100",
                    "ck_lead_scores_band": "band IN ('A', 'B', 'C', 'D')"},
    "monitoring_runs": {"ck_monitoring_runs_model": "model IN ('lead-scoring', 'clv', 'kpi', 'all')",
                        "ck_monitoring_runs_status": "status IN ('ok', 'no_data', 'warn', 'alert')"},
}


def test_check_constraints_are_generated_from_the_declared_rules_with_their_old_names() -> None:
    """Every CHECK comes from a column's declared rule, and keeps the name and condition databases already have."""
    checks = {
        table.name: {c.name: str(c.sqltext) for c in table.constraints if isinstance(c, CheckConstraint)}
        for table in schema.metadata.tables.values()
    }
    assert {name: found for name, found in checks.items() if found} == CHECKS_OF_EXISTING_DATABASES
    for table in schema.metadata.tables.values():
        ruled = {c.name for c in table.columns if schema.RULE_KEYS & c.info.keys()}
        checked = {c.name for c in table.columns
                   if any(re.match(rf"{c.name}\b", clause) for sql in checks[table.name].values()
                          for clause in sql.split(" AND "))}
        assert ruled == checked, table.name
    ddl = str(CreateTable(schema.orders).compile(dialect=postgresql.dialect()))
    assert "CONSTRAINT ck_orders_amount CHECK (amount >= 0)" in ddl


DAY = pd.Timestamp("2025-03-01")
RULE_BREAKERS = [
    ("orders", {"order_id": "O9", "customer_id": "C1", "ordered_at": DAY, "amount": -5.0}, "amount", ">= 0"),
    ("activities", {"activity_id": "A9", "lead_id": "L1", "occurred_at": DAY, "activity_type": "teleport"},
     "activity_type", "one of: web_session"),
    ("activities", {"activity_id": "A9", "lead_id": "L1", "occurred_at": DAY, "activity_type": "page_view",
                    "duration_seconds": -3.0}, "duration_seconds", ">= 0"),
    ("marketing_spend", {"date": DAY.date(), "channel": "email", "campaign": "x", "spend": 1.0, "impressions": 5,
                         "clicks": -1}, "clicks", ">= 0"),
]


@pytest.mark.parametrize(("table", "row", "column", "words"), RULE_BREAKERS,
                         ids=[f"{t}.{c}" for t, _, c, _ in RULE_BREAKERS])
def test_one_declaration_is_enforced_by_the_import_and_by_the_database(
    db_url: str, tmp_path: Path, table: str, row: dict, column: str, words: str
) -> None:
    """A value the column's declared rule forbids: the import names it, the database refuses a direct insert."""
    engine = crm(db_url)
    before = snapshot(engine)
    path = write(tmp_path, "export.csv", ",".join(row) + "\n" + ",".join(map(str, row.values())) + "\n")
    with pytest.raises(InvalidInput, match=rf"  - {column}: expected [^\n]*{words}[^\n]*; 1 row: line 2"):
        import_file(engine, table, path, {})
    with pytest.raises(IntegrityError), engine.begin() as conn:
        insert_frame(conn, schema.metadata.tables[table], pd.DataFrame([row]))
    assert snapshot(engine) == before
    engine.dispose()


@settings(max_examples=40, deadline=None)
@given(
    amounts=st.lists(st.sampled_from(["12.5", "0", "7", "-1", "abc", "", " 3 ", "1e3", "nan"]), min_size=1, max_size=40)
)
def test_every_bad_amount_is_reported_once_at_its_row(amounts: list[str]) -> None:
    raw = pd.DataFrame({
        "order_id": [f"O{i}" for i in range(len(amounts))],
        "customer_id": "C1",
        "ordered_at": "2025-03-01",
        "amount": pd.Series(amounts, dtype="str"),
    })
    frame, problems = parse_rows(schema.orders, raw, Plausibility(NOW))
    reported = {p.expected: set(p.rows.tolist()) for p in problems}
    expect = {
        "a value (required)": {i for i, a in enumerate(amounts) if a == ""},
        "a number": {i for i, a in enumerate(amounts) if a in ("abc", "nan")},
        "a number >= 0": {i for i, a in enumerate(amounts) if a == "-1"},
    }
    assert reported == {k: v for k, v in expect.items() if v}
    ok = [i for i, a in enumerate(amounts) if a in ("12.5", "0", "7", " 3 ", "1e3")]
    assert frame["amount"].iloc[ok].tolist() == [float(amounts[i]) for i in ok]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.tuples(st.booleans(), st.integers(0, 2), st.booleans()), min_size=1, max_size=15),
    crlf=st.booleans(),
)
def test_line_numbers_match_the_file(rows: list[tuple[bool, int, bool]], crlf: bool) -> None:
    """Rows with quoted multi-line values and blank lines in between still get their true line numbers."""
    newline = "\r\n" if crlf else "\n"
    lines = ["customer_id,lead_id,created_at,country"]
    bad_entries = []
    for i, (bad, extra_lines, blank_after) in enumerate(rows):
        country = '"' + newline.join(["DE"] * (extra_lines + 1)) + '"'
        if bad:
            bad_entries.append(len(lines) + 1)
        lines.append(f"C{i},,{'yesterday' if bad else '2025-03-01'},{country}")
        if blank_after:
            lines.append("")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "customers.csv"
        path.write_text(newline.join(lines) + newline, encoding="utf-8", newline="")
        export = read_export(path)
        _, problems = parse_rows(schema.customers, export.frame, Plausibility(NOW))
        located = export.locate(problems[0].rows) if problems else []
    assert located == [f"line {n}" for n in true_lines(lines, bad_entries, newline)]


def true_lines(lines: list[str], logical: list[int], newline: str) -> list[int]:
    """Physical line numbers (1-based) of the given logical entries of ``lines``."""
    starts, line = [], 1
    for entry in lines:
        starts.append(line)
        line += 1 + entry.count(newline)
    return [starts[i - 1] for i in logical]


def test_cli_import_reports_bad_lines_without_traceback_and_loads_good_files(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    crm(url).dispose()
    bad = write(tmp_path, "orders.csv", ORDERS + "O2,C1,2025-03-01,5\nO3,C1,2025-03-01,-5\nO4,C9,2025-03-01,5\n")
    result = run_leadval("import", "--db", url, "--table", "orders", str(bad), check=False)
    assert result.returncode != 0
    assert result.stderr.startswith("error: orders.csv: 2 problems in 2 rows; nothing was imported")
    assert "line 3 '-5'" in result.stderr and "line 4 'C9'" in result.stderr
    assert "Traceback" not in result.stderr
    good = write(tmp_path, "good.csv", "Nr,customer_id,ordered_at,amount\nO2,C1,2025-03-01,5\nO3,C2,2025-03-01,6\n")
    result = run_leadval("import", "--db", url, "--table", "orders", str(good), "--map", "Nr=order_id", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["rows"] == 2 and summary["inserted"] == 2 and summary["table"] == "orders"
    assert len(read_frame(connect(url), schema.orders)) == 3
