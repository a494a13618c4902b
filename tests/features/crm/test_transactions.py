"""Transactions for RFM: files validated where they enter, and the CRM's orders on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.crm.store import connect, create_schema, insert_frame
from features.errors import InvalidInput
from features.rfm import rfm_summary
from features.crm.schema import customers, orders
from features.crm.transactions import read_acquisition_channels, read_crm_orders, read_transactions


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
    ("text", "message"),
    [
        ("c,d,a\nx,2024-01-01,5\ny,2024-13-45,5\nz,yesterday,5\n", r"d: row\(s\) 2, 3 are not dates"),
        ("c,d,a\nx,2024-01-01,5\ny,2024-01-02,-3\n", r"a: row\(s\) 2 are negative"),
        ("c,d,a\nx,2024-01-01,five\n", r"a: row\(s\) 1 are not numbers"),
        ("c,d,a\nx,2024-01-01,5\n,2024-01-02,5\n", r"c: row\(s\) 2 have no customer id"),
        ("c,d,a\nx,2024-01-01,5\ny,2024-07-01 09:00,5\n", r"d: row\(s\) 2 are after the observation end 2024-06-30"),
        ("c,date,a\nx,2024-01-01,5\n", r"missing column\(s\) \['d'\]"),
    ],
)
def test_bad_transactions_name_column_and_rows(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        read_transactions(_write(tmp_path, text), "c", "d", "a", observation_end="2024-06-30")


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
