"""Headers of real exports: unnamed empty columns at the end (a trailing delimiter) are dropped with a note;
an unnamed column holding data, or one before a named column, stays an error naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from features.crm import schema
from features.crm.exports import read_export
from features.crm.imports import import_file
from features.crm.store import connect, read_frame
from features.crm.transactions import read_transactions
from features.errors import InvalidInput
from tests.features.crm.test_imports import ORDERS, crm, snapshot, write
from tests.leadval_cli import run_leadval

TRAILING = "order_id,customer_id,ordered_at,amount,\n"


@pytest.mark.parametrize(("header", "rows", "dropped"), [
    (TRAILING, "O2,C1,2025-03-01,5,\nO3,C2,2025-03-02,6,\n", "column 5"),
    (TRAILING, "O2,C1,2025-03-01,5,  \nO3,C2,2025-03-02,6,\"\"\n", "column 5"),
    ("order_id,customer_id,ordered_at,amount,, \n", "O2,C1,2025-03-01,5,,\nO3,C2,2025-03-02,6,,\n", "columns 5-6"),
    (TRAILING, "O2,C1,2025-03-01,5\nO3,C2,2025-03-02,6\n", "column 5"),
    ("\n" + TRAILING.replace(",", ";"), "O2;C1;2025-03-01;5\n\nO3;C2;2025-03-02;6\n", "column 5"),
], ids=["every-row-ends-with-a-comma", "blank-cells", "two-unnamed", "only-the-header", "semicolons-blank-lines"])
def test_trailing_unnamed_empty_columns_are_dropped_with_a_note(
    sqlite_url: str, tmp_path: Path, header: str, rows: str, dropped: str
) -> None:
    engine = crm(sqlite_url)
    result = import_file(engine, "orders", write(tmp_path, "orders.csv", header + rows), {})
    assert result["inserted"] == 2
    assert result["notes"] == [f"orders.csv: dropped {dropped} (no name in the header, no values)"]
    stored = read_frame(engine, schema.orders).set_index("order_id")
    assert stored.loc["O3", "amount"] == 6.0 and stored.loc["O3", "customer_id"] == "C2"


def test_bad_values_keep_their_lines_when_rows_leave_the_unnamed_columns_out(db_url: str, tmp_path: Path) -> None:
    engine = crm(db_url)
    before = snapshot(engine)
    text = "\n" + TRAILING + 'O2,C1,2025-03-01,5\n\nO3,"C\n1",2025-03-01,5\nO4,C1,2025-03-01,-5\n'
    with pytest.raises(InvalidInput) as info:
        import_file(engine, "orders", write(tmp_path, "orders.csv", text), {})
    assert "line 5 'C\\n1'" in str(info.value) and "line 7 '-5'" in str(info.value)
    assert snapshot(engine) == before


@pytest.mark.parametrize(("text", "words"), [
    (TRAILING + "O2,C1,2025-03-01,5,\nO3,C1,2025-03-01,6,call back\n",
     ("orders.csv: column 5 of the header has no name but holds a value in 1 row (line 3 'call back'); name it in "
      "the header (or delete the column) and try again")),
    (TRAILING + "O2,C1,2025-03-01,5,x\nO3,C1,2025-03-01,6,y\n",
     "column 5 of the header has no name but holds values in 2 rows (first: line 2 'x')"),
    ("order_id,,customer_id,ordered_at,amount\nO2,,C1,2025-03-01,5\n",
     "orders.csv: column 2 of the header has no name; name it in the header (or delete the column) and try again"),
    (TRAILING + "O2,C1,2025-03-01,5,\nO3,C1,2025-03-01,6\n",
     "expected 5 fields separated by ',', as in the header; 1 row: line 3 has 4"),
], ids=["unnamed-with-a-value", "unnamed-with-values", "unnamed-before-named", "rows-differ"])
def test_unnamed_columns_holding_data_are_errors(sqlite_url: str, tmp_path: Path, text: str, words: str) -> None:
    engine = crm(sqlite_url)
    before = snapshot(engine)
    with pytest.raises(InvalidInput) as info:
        import_file(engine, "orders", write(tmp_path, "orders.csv", text), {})
    assert words in str(info.value)
    assert snapshot(engine) == before


def test_parquet_unnamed_empty_columns_are_dropped_and_full_ones_refused(tmp_path: Path) -> None:
    frame = pd.DataFrame({"order_id": ["P1", "P2"], "amount": [1.0, 2.0]})
    frame.assign(**{"": [None, None]}).to_parquet(tmp_path / "empty.parquet")
    export = read_export(tmp_path / "empty.parquet")
    assert list(export.frame.columns) == ["order_id", "amount"]
    assert export.notes == ("empty.parquet: dropped column 3 (no name in the schema, no values)",)
    frame.assign(**{"": [None, 4.5]}).to_parquet(tmp_path / "full.parquet")
    with pytest.raises(InvalidInput, match=r"column 3 of the schema has no name but holds a value in 1 row "
                                           r"\(row 2 '4.5'\)"):
        read_export(tmp_path / "full.parquet")


def test_transactions_files_with_a_trailing_comma_are_read(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("c,d,a,\nx,1997-01-01,5,\ny,1997-01-02,6,\n")
    assert read_transactions(path, "c", "d", "a")["amount"].tolist() == [5.0, 6.0]


def test_a_trailing_comma_export_loads_on_both_databases(db_url: str, tmp_path: Path) -> None:
    engine = crm(db_url)
    result = import_file(engine, "orders", write(tmp_path, "orders.csv", TRAILING + "O2,C1,2025-03-01,5,\n"), {})
    assert result["inserted"] == 1 and len(result["notes"]) == 1


def test_cli_prints_the_note_on_stderr_and_in_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    crm(url).dispose()
    path = write(tmp_path, "orders.csv", TRAILING + "O2,C1,2025-03-01,5,\n")
    result = run_leadval("import", "--db", url, "--table", "orders", str(path), "--json")
    note = "orders.csv: dropped column 5 (no name in the header, no values)"
    assert result.stderr.splitlines() == [f"note: {note}"]
    assert result.stdout.startswith("Imported 1 rows into orders")
    assert json.loads(result.stdout.strip().splitlines()[-1])["notes"] == [note]
    assert len(read_frame(connect(url), schema.orders)) == 2
    assert not run_leadval("import", "--db", url, "--table", "orders", str(write(tmp_path, "o.csv", ORDERS))).stderr
