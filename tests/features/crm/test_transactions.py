"""Transactions for RFM: files validated where they enter, and the CRM's orders on SQLite and PostgreSQL."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from features.crm.imports import import_file
from features.crm.schema import customers, orders
from features.crm.store import connect, create_schema, insert_frame
from features.crm.transactions import read_acquisition_channels, read_crm_orders, read_transactions
from features.errors import InvalidInput
from features.rfm import rfm_summary


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "orders.csv"
    path.write_text(text)
    return path


def test_reads_and_normalises_a_transactions_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "cust,when,value\n007,19970101,29.33\n007,1997-01-18T10:00:00+02:00,29.73\n8,1997-02-01,0\n")
    tx = read_transactions(path, "cust", "when", "value", observation_end="1997-06-30")
    assert list(tx.columns) == ["customer_id", "ordered_at", "amount"]
    assert tx["customer_id"].tolist() == ["007", "007", "8"]  # ids stay strings, leading zeros kept
    assert tx["ordered_at"].tolist() == [pd.Timestamp("1997-01-01"), pd.Timestamp("1997-01-18 08:00"),
                                         pd.Timestamp("1997-02-01")]
    assert tx["amount"].tolist() == [29.33, 29.73, 0.0]


def test_parquet_without_amounts(tmp_path: Path) -> None:
    path = tmp_path / "orders.parquet"
    pd.DataFrame({"c": ["a", "a"], "d": pd.to_datetime(["2024-01-01", "2024-01-09"])}).to_parquet(path)
    tx = read_transactions(path, "c", "d")
    assert rfm_summary(tx, "2024-01-31", amount_col=None)["frequency"].tolist() == [1]


@pytest.mark.parametrize(
    ("text", "column", "lines", "words"),
    [
        ("c,d,a\nx,2024-01-01,5\ny,2024-13-45,5\nz,yesterday,5\n", "d", ["line 3 '2024-13-45'", "line 4 'yesterday'"],
         "expected a date-time in ISO 8601"),
        ("c,d,a\nx,2024-01-01,5\ny,2024-01-02,-3\n", "a", ["line 3 '-3'"], "expected a number >= 0"),
        ("c,d,a\nx,2024-01-01,five\n", "a", ["line 2 'five'"], "expected a number;"),
        ("c,d,a\nx,2024-01-01,5\n,2024-01-02,5\n", "c", ["line 3 (empty)"], "expected a value (required)"),
        ("c,d,a\nx,2024-01-01,5\ny,2024-07-01 09:00,5\n", "d", ["line 3 '2024-07-01 09:00'"],
         "expected an order on or before the observation end 2024-06-30"),
        ("c,d,a\nx,2024-01-01,5\ny,2999-01-01,5\n", "d", ["line 3 '2999-01-01'"],
         "expected a date-time no later than a day after now"),
        ("c,date,a\nx,2024-01-01,5\n", "d", [], "column is missing; the file has c, date, a"),
    ],
)
def test_bad_transactions_name_column_and_lines(
    tmp_path: Path, text: str, column: str, lines: list[str], words: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        read_transactions(_write(tmp_path, text), "c", "d", "a", observation_end="2024-06-30")
    first, *problems = str(info.value).splitlines()
    assert first.startswith("orders.csv: 1 problem") and first.endswith("; the file was not used")
    assert len(problems) == 1 and problems[0].startswith(f"  - {column}: {words}"), problems
    assert all(line in problems[0] for line in lines), problems


def test_bad_values_are_named_as_the_import_names_them(sqlite_url: str, tmp_path: Path) -> None:
    """The same bad orders file: the import and the transactions reader report the same problems and lines."""
    engine = connect(sqlite_url)
    create_schema(engine)
    with engine.begin() as conn:
        insert_frame(conn, customers, pd.DataFrame({"customer_id": ["C1"], "created_at": [pd.Timestamp("2024-01-01")]}))
    path = tmp_path / "orders.csv"
    path.write_text("order_id,customer_id,ordered_at,amount\nO1,C1,2024-01-05,5\n\nO2,C1,31/01/2024,-3\n"
                    "O3,C1,2024-02-01,12 EUR\n")
    with pytest.raises(InvalidInput) as imported:
        import_file(engine, "orders", path, {})
    with pytest.raises(InvalidInput) as read:
        read_transactions(path, "customer_id", "ordered_at", "amount")
    problems = str(read.value).splitlines()[1:]
    assert problems == str(imported.value).splitlines()[1:]
    assert [p.split(":")[0] for p in problems] == ["  - ordered_at", "  - amount", "  - amount"]
    assert "line 4 '31/01/2024'" in problems[0] and "line 4 '-3'" in problems[2] and "line 5 '12 EUR'" in problems[1]
    engine.dispose()


def test_files_the_import_reads_are_transactions_files(tmp_path: Path) -> None:
    """Semicolons, gzip and Parquet as in the import; a Parquet file's bad rows are named by row number."""
    path = tmp_path / "orders.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("Kunde;Datum;Betrag\n007;19970101;29.33\n8;1997-01-02T10:00:00Z;1.5\n")
    tx = read_transactions(path, "Kunde", "Datum", "Betrag")
    assert tx["customer_id"].tolist() == ["007", "8"] and tx["amount"].tolist() == [29.33, 1.5]
    assert tx["ordered_at"].tolist() == [pd.Timestamp("1997-01-01"), pd.Timestamp("1997-01-02 10:00")]
    parquet = tmp_path / "orders.parquet"
    pd.DataFrame({"c": [1, 2], "d": [19970101, 19970102], "a": [1.0, -2.0]}).to_parquet(parquet)
    with pytest.raises(InvalidInput, match=r"orders.parquet: 1 problem in 1 row(?s:.*)  - a: expected a number >= 0; "
                                           r"1 row: row 2 '-2.0'"):
        read_transactions(parquet, "c", "d", "a")
    assert read_transactions(parquet, "c", "d")["ordered_at"].tolist() == [pd.Timestamp("1997-01-01"),
                                                                            pd.Timestamp("1997-01-02")]


