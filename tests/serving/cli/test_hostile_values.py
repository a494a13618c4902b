"""CRM values are data, whatever they hold: formula-like ids import as they are and leave in CSV files as text
(OWASP's CSV injection advice), and ids with terminal escapes print as visible escapes, never as commands.

The CRM is a real SQLite file in the test's folder; the commands run as ``leadval`` runs them
(:func:`tests.leadval_cli.run_leadval`); the customers are scored by the session's trained CLV champion.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from features.crm import schema
from features.crm.store import connect, create_schema, insert_frame, read_frame
from tests.leadval_cli import last_json, run_leadval
from tests.serving.conftest import TrainedStore

FORMULA_IDS = ['=HYPERLINK("http://x")', "@SUM(1)", "+1+1", "-2", "\tX", "\rY"]
PLAIN_IDS = ["C1", " C2 ", "'=quoted"]
"""Ids that stay as they are in the CSV too: plain, with spaces around (kept: ids are data), already quoted."""

ESCAPE_IDS = ["L\x1b[2J", "L\x07bell", "L\x9b31m", "L\rover"]
"""Ids that would clear the screen, ring the bell, start a C1 control sequence, overwrite the line."""
TERMINAL_CONTROLS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
"""What may not reach a terminal: C0 but line feed (which ends our own lines), DEL, C1."""


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _read_cells(path: Path) -> list[dict[str, str]]:
    """The CSV's cells as the text a spreadsheet would get, nothing parsed."""
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def hostile_crm(tmp_path: Path) -> str:
    """A CRM whose customers (formula-like, plain) were imported with `leadval import`, three orders each."""
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    ids = FORMULA_IDS + PLAIN_IDS
    customers = _write_csv(tmp_path / "customers.csv", ["customer_id", "created_at", "acquisition_channel"],
                           [[cid, "2025-01-05T00:00:00", "=cmd|' /C calc'!A0"] for cid in ids])
    orders = _write_csv(tmp_path / "orders.csv", ["order_id", "customer_id", "ordered_at", "amount"],
                        [[f"O{i}-{k}", cid, f"2025-0{k + 1}-1{i % 9}T10:00:00", 20 + 10 * k + i]
                         for i, cid in enumerate(ids) for k in range(3)])
    for table, path in (("customers", customers), ("orders", orders)):
        run_leadval("import", "--db", url, "--table", table, str(path))
    return url


def test_formula_ids_import_as_they_are_and_export_as_text(hostile_crm: str, trained_store: TrainedStore,
                                                           tmp_path: Path) -> None:
    engine = connect(hostile_crm)
    assert sorted(read_frame(engine, schema.customers)["customer_id"]) == sorted(FORMULA_IDS + PLAIN_IDS)
    assert sorted(read_frame(engine, schema.orders)["customer_id"].unique()) == sorted(FORMULA_IDS + PLAIN_IDS)
    run_leadval("score", "customers", "--db", hostile_crm, "--tracking-uri", trained_store.tracking_uri,
                "--as-of", "2025-04-01")
    out = tmp_path / "segments.csv"
    result = last_json(run_leadval("segments", "--db", hostile_crm, "--out", str(out), "--json"))
    assert result["rows"] == len(FORMULA_IDS + PLAIN_IDS)

    cells = {row["customer_id"]: row for row in _read_cells(out)}
    assert set(cells) == {f"'{cid}" for cid in FORMULA_IDS} | set(PLAIN_IDS)
    scores = read_frame(engine, schema.customer_scores).set_index("customer_id")
    assert sorted(scores.index) == sorted(FORMULA_IDS + PLAIN_IDS), "the database keeps the ids as imported"
    for cid in FORMULA_IDS + PLAIN_IDS:
        row = cells[f"'{cid}" if cid in FORMULA_IDS else cid]
        assert float(row["clv"]) == scores.loc[cid, "clv"] and float(row["p_alive"]) == scores.loc[cid, "p_alive"]
        assert row["segment"] == scores.loc[cid, "segment"]
    engine.dispose()


def _parquet(url: str, tmp_path: Path) -> Path:
    out = tmp_path / "segments.parquet"
    run_leadval("segments", "--db", url, "--out", str(out))
    return out


def test_parquet_exports_keep_the_ids_as_they_are(hostile_crm: str, trained_store: TrainedStore,
                                                  tmp_path: Path) -> None:
    """Parquet is typed, not run by spreadsheets: nothing to neutralise there."""
    run_leadval("score", "customers", "--db", hostile_crm, "--tracking-uri", trained_store.tracking_uri,
                "--as-of", "2025-04-01")
    exported = pd.read_parquet(_parquet(hostile_crm, tmp_path))
    assert sorted(exported["customer_id"]) == sorted(FORMULA_IDS + PLAIN_IDS)


