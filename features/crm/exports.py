"""Read a CRM export (CSV or Parquet) as it is: its own column names, text values for CSV, with notes on what
reading changed and file line numbers for messages.

CSV may be comma, semicolon or tab separated, UTF-8, gzipped or not. Columns at the end of a header that have no
name and no values (a trailing delimiter, as spreadsheets write it) are dropped, and the export says so in its
``notes``; an unnamed column holding values is an error, as is a row with another number of fields.
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from features.crm.problems import Problem, problem_report, show_value
from features.errors import InvalidInput

_DELIMITERS = (",", ";", "\t")


@dataclass(frozen=True)
class Export:
    """A file's rows as read, with its own column names; CSV values are text, Parquet keeps its types.

    ``notes`` say what reading changed that the user should know (unnamed empty columns dropped).
    """

    path: Path
    frame: pd.DataFrame
    delimiter: str | None = None
    notes: tuple[str, ...] = ()

    @cached_property
    def record_lines(self) -> np.ndarray:
        """The file line each data row starts on (header = line 1); read only when a message needs it."""
        return _record_lines(self.path, self.delimiter or ",")[0]

    def locate(self, rows: np.ndarray) -> list[str]:
        """How the user finds 0-based ``rows``: CSV line numbers (header = 1), Parquet row numbers from 1."""
        if self.delimiter is None:
            return [f"row {r + 1}" for r in rows]
        return [f"line {self.record_lines[r]}" for r in rows]


def read_export(path: Path) -> Export:
    """Read a CSV (comma, semicolon or tab separated, UTF-8, gzipped or not) or Parquet export.

    Unreadable files are an ``InvalidInput`` naming the file and what is wrong. Columns at the end of the
    header without a name are dropped, with a note, when they hold no values (in a CSV, rows may also leave
    them out altogether); an unnamed column holding values, or one before a named column, is an error.
    """
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    with path.open("rb") as handle:
        is_parquet = handle.read(4) == b"PAR1"
    if is_parquet:
        return _read_parquet(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        raise InvalidInput(f"{path.name} is not a Parquet file (it lacks the PAR1 signature)")
    return _read_csv(path)


def _read_parquet(path: Path) -> Export:
    try:
        frame = pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInput(f"{path.name} cannot be read as Parquet: {exc}") from None
    names = [str(c).strip() for c in frame.columns]
    unnamed = _trailing_unnamed(path, names)
    frame.columns = [name or f"_unnamed_{i}" for i, name in enumerate(names)]
    return _without_unnamed(Export(path, frame.reset_index(drop=True)), unnamed)


def _read_csv(path: Path) -> Export:
    header, delimiter, header_lines = _csv_header(path)
    unnamed = _trailing_unnamed(path, [name.strip() for name in header])
    named = header[: len(header) - len(unnamed)]
    export = _read_csv_as(path, delimiter, header, short_width=len(named) if unnamed else None)
    if export is None:  # no row has the unnamed columns: read the rows under the named ones
        export = _read_csv_as(path, delimiter, named, skip_lines=header_lines)
        return replace(export, notes=(_dropped(path, unnamed),))
    return _without_unnamed(export, unnamed)


def _read_csv_as(
    path: Path, delimiter: str, header: list[str], skip_lines: int = 0, short_width: int | None = None
) -> Export | None:
    """The CSV's rows as text columns named by ``header`` (unnamed ones ``_unnamed_<position>``).

    With ``skip_lines`` the file's first lines (its header) are skipped and ``header`` names the columns. A row
    with another number of fields than ``header`` makes an ``InvalidInput`` naming every such line, unless every
    row has ``short_width`` fields: then the answer is ``None``.
    """
    names = [name.strip() or f"_unnamed_{i}" for i, name in enumerate(header)]
    invalid: list[int] = []

    def stop_at_invalid(_row: object) -> str:
        invalid.append(1)
        return "error"

    try:
        table = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(column_names=names, skip_rows=skip_lines) if skip_lines else None,
            parse_options=pa_csv.ParseOptions(
                delimiter=delimiter, newlines_in_values=True, invalid_row_handler=stop_at_invalid
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.string() for name in (names if skip_lines else header)},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        if not invalid:
            raise InvalidInput(_unreadable(path, str(exc))) from None
        starts, widths = _record_lines(path, delimiter)
        if short_width is not None and len(widths) and (widths == short_width).all():
            return None
        raise InvalidInput(_field_count_report(path, delimiter, len(header), starts, widths)) from None
    frame = table.to_pandas()
    frame.columns = names
    return Export(path, frame, delimiter)


def _trailing_unnamed(path: Path, names: list[str]) -> list[int]:
    """Positions of the unnamed columns at the end of the header; an unnamed one before a named one is an error,
    as is a name given twice."""
    named = [i for i, name in enumerate(names) if name]
    end = named[-1] + 1 if named else 0
    gap = next((i for i in range(end) if not names[i]), None if named else 0)
    if gap is not None:
        raise InvalidInput(f"{path.name}: column {gap + 1} of the header has no name; name it in the header "
                           "(or delete the column) and try again")
    repeated = sorted({name for name in names if name and names.count(name) > 1})
    if repeated:
        raise InvalidInput(f"{path.name}: the header names {', '.join(map(repr, repeated))} more than once")
    return list(range(end, len(names)))


def _without_unnamed(export: Export, unnamed: list[int]) -> Export:
    """``export`` without its trailing unnamed columns, noted, or ``InvalidInput`` naming the first that holds a
    value, with how many rows do and the first one's line (CSV) or row number (Parquet)."""
    if not unnamed:
        return export
    for position in unnamed:
        values = export.frame.iloc[:, position]
        if pd.api.types.is_string_dtype(values.dtype) or values.dtype == object:
            held = (values.notna() & (values.astype("str").str.strip() != "")).to_numpy(dtype=bool)
        else:
            held = values.notna().to_numpy(dtype=bool)
        rows = np.flatnonzero(held)
        if len(rows):
            first = f"{export.locate(rows[:1])[0]} {show_value(values.iloc[rows[0]])}"
            count = (f"a value in 1 row ({first})" if len(rows) == 1
                     else f"values in {len(rows):,} rows (first: {first})")
            raise InvalidInput(f"{export.path.name}: column {position + 1} of the {_header(export)} has no name but "
                               f"holds {count}; name it in the {_header(export)} (or delete the column) and try again")
    note = _dropped(export.path, unnamed, _header(export))
    return replace(export, frame=export.frame.iloc[:, : unnamed[0]], notes=(*export.notes, note))


