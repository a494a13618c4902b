"""Load a real CRM export (CSV or Parquet) into the store: map its columns, validate every row, then upsert.

Import in dependency order: leads, activities, customers, orders (marketing_spend stands alone).
Activities must point at known leads, customers at known leads (or none) and orders at known customers,
in the database. ``leads.customer_id`` is not checked: leads come first, so their customers do not exist
yet when they are imported, and the schema does not enforce it either.

Validation runs before anything is written and, like the write, inside one transaction: a file with any
bad row raises ``InvalidInput`` naming the columns, counts and file lines, and the database is unchanged.
Rows are upserted on the primary key, so importing the same file twice changes nothing; rows whose stored
values already match are not written again.
"""

from __future__ import annotations

import csv
import gzip
import json
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from sqlalchemy import Connection, Engine, Table, func, select, tuple_

from features.crm.problems import Problem, problem_report
from features.crm.rows import column_problems, duplicate_keys, parse_rows, unknown_references
from features.crm.schema import CRM_TABLES, metadata
from features.crm.store import DEFAULT_CHUNK_ROWS, chunks, coerce_types, read_frame, upsert_frame
from features.errors import InvalidInput

LOOKUP_CHUNK = 5_000
"""Keys per ``IN (...)`` query when looking up referenced or existing rows (well under SQLite's 32,766)."""

SQLITE_IMPORT_CACHE_KIB = 65_536
"""SQLite page cache while importing (KiB, allocated only as used; the default is 2 MiB): index pages of a big
load stay in memory instead of being spilled and re-read, a third less write time for 1M rows (256 MiB: no better)."""

WHOLE_TABLE_FACTOR = 3
"""Read a table in one scan, instead of by key lists, when it has at most this many rows per key looked up."""

_DELIMITERS = (",", ";", "\t")


def crm_table(name: str) -> Table:
    """The importable table called ``name``, or ``InvalidInput`` listing the valid ones."""
    tables = {t.name: t for t in CRM_TABLES}
    if name not in tables:
        raise InvalidInput(f"unknown table {name!r}; expected one of: {', '.join(tables)}")
    return tables[name]


def parse_mapping(pairs: list[str], mapping_file: Path | None) -> dict[str, str]:
    """Export column -> leadval column, from ``their=our`` pairs and/or a TOML, JSON or two-column CSV file.

    Pairs win over the file. An empty target (``notes=``) skips that export column. Targets must be
    leadval column names; anything else, or a pair without ``=``, raises ``InvalidInput``.
    """
    mapping = _read_mapping_file(mapping_file) if mapping_file is not None else {}
    from_flags: dict[str, str] = {}
    for pair in pairs:
        their, sep, ours = pair.rpartition("=")
        their, ours = their.strip(), ours.strip()
        if not sep or not their:
            raise InvalidInput(f"--map {pair!r}: expected their_column=our_column (e.g. --map 'Order Total=amount')")
        if from_flags.get(their, ours) != ours:
            raise InvalidInput(f"--map maps {their!r} twice: onto {from_flags[their]!r} and {ours!r}")
        from_flags[their] = ours
    mapping.update(from_flags)
    _check_targets(mapping, "--map" if not mapping_file else f"--map / {mapping_file.name}")
    return mapping


def _read_mapping_file(path: Path) -> dict[str, str]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            loaded = tomllib.loads(path.read_text(encoding="utf-8"))
        elif suffix == ".json":
            loaded = json.loads(path.read_text(encoding="utf-8"))
        elif suffix == ".csv":
            loaded = _mapping_from_csv(path)
        else:
            raise InvalidInput(f"mapping file {path.name}: expected a .toml, .json or .csv file")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInput(f"mapping file {path.name} cannot be read: {exc}") from None
    except OSError as exc:
        raise InvalidInput(f"mapping file {path} cannot be opened: {exc.strerror}") from None
    if not isinstance(loaded, dict):
        raise InvalidInput(f"mapping file {path.name}: expected an object of their_column: our_column")
    bad = [k for k, v in loaded.items() if not isinstance(v, str)]
    if bad:
        raise InvalidInput(
            f"mapping file {path.name}: {', '.join(map(repr, bad))} must map to a column name (text), "
            "e.g. \"Order Total\" = \"amount\""
        )
    return {str(k).strip(): v.strip() for k, v in loaded.items()}


