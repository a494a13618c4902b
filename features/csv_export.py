"""CSV files for spreadsheets: text cells that a spreadsheet would run as a formula are written as text.

A cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return can be taken for a formula when the
file is opened in Excel, LibreOffice or Google Sheets (CSV injection: ``=HYPERLINK(...)`` as a customer id).
As OWASP advises, such text cells, and such column names, get a leading ``'``. Only the file changes: the
values in the database stay as they were imported. Numbers, dates and missing values are written as they are,
negative numbers too. Lines end in CRLF, as RFC 4180 has it; Python's CSV writer then also quotes a cell holding
a lone carriage return, which it writes bare under ``\n`` line ends and which spreadsheets take for a new row.

References
----------
OWASP, "CSV Injection", https://owasp.org/www-community/attacks/CSV_Injection
Y. Shafranovich, "Common Format and MIME Type for Comma-Separated Values (CSV) Files", RFC 4180, 2005.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
"""What a text cell may not start with in an exported CSV (OWASP's list)."""


def neutralised_cell(value: Any) -> Any:
    """``value`` with a leading ``'`` if it is text a spreadsheet could run as a formula; anything else as it is."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_PREFIXES) else value


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells and column names cannot start a formula; numeric columns untouched."""
    out = frame.rename(columns=neutralised_cell)
    for position in range(out.shape[1]):
        values = out.iloc[:, position]
        if isinstance(values.dtype, pd.CategoricalDtype):
            values = values.astype(object)
        if pd.api.types.is_object_dtype(values.dtype) or pd.api.types.is_string_dtype(values.dtype):
            out.isetitem(position, values.map(neutralised_cell, na_action="ignore"))
    return out


def write_csv(frame: pd.DataFrame, path: Path, **to_csv: Any) -> None:
    """Write ``frame`` to ``path`` as CSV (no index, CRLF) with formula-like text neutralised; ``to_csv``: pandas's."""
    neutralise_formulas(frame).to_csv(path, index=False, lineterminator="\r\n", **to_csv)
