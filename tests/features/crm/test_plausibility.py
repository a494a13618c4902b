"""Plausible values: dates from 1990 to a day after now, amounts up to a maximum, text without control characters.

Each broken bound is a named, counted problem with its file lines, at import and in transactions files, and
an import with any of them writes nothing; the bounds are settings of the import, not CHECK constraints.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateTable

from features.crm import schema
from features.crm.imports import import_file, import_plausibility
from features.crm.rows import CONTROL_CHARACTERS, conform_frame, parse_rows
from features.crm.rules import Plausibility
from features.crm.store import connect, read_frame
from features.crm.transactions import read_transactions
from features.errors import InvalidInput
from tests.features.crm.test_imports import ACTIVITIES, ORDERS, SPEND, crm, snapshot, write
from tests.leadval_cli import run_leadval

NOW = pd.Timestamp("2026-01-01 12:00:00")
AT_NOW = import_plausibility(now=NOW)


def refused(engine, tmp_path: Path, table: str, text: str, plausibility: Plausibility = AT_NOW) -> str:
    """The message of an import of ``text`` that must fail, after checking that it wrote nothing."""
    before = snapshot(engine)
    with pytest.raises(InvalidInput) as info:
        import_file(engine, table, write(tmp_path, "export.csv", text), {}, plausibility=plausibility)
    assert snapshot(engine) == before
    message = str(info.value)
    assert message.splitlines()[0].endswith("; nothing was imported"), message
    return message


def problem_line(message: str, column: str, words: str) -> str:
    lines = [line for line in message.splitlines() if line.startswith(f"  - {column}: ") and words in line]
    assert len(lines) == 1, message
    return lines[0]


def test_absurd_dates_are_refused_with_their_lines_and_nothing_is_written(db_url: str, tmp_path: Path) -> None:
    engine = crm(db_url)
    text = ORDERS + ("O2,C1,0001-01-01,5\nO3,C1,1800-05-01T10:00:00Z,5\nO4,C1,1989-12-31T23:59:59,5\n"
                     "O5,C1,2026-01-04,5\nO6,C1,1990-01-01,5\nO7,C1,2026-01-02T11:59:00,5\n")
    message = refused(engine, tmp_path, "orders", text)
    assert message.splitlines()[0] == "export.csv: 2 problems in 4 rows; nothing was imported"
    early = problem_line(message, "ordered_at", "on or after 1990-01-01")
    assert ("expected a date-time on or after 1990-01-01 (older dates load with --allow-dates-from YYYY-MM-DD); "
            "3 rows: line 2 '0001-01-01', line 3 '1800-05-01T10:00:00Z', line 4 '1989-12-31T23:59:59'") in early
    late = problem_line(message, "ordered_at", "no later than")
    assert ("expected a date-time no later than a day after now (2026-01-02 12:00 UTC); 1 row: line 5 '2026-01-04'"
            in late)


def test_spend_days_may_be_tomorrow_at_the_latest(sqlite_url: str, tmp_path: Path) -> None:
    engine = crm(sqlite_url)
    message = refused(engine, tmp_path, "marketing_spend", SPEND + "2026-01-02,email,,1,1,1\n2026-01-03,email,,1,1,1\n"
                                                                  "1989-12-31,email,,1,1,1\n")
    assert "expected a day no later than tomorrow (2026-01-02 UTC); 1 row: line 3 '2026-01-03'" in message
    assert "expected a day on or after 1990-01-01" in problem_line(message, "date", "line 4 '1989-12-31'")
    good = write(tmp_path, "good.csv", SPEND + "2026-01-02,email,,1,1,1\n1990-01-01,email,,1,1,1\n")
    assert import_file(engine, "marketing_spend", good, {}, plausibility=AT_NOW)["inserted"] == 2


def test_allow_dates_from_admits_older_dates(db_url: str, tmp_path: Path) -> None:
    engine = crm(db_url)
    path = write(tmp_path, "old.csv", ORDERS + "O2,C1,1800-05-01,5\nO3,C1,1899-12-31T10:00:00,7\n")
    refused(engine, tmp_path, "orders", path.read_text())
    since_1800 = import_plausibility(now=NOW, dates_from="1800-01-01")
    assert import_file(engine, "orders", path, {}, plausibility=since_1800)["inserted"] == 2
    stored = read_frame(engine, schema.orders).set_index("order_id")
    assert stored.loc["O2", "ordered_at"] == pd.Timestamp("1800-05-01")
    message = refused(engine, tmp_path, "orders", ORDERS + "O4,C1,1799-12-31,5\n", since_1800)
    assert "expected a date-time on or after 1800-01-01" in message


def test_amounts_above_the_maximum_are_refused(db_url: str, tmp_path: Path) -> None:
    engine = crm(db_url)
    message = refused(engine, tmp_path, "orders", ORDERS + "O2,C1,2025-03-01,1e300\nO3,C1,2025-03-01,1000000000\n"
                                                           "O4,C1,2025-03-01,1000000000.01\n")
    assert ("  - amount: expected a number <= 1000000000 (larger amounts load with --max-amount); 2 rows: "
            "line 2 '1e300', line 4 '1000000000.01'") in message
    message = refused(engine, tmp_path, "marketing_spend", SPEND + "2025-03-01,email,,2e10,1,1\n")
    assert "  - spend: expected a number <= 1000000000 (larger amounts load with --max-amount); 1 row: line 2" \
        in message
    bigger = import_plausibility(now=NOW, max_amount=1e12)
    path = write(tmp_path, "big.csv", ORDERS + "O2,C1,2025-03-01,5e11\n")
    assert import_file(engine, "orders", path, {}, plausibility=bigger)["inserted"] == 1
    assert "<= 1000\n" not in refused(engine, tmp_path, "orders", ORDERS + "O3,C1,2025-03-01,1e300\n", bigger)


def test_max_amount_must_be_a_finite_number() -> None:
    for bad in (float("inf"), float("nan"), -1.0):
        with pytest.raises(InvalidInput, match="--max-amount"):
            import_plausibility(max_amount=bad)


@pytest.mark.parametrize("character", ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x1f"],
                         ids=lambda c: f"U+{ord(c):04X}")
def test_control_characters_in_text_are_refused(sqlite_url: str, tmp_path: Path, character: str) -> None:
    engine = crm(sqlite_url)
    text = ("lead_id,created_at,source_channel,campaign\n"
            f"L3,2025-03-01,organic,spring{character}sale\nL4,2025-03-01,organic,\"tab\tand\r\nnew line\"\n"
            f"L{character}5,2025-03-01,organic,\n")
    message = refused(engine, tmp_path, "leads", text)
    shown = repr(character)[1:-1]
    assert (f"  - lead_id: expected text without control characters (NUL, or another below U+0020 but tab, line "
            f"feed and carriage return); 1 row: line 5 'L{shown}5'") in message, message
    assert f"1 row: line 2 'spring{shown}sale'" in problem_line(message, "campaign", "control characters")
    assert message.splitlines()[0] == "export.csv: 2 problems in 2 rows; nothing was imported"


def test_tabs_and_line_breaks_in_text_load(sqlite_url: str, tmp_path: Path) -> None:
    engine = crm(sqlite_url)
    text = "lead_id,created_at,source_channel,campaign\nL3,2025-03-01,organic,\"tab\tand\r\nnew line, é ✓\"\n"
    assert import_file(engine, "leads", write(tmp_path, "leads.csv", text), {}, plausibility=AT_NOW)["inserted"] == 1
    assert read_frame(engine, schema.leads).set_index("lead_id").loc["L3", "campaign"] == "tab\tand\r\nnew line, é ✓"


def test_a_nul_in_a_parquet_export_is_refused_by_row(db_url: str, tmp_path: Path) -> None:
    """PostgreSQL itself refuses a NUL in text (a driver error, once); SQLite stored it: now neither sees one."""
    engine = crm(db_url)
    before = snapshot(engine)
    pd.DataFrame({"activity_id": ["A2", "A3"], "lead_id": ["L1", "L1"],
                  "occurred_at": pd.to_datetime(["2025-03-01", "1970-01-01"]),
                  "activity_type": ["page_view", "page_view"], "content_id": ["/pricing", "/x\x00"]},
                 ).to_parquet(tmp_path / "activities.parquet")
    with pytest.raises(InvalidInput) as info:
        import_file(engine, "activities", tmp_path / "activities.parquet", {}, plausibility=AT_NOW)
    assert "  - content_id: expected text without control characters" in str(info.value)
    assert "1 row: row 2 '/x\\x00'" in str(info.value)
    assert "1 row: row 2 '1970-01-01 00:00:00'" in problem_line(str(info.value), "occurred_at", "1990-01-01")
    assert snapshot(engine) == before


@settings(max_examples=60, deadline=None)
@given(cells=st.lists(st.text(alphabet=st.sampled_from(list("aZ9 é✓😀\t\n\r\x00\x01\x0b\x1b\x1f\x7f")), max_size=6),
                      min_size=1, max_size=30))
def test_every_control_character_is_found_in_its_cell(cells: list[str]) -> None:
    """The fast byte scan and the cell-by-cell search agree: a cell is refused exactly when it holds one."""
    raw = pd.DataFrame({"lead_id": pd.Series([f"L{i}" for i in range(len(cells))], dtype="str"),
                        "created_at": "2025-03-01", "source_channel": "organic",
                        "campaign": pd.Series(cells, dtype="str")})
    _, problems = parse_rows(schema.leads, raw, Plausibility(NOW))
    found = {int(r) for p in problems for r in p.rows}
    controls = pd.Series(cells, dtype="str").str.strip().str.contains(CONTROL_CHARACTERS)
    assert found == set(np.flatnonzero(controls.to_numpy(dtype=bool)).tolist())
    assert all(p.column == "campaign" and "control characters" in p.expected for p in problems)


def test_transactions_files_are_held_to_the_same_bounds(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("c,d,a\nx,1997-01-01,5\ny,1800-01-01,5\nz,1997-02-01,1e300\nw\x00,1997-02-01,1\n")
    with pytest.raises(InvalidInput) as info:
        read_transactions(path, "c", "d", "a")
    message = str(info.value)
    assert message.splitlines()[0] == "orders.csv: 3 problems in 3 rows; the file was not used"
    assert "  - d: expected a date-time on or after 1990-01-01; 1 row: line 3 '1800-01-01'" in message
    assert "  - a: expected a number <= 1000000000; 1 row: line 4 '1e300'" in message
    assert "  - c: expected text without control characters" in message and "line 5 'w\\x00'" in message
    assert "--allow-dates-from" not in message, "a flag of the import is no advice for a transactions file"


def test_bounds_are_no_schema_constraints_and_tables_in_code_are_not_held_to_them() -> None:
    """The maximum amount is a setting: no CHECK holds it; the KPI tables check only what columns can store."""
    ddl = str(CreateTable(schema.orders).compile(dialect=postgresql.dialect()))
    assert "CONSTRAINT ck_orders_amount CHECK (amount >= 0)" in ddl and "1000000000" not in ddl
    old = pd.DataFrame({"order_id": ["O1"], "customer_id": ["C1"], "ordered_at": [pd.Timestamp("1800-01-01")],
                        "amount": [2e9]})
    assert conform_frame(schema.orders, old)["amount"].tolist() == [2e9]


def test_cli_flags_widen_the_bounds_and_errors_name_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    crm(url).dispose()
    path = write(tmp_path, "orders.csv", ORDERS + "O2,C1,1850-03-01,5\nO3,C1,2025-03-01,2e9\n")
    result = run_leadval("import", "--db", url, "--table", "orders", str(path), check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: orders.csv: 2 problems in 2 rows; nothing was imported")
    assert "--allow-dates-from YYYY-MM-DD" in result.stderr and "--max-amount" in result.stderr
    result = run_leadval("import", "--db", url, "--table", "orders", str(path), "--allow-dates-from", "1850-01-01",
                         "--max-amount", "5e9", "--json")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["inserted"] == 2 and summary["notes"] == []
    stored = read_frame(connect(url), schema.orders).set_index("order_id")
    assert stored.loc["O3", "amount"] == 2e9 and stored.loc["O2", "ordered_at"] == pd.Timestamp("1850-03-01")
    result = run_leadval("import", "--db", url, "--table", "orders", str(path), "--allow-dates-from", "March 1850",
                         check=False)
    assert result.returncode != 0 and "'March 1850' does not match the formats '%Y-%m-%d'" in result.stderr


def test_activities_text_and_dates_checked_together(sqlite_url: str, tmp_path: Path) -> None:
    """One bad cell is one problem: a control character is not also an unknown lead or activity type."""
    engine = crm(sqlite_url)
    message = refused(engine, tmp_path, "activities", ACTIVITIES + "A2,L\x001,2025-03-01,page_view,\n"
                                                                   "A3,L1,2025-03-01,page\x00view,\n")
    assert message.splitlines()[0] == "export.csv: 2 problems in 2 rows; nothing was imported", message
    assert "exists in leads" not in message and "one of: web_session" not in message