def _mapping_from_csv(path: Path) -> dict[str, str]:
    """Rows of ``their,our``; a first row whose second cell is not a leadval column is a header."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = [r for r in csv.reader(handle) if any(cell.strip() for cell in r)]
    wrong = [i + 1 for i, r in enumerate(rows) if len(r) != 2]
    if wrong:
        raise InvalidInput(
            f"mapping file {path.name}: expected 2 columns (their,our) on every row, not on rows {wrong[:5]}"
        )
    if rows and rows[0][1].strip() not in _known_columns() | {""}:
        rows = rows[1:]
    mapping: dict[str, str] = {}
    for their, ours in rows:
        if mapping.get(their.strip(), ours.strip()) != ours.strip():
            raise InvalidInput(f"mapping file {path.name} maps {their!r} twice")
        mapping[their.strip()] = ours.strip()
    return mapping


def _known_columns() -> set[str]:
    return {c.name for t in CRM_TABLES for c in t.columns}


def _check_targets(mapping: Mapping[str, str], where: str) -> None:
    unknown = sorted({ours for ours in mapping.values() if ours and ours not in _known_columns()})
    if unknown:
        raise InvalidInput(
            f"{where}: {', '.join(map(repr, unknown))} is not a leadval column; "
            f"expected one of: {', '.join(sorted(_known_columns()))} (or nothing, to skip the column)"
        )


@dataclass(frozen=True)
class Export:
    """A file's rows as read, with its own column names; CSV values are text, Parquet keeps its types."""

    path: Path
    frame: pd.DataFrame
    delimiter: str | None = None

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

    Unreadable files are an ``InvalidInput`` naming the file and what is wrong.
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
    frame.columns = [str(c).strip() for c in frame.columns]
    _check_header(path, list(frame.columns))
    return Export(path, frame.reset_index(drop=True))