def test_scores_of_an_orders_file_are_written_as_text_too(trained_store: TrainedStore, tmp_path: Path) -> None:
    orders = _write_csv(tmp_path / "orders.csv", ["customer_id", "ordered_at", "amount"],
                        [[cid, f"2025-0{k + 1}-10", 25.5 * (k + 1)] for cid in FORMULA_IDS + ["C1"] for k in range(3)])
    out = tmp_path / "clv.csv"
    run_leadval("score", "customers", "--table", str(orders), "--out", str(out), "--tracking-uri",
                trained_store.tracking_uri)
    rows = _read_cells(out)
    assert sorted(row["customer_id"] for row in rows) == sorted([f"'{cid}" for cid in FORMULA_IDS] + ["C1"])
    assert all(not row[name].startswith("'") for row in rows for name in row if name != "customer_id")
    assert all(float(row[name]) >= 0 for row in rows for name in ("expected_purchases", "p_alive", "clv"))
    assert len({row["clv"] for row in rows}) == 1, "the same orders, the same value, whatever the id"
    assert out.read_bytes().count(b"\r\n") == len(rows) + 1, "RFC 4180 line ends; the CR of \\rY is quoted"


def _leads_with_escapes(url: str) -> None:
    """Leads as another tool could write them straight into the database (the import refuses such ids)."""
    engine = connect(url)
    create_schema(engine)
    leads = pd.DataFrame({"lead_id": ESCAPE_IDS, "created_at": pd.Timestamp("2025-03-01"),
                          "source_channel": ["web\x1b]0;owned\x07", "email", "ads\x1b[1A", "organic"]})
    scores = pd.DataFrame({"lead_id": ESCAPE_IDS, "score": [90, 80, 70, 60], "probability": [0.9, 0.8, 0.7, 0.6],
                           "band": "A", "reasons": [[{"text": "Asked for a demo\x1b[2K"}], None, None, None],
                           "expected_value": [100.0, -5.0, None, 1.0], "as_of": pd.Timestamp("2025-03-02"),
                           "scored_at": pd.Timestamp("2025-03-02 03:00"), "model_name": "lead-scoring"})
    with engine.begin() as conn:
        insert_frame(conn, schema.leads, leads)
        insert_frame(conn, schema.lead_scores, scores)
    engine.dispose()


def test_top_leads_print_escapes_in_ids_as_visible_text(sqlite_url: str) -> None:
    _leads_with_escapes(sqlite_url)
    ran = run_leadval("leads", "top", "--db", sqlite_url)
    assert not TERMINAL_CONTROLS.search(ran.stdout), repr(ran.stdout)
    lines = ran.stdout.splitlines()
    assert len(lines) == 1 + len(ESCAPE_IDS) + 1, "no id breaks a line"
    assert lines[1].split()[:3] == ["1", "L\\x1b[2J", "90"] and "web\\x1b]0;owned\\x07" in lines[1]
    assert "Asked for a demo\\x1b[2K" in lines[1]
    assert lines[2].split()[1] == "L\\x07bell" and lines[3].split()[1] == "L\\x9b31m"
    assert lines[4].split()[1] == "L\\x0dover"


def test_top_leads_json_keeps_the_ids_exact(sqlite_url: str) -> None:
    _leads_with_escapes(sqlite_url)
    ran = run_leadval("leads", "top", "--db", sqlite_url, "--json")
    assert not TERMINAL_CONTROLS.search(ran.stdout), "JSON escapes them itself"
    leads = json.loads(ran.stdout.splitlines()[-1])["leads"]
    assert [lead["lead_id"] for lead in leads] == ESCAPE_IDS
    assert leads[0]["channel"] == "web\x1b]0;owned\x07" and leads[1]["expected_value"] == -5.0


def test_a_refused_import_names_escapes_visibly(sqlite_url: str, tmp_path: Path) -> None:
    """Control characters in ids and column names are refused by the import, and shown as escapes in the error."""
    header = ["lead_id", "created_at", "source_channel"]
    bad_id = _write_csv(tmp_path / "ids.csv", header, [["L\x1b[2J", "2025-03-01", "web"]])
    bad_column = _write_csv(tmp_path / "columns.csv", [*header, "\x1b[31mred"], [["L1", "2025-03-01", "web", "x"]])
    for path, shown in ((bad_id, "'L\\x1b[2J'"), (bad_column, "--map '\\x1b[31mred='")):
        ran = run_leadval("import", "--db", sqlite_url, "--table", "leads", str(path), check=False)
        assert ran.returncode == 1 and not TERMINAL_CONTROLS.search(ran.stderr), repr(ran.stderr)
        assert shown in ran.stderr, ran.stderr
