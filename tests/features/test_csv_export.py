"""CSV exports: formula-like text written as text (OWASP's CSV injection advice), everything else as it is."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.csv_export import FORMULA_PREFIXES, neutralise_formulas, write_csv


def test_only_text_cells_and_names_that_could_start_a_formula_change() -> None:
    frame = pd.DataFrame({
        "customer_id": pd.Series(['=HYPERLINK("http://x")', "@SUM(1)", "+1+1", "-2", "\tX", "\rY", "C1", None],
                                 dtype="str"),
        "clv": [-1.5, 0.0, 2.0, -3e9, np.nan, 1.0, 2.0, 3.0],
        "orders": np.array([-2, 0, 1, 2, 3, 4, 5, 6], dtype="int64"),
        "segment": pd.Categorical(["-lapsed", "loyal"] * 4),
        "note": ["=1", 5, -7, None, "ok", "@x", 1.5, "-"],  # mixed: only the text is touched
        "last_order_at": pd.Timestamp("2025-03-01"),
        "=cmd": 1,
    })
    out = neutralise_formulas(frame)
    assert out["customer_id"].tolist()[:7] == ["'=HYPERLINK(\"http://x\")", "'@SUM(1)", "'+1+1", "'-2", "'\tX", "'\rY",
                                               "C1"]
    assert pd.isna(out["customer_id"].iloc[7])
    pd.testing.assert_series_equal(out["clv"], frame["clv"])
    pd.testing.assert_series_equal(out["orders"], frame["orders"])
    pd.testing.assert_series_equal(out["last_order_at"], frame["last_order_at"])
    assert out["segment"].tolist() == ["'-lapsed", "loyal"] * 4
    assert out["note"].tolist() == ["'=1", 5, -7, None, "ok", "'@x", 1.5, "'-"]
    assert list(out.columns) == ["customer_id", "clv", "orders", "segment", "note", "last_order_at", "'=cmd"]
    assert frame["customer_id"].iloc[0] == '=HYPERLINK("http://x")', "the frame given is left as it was"


def test_the_file_has_negative_numbers_as_numbers_and_formulas_as_text(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    write_csv(pd.DataFrame({"id": ["-2", "=1+1", "L1"], "delta": [-2.5, -1.0, 3.0], "n": [-2, 0, 7]}), path)
    with path.open(newline="") as handle:
        assert list(csv.reader(handle)) == [["id", "delta", "n"], ["'-2", "-2.5", "-2"], ["'=1+1", "-1.0", "0"],
                                            ["L1", "3.0", "7"]]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(cells=st.lists(st.one_of(st.none(), st.text(max_size=8),
                                st.sampled_from(["=", "+", "-", "@", "\t", "\r"]).flatmap(
                                    lambda head: st.text(max_size=6).map(lambda tail: head + tail))),
                      min_size=1, max_size=20))
def test_no_text_cell_starts_a_formula_and_the_value_is_recoverable(cells: list[str | None], tmp_path_factory) -> None:
    """Read back as the spreadsheet reads it: no cell starts with a formula prefix; dropping the added ``'``
    gives the value back exactly."""
    path = tmp_path_factory.mktemp("csv") / "cells.csv"
    write_csv(pd.DataFrame({"value": pd.Series(cells, dtype="object")}), path)
    with path.open(newline="", encoding="utf-8") as handle:
        read = [row[0] for row in csv.reader(handle)][1:]
    assert len(read) == len(cells), "one row per cell: no text breaks a line"
    for given_, written in zip(cells, read):
        assert not written.startswith(FORMULA_PREFIXES)
        if given_ is None:
            assert written == ""
        elif given_.startswith(FORMULA_PREFIXES):
            assert written == "'" + given_
        else:
            assert written == given_