def test_orders_on_the_observation_end_day_are_kept(tmp_path: Path) -> None:
    tx = read_transactions(_write(tmp_path, "c,d\nx,2024-06-30 23:59\n"), "c", "d", observation_end="2024-06-30")
    assert len(tx) == 1


def test_crm_orders_up_to_the_observation_end(db_url: str) -> None:
    engine = connect(db_url)
    create_schema(engine)
    with engine.begin() as conn:
        insert_frame(conn, customers, pd.DataFrame({
            "customer_id": ["a", "b"], "created_at": pd.to_datetime(["2024-01-01", "2024-01-02"]),
            "acquisition_channel": ["email", None],
        }))
        insert_frame(conn, orders, pd.DataFrame({
            "order_id": ["o1", "o2", "o3", "o4"], "customer_id": ["a", "a", "b", "a"],
            "ordered_at": pd.to_datetime(["2024-01-01", "2024-01-31 23:00", "2024-01-02", "2024-02-01"], format="ISO8601"),
            "amount": [10.0, 20.0, 5.0, 7.0],
        }))
    tx = read_crm_orders(engine, "2024-01-31")
    assert list(tx.columns) == ["customer_id", "ordered_at", "amount"]
    assert sorted(tx["amount"].tolist()) == [5.0, 10.0, 20.0]
    rfm = rfm_summary(tx, "2024-01-31").set_index("customer_id")
    assert rfm.loc["a", "frequency"] == 1 and rfm.loc["a", "monetary_value"] == 20.0
    channels = read_acquisition_channels(engine).set_index("customer_id")["acquisition_channel"]
    assert channels["a"] == "email" and pd.isna(channels["b"])
    engine.dispose()