def _read_csv(path: Path) -> Export:
    header, delimiter = _csv_header(path)
    invalid: list[int] = []

    def count_invalid(_row: object) -> str:
        invalid.append(1)
        return "skip"

    try:
        table = pa_csv.read_csv(
            path,
            parse_options=pa_csv.ParseOptions(
                delimiter=delimiter, newlines_in_values=True, invalid_row_handler=count_invalid
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise InvalidInput(_unreadable(path, str(exc))) from None
    if invalid:
        raise InvalidInput(_field_count_report(path, delimiter, len(header)))
    frame = table.to_pandas()
    frame.columns = [name.strip() for name in frame.columns]
    return Export(path, frame, delimiter)


def _csv_header(path: Path) -> tuple[list[str], str]:
    try:
        with _open_text(path) as handle:
            first = next((line for line in handle if line.strip()), "")
            if not first:
                raise InvalidInput(f"{path.name} is empty; expected a header row with the column names")
            delimiter = max(_DELIMITERS, key=first.count) if any(d in first for d in _DELIMITERS) else ","
            handle.seek(0)
            header = next(r for r in csv.reader(handle, delimiter=delimiter) if r)
    except UnicodeDecodeError:
        raise InvalidInput(_unreadable(path, "invalid UTF8")) from None
    except csv.Error as exc:
        raise InvalidInput(f"{path.name}: the header row cannot be read as CSV: {exc}") from None
    _check_header(path, [name.strip() for name in header])
    return header, delimiter


def _open_text(path: Path) -> TextIO:
    """The CSV file as text; a gzipped one (``.gz``, as the CSV reader decides too) decompressed on the fly."""
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def _check_header(path: Path, names: list[str]) -> None:
    if any(not name for name in names):
        raise InvalidInput(f"{path.name}: column {names.index('') + 1} of the header has no name")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidInput(f"{path.name}: the header names {', '.join(map(repr, repeated))} more than once")


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


def _field_count_report(path: Path, delimiter: str, expected: int) -> str:
    starts, widths = _record_lines(path, delimiter)
    bad = np.flatnonzero(widths != expected)
    problem = Problem(
        "(whole row)",
        f"{expected} fields separated by {delimiter!r}, as in the header",
        bad,
        tuple(f"has {w}" for w in widths[bad[:5]]),
    )
    return problem_report(path.name, [problem], lambda rows: [f"line {starts[r]}" for r in rows])


def _apply_mapping(frame: pd.DataFrame, mapping: Mapping[str, str], source: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """Export columns renamed (or dropped, for an empty target); entries for columns not in the file are ignored."""
    renamed = {c: mapping[c] for c in frame.columns if c in mapping}
    out = frame.drop(columns=[c for c, ours in renamed.items() if not ours])
    out = out.rename(columns={c: ours for c, ours in renamed.items() if ours})
    names = list(out.columns)
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        sources = {n: [c for c in frame.columns if renamed.get(c, c) == n] for n in clashes}
        detail = "; ".join(f"{n} from {', '.join(map(repr, s))}" for n, s in sources.items())
        raise InvalidInput(f"{source}: after mapping, several export columns have the same name: {detail}")
    return out, {c: ours for c, ours in renamed.items() if ours}


def validate_export(
    conn: Connection, table_name: str, path: Path, mapping: Mapping[str, str], now: pd.Timestamp | None = None
) -> pd.DataFrame:
    """The export's rows typed for ``table_name``, or ``InvalidInput`` naming every problem with its file lines.

    ``now`` (naive UTC, default the current time) bounds dates; foreign keys are looked up through ``conn``.
    """
    table = crm_table(table_name)
    export = read_export(Path(path))
    raw, renamed = _apply_mapping(export.frame, mapping, export.path.name)
    problems = column_problems(table, list(raw.columns), renamed)
    raw = raw[[c for c in raw.columns if c in table.c]]
    now = now if now is not None else pd.Timestamp.now(tz="UTC").tz_localize(None)
    rows, bad_values = parse_rows(table, raw, now)
    problems += bad_values
    problems += duplicate_keys(table, rows)
    problems += unknown_references(table, rows, partial(existing_keys, conn))
    if problems:
        raise InvalidInput(problem_report(export.path.name, problems, export.locate, renamed))
    return rows


def existing_keys(conn: Connection, table_name: str, column: str, values: np.ndarray) -> np.ndarray:
    """Those of ``values`` that ``table_name.column`` holds."""
    keys = pd.DataFrame({column: pd.Series(values, dtype=object)})
    return _stored(conn, metadata.tables[table_name], [column], keys)[column].to_numpy(dtype=object)


def load_rows(
    conn: Connection,
    table: Table,
    rows: pd.DataFrame,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: Callable[[int], object] | None = None,
) -> dict[str, int]:
    """Upsert validated ``rows`` in chunks on ``conn``, skipping rows stored with the same values already.

    Columns absent from ``rows`` keep their stored values; ``progress`` is called with each chunk's row
    count (e.g. a progress bar's ``update``). Returns inserted, updated and unchanged counts.
    """
    key = [c.name for c in table.primary_key.columns]
    stored = _stored(conn, table, list(rows.columns), rows[key])
    merged = rows[key].merge(stored, on=key, how="left", indicator=True, suffixes=("", "_stored"))
    present = (merged["_merge"] == "both").to_numpy()
    same = present.copy()
    for name in rows.columns.difference(key):
        same &= _equal(rows[name], merged[name])
    if progress is not None:
        progress(int(same.sum()))
    for chunk in chunks(rows[~same], chunk_rows):
        upsert_frame(conn, table, chunk)
        if progress is not None:
            progress(len(chunk))
    return {"inserted": int((~present).sum()), "updated": int((present & ~same).sum()), "unchanged": int(same.sum())}


def _stored(conn: Connection, table: Table, columns: list[str], keys: pd.DataFrame) -> pd.DataFrame:
    """Stored ``columns`` of the rows whose values in ``keys``' columns match a row of ``keys``.

    An empty table costs one count. A table with at most ``WHOLE_TABLE_FACTOR`` rows per key is streamed in
    one scan: cheaper than thousands of key lists, and what a planner without fresh statistics does for each
    list anyway. Larger tables are searched ``LOOKUP_CHUNK`` keys at a time. Only matching rows are kept.
    """
    stored = conn.execute(select(func.count()).select_from(table)).scalar_one()
    if keys.empty or stored == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    key = list(keys.columns)
    if stored <= WHOLE_TABLE_FACTOR * len(keys):
        scan = select(*(table.c[c] for c in columns)).execution_options(yield_per=LOOKUP_CHUNK * 10)
        parts = [
            coerce_types(pd.DataFrame.from_records(part, columns=columns), table).merge(keys, on=key)
            for part in conn.execute(scan).partitions()
        ]
    else:
        key_columns = [table.c[k] for k in key]
        keys = keys.astype(object).where(keys.notna(), None)
        parts = []
        for batch in chunks(keys, LOOKUP_CHUNK):
            if len(key_columns) == 1:
                where = key_columns[0].in_(batch.iloc[:, 0].tolist())
            else:
                where = tuple_(*key_columns).in_(list(batch.itertuples(index=False, name=None)))
            parts.append(read_frame(conn, table, columns, where))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def _equal(new: pd.Series, stored: pd.Series) -> np.ndarray:
    new, stored = new.reset_index(drop=True), stored.reset_index(drop=True)
    if pd.api.types.is_datetime64_any_dtype(new.dtype) and not pd.api.types.is_datetime64_any_dtype(stored.dtype):
        stored = pd.to_datetime(stored)
    same = (new == stored).fillna(False).to_numpy(dtype=bool)
    return same | (new.isna() & stored.isna()).to_numpy()


@contextmanager
def import_transaction(engine: Engine) -> Iterator[Connection]:
    """The one transaction of an import; on SQLite with a page cache of ``SQLITE_IMPORT_CACHE_KIB`` meanwhile."""
    with engine.begin() as conn:
        if conn.dialect.name != "sqlite":
            yield conn
            return
        before = conn.exec_driver_sql("PRAGMA cache_size").scalar()
        conn.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_IMPORT_CACHE_KIB}")
        try:
            yield conn
        finally:
            conn.exec_driver_sql(f"PRAGMA cache_size = {int(before)}")


def import_file(
    engine: Engine,
    table_name: str,
    path: Path,
    mapping: Mapping[str, str],
    progress: Callable[[int], object] | None = None,
) -> dict:
    """Validate ``path`` for ``table_name`` and load it in one transaction (upsert on the primary key).

    Returns the table, file, rows in the file and how many were inserted, updated or already unchanged.
    Any bad row raises ``InvalidInput`` and nothing is written. The schema must exist (``create_schema``).
    ``progress`` is called with the number of rows each written chunk (or the unchanged rows) accounts for.
    """
    table = crm_table(table_name)
    with import_transaction(engine) as conn:
        rows = validate_export(conn, table_name, Path(path), mapping)
        counts = load_rows(conn, table, rows, progress=progress)
    return {"table": table.name, "file": str(path), "rows": len(rows), **counts}