def _header(export: Export) -> str:
    return "schema" if export.delimiter is None else "header"


def _dropped(path: Path, unnamed: list[int], header: str = "header") -> str:
    """The note for dropped ``unnamed`` columns (0-based positions): ``x.csv: dropped column 38 (...)``."""
    first, last = unnamed[0] + 1, unnamed[-1] + 1
    columns = f"column {first}" if first == last else f"columns {first}-{last}"
    return f"{path.name}: dropped {columns} (no name in the {header}, no values)"


def _csv_header(path: Path) -> tuple[list[str], str, int]:
    try:
        with _open_text(path) as handle:
            first = next((line for line in handle if line.strip()), "")
            if not first:
                raise InvalidInput(f"{path.name} is empty; expected a header row with the column names")
            delimiter = max(_DELIMITERS, key=first.count) if any(d in first for d in _DELIMITERS) else ","
            handle.seek(0)
            reader = csv.reader(handle, delimiter=delimiter)
            header = next(r for r in reader if r)
    except UnicodeDecodeError:
        raise InvalidInput(_unreadable(path, "invalid UTF8")) from None
    except csv.Error as exc:
        raise InvalidInput(f"{path.name}: the header row cannot be read as CSV: {exc}") from None
    return header, delimiter, reader.line_num


def _open_text(path: Path) -> TextIO:
    """The CSV file as text; a gzipped one (``.gz``, as the CSV reader decides too) decompressed on the fly."""
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def _unreadable(path: Path, reason: str) -> str:
    if "UTF8" in reason or "UTF-8" in reason:
        return f"{path.name} is not UTF-8 text; save the export as CSV UTF-8 (or Parquet) and import it again"
    return f"{path.name} cannot be read as CSV: {reason}"


def _record_lines(path: Path, delimiter: str) -> tuple[np.ndarray, np.ndarray]:
    """Start line and field count of every data record, skipping blank lines as the CSV reader does."""
    starts, widths = [], []
    with _open_text(path) as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        previous, seen_header = 0, False
        for record in reader:
            start, previous = previous + 1, reader.line_num
            if not record:
                continue
            if seen_header:
                starts.append(start)
                widths.append(len(record))
            seen_header = True
    return np.asarray(starts, dtype=np.int64), np.asarray(widths, dtype=np.int64)


def _field_count_report(path: Path, delimiter: str, expected: int, starts: np.ndarray, widths: np.ndarray) -> str:
    bad = np.flatnonzero(widths != expected)
    problem = Problem(
        "(whole row)",
        f"{expected} fields separated by {delimiter!r}, as in the header",
        bad,
        tuple(f"has {w}" for w in widths[bad[:5]]),
    )
    return problem_report(path.name, [problem], lambda rows: [f"line {starts[r]}" for r in rows])
