"""Load a real CRM export (CSV or Parquet) into the store: map its columns, validate every row, then upsert.

Import in dependency order: leads, activities, customers, orders (marketing_spend stands alone), then
experiment_assignments. Activities and experiment assignments must point at known leads, customers at known leads
(or none) and orders at known customers, in the database. ``leads.customer_id`` is not checked: leads come first, so their customers do not exist
yet when they are imported, and the schema does not enforce it either.

Validation runs before anything is written and, like the write, inside one transaction: a file with any
bad row raises ``InvalidInput`` naming the columns, counts and file lines, and the database is unchanged.
Values must be plausible as well as storable (``features.crm.rules.Plausibility``: dates from 1990, or
``dates_from``, to a day after now; amounts of money up to ``max_amount``; text without control characters).
Rows are upserted on the primary key, so importing the same file twice changes nothing; rows whose stored
values already match are not written again.
Reading the file is ``features.crm.exports``.
"""

from __future__ import annotations

import csv
import json
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, Table, func, select, tuple_

from features.crm.exports import Export, read_export
from features.crm.problems import problem_report
from features.crm.rows import duplicate_keys, parse_rows, unknown_references
from features.crm.rules import EARLIEST_DATE, MAX_AMOUNT, Plausibility, column_problems
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


def import_plausibility(
    now: pd.Timestamp | None = None, dates_from: date | datetime | str | None = None, max_amount: float | None = None
) -> Plausibility:
    """The import's plausibility bounds: dates from ``dates_from`` (default 1990-01-01) to a day after ``now``
    (naive UTC, default the current time), amounts of money up to ``max_amount`` (default 1e9)."""
    if max_amount is not None and not (np.isfinite(max_amount) and max_amount >= 0):
        raise InvalidInput(f"--max-amount {max_amount}: expected a finite number >= 0")
    return Plausibility(
        now=now if now is not None else pd.Timestamp.now(tz="UTC").tz_localize(None),
        dates_from=pd.Timestamp(dates_from) if dates_from is not None else EARLIEST_DATE,
        max_amount=float(max_amount) if max_amount is not None else MAX_AMOUNT,
        dates_from_advice="older dates load with --allow-dates-from YYYY-MM-DD",
        max_amount_advice="larger amounts load with --max-amount",
    )


def validate_export(
    conn: Connection, table_name: str, path: Path, mapping: Mapping[str, str],
    plausibility: Plausibility | None = None,
) -> pd.DataFrame:
    """The export's rows typed for ``table_name``, or ``InvalidInput`` naming every problem with its file lines.

    ``plausibility`` defaults to :func:`import_plausibility`'s defaults; foreign keys are looked up through ``conn``.
    """
    return _validated(conn, table_name, read_export(Path(path)), mapping, plausibility)


def _validated(
    conn: Connection, table_name: str, export: Export, mapping: Mapping[str, str], plausibility: Plausibility | None
) -> pd.DataFrame:
    table = crm_table(table_name)
    raw, renamed = _apply_mapping(export.frame, mapping, export.path.name)
    problems = column_problems(table, list(raw.columns), renamed)
    raw = raw[[c for c in raw.columns if c in table.c]]
    rows, bad_values = parse_rows(table, raw, plausibility or import_plausibility())
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
    plausibility: Plausibility | None = None,
) -> dict:
    """Validate ``path`` for ``table_name`` and load it in one transaction (upsert on the primary key).

    Returns the table, file, rows in the file, how many were inserted, updated or already unchanged, and
    ``notes`` on reading the file (a list of sentences, empty when there is nothing to say). Any bad row
    raises ``InvalidInput`` and nothing is written. The schema must exist (``create_schema``). ``progress``
    is called with the number of rows each written chunk (or the unchanged rows) accounts for;
    ``plausibility`` defaults to :func:`import_plausibility`'s.
    """
    table = crm_table(table_name)
    with import_transaction(engine) as conn:
        export = read_export(Path(path))
        rows = _validated(conn, table_name, export, mapping, plausibility)
        counts = load_rows(conn, table, rows, progress=progress)
    return {"table": table.name, "file": str(path), "rows": len(rows), **counts, "notes": list(export.notes)}
