"""The building blocks of the report page: numbers formatted as the page shows them, and tables of cells.

Every text here is plain: the Jinja2 template escapes it. Only a chart's SVG is passed on as markup.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from markupsafe import Markup

MISSING = "\u2013"
"""How the page shows a missing value: an en dash."""


def fmt(value: Any, unit: str) -> str:
    """A number as the page shows it: thousands separators, percentages, ratios with x; missing as a dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or value is pd.NaT:
        return MISSING
    if unit in ("text", "label"):
        return str(value)
    if unit == "date":
        return pd.Timestamp(value).date().isoformat()
    number = float(value)
    if unit == "count":
        return f"{number:,.0f}"
    if unit == "money":
        return f"{number:,.0f}" if abs(number) >= 1000 else f"{number:,.2f}"
    if unit == "percent":
        return f"{100 * number:,.1f}%"
    if unit == "small_percent":
        return f"{100 * number:,.2f}%"
    if unit == "ratio":
        return f"{number:,.2f}\u00d7"
    if unit in ("rate", "probability"):
        return f"{number:,.2f}"
    if unit == "decimal":
        return f"{number:,.1f}"
    raise ValueError(f"unknown unit {unit!r}")


@dataclass(frozen=True)
class Cell:
    """A table cell or header: its text, its CSS class and, for a target's status, the badge to show it in."""

    text: str
    css: str
    badge: str = ""


@dataclass(frozen=True)
class Row:
    """A table row; ``css`` is the row's class attribute (None: no attribute)."""

    cells: list[Cell]
    css: str | None = None


@dataclass(frozen=True)
class Table:
    """A table as the template draws it; without rows, the template says there is no data."""

    header: list[Cell]
    rows: list[Row]


Column = tuple[str, str, str]
"""A table column: frame column, header, unit."""

CELL_CLASSES: Mapping[str, str] = {"text": "txt", "label": "txt nowrap", "date": "txt nowrap"}


def table_of(frame: pd.DataFrame, columns: Sequence[Column],
           row_class: Callable[[Mapping], str] | None = None) -> Table:
    """``frame`` as a table of ``columns``, every value formatted by ``fmt``; ``row_class`` styles a row."""
    header = [Cell(title, CELL_CLASSES.get(unit, "num")) for _, title, unit in columns]
    rows = [Row([Cell(fmt(row.get(column), unit), CELL_CLASSES.get(unit, "num")) for column, _, unit in columns],
                row_class(row) if row_class else None)
            for row in frame.to_dict("records")]
    return Table(header, rows)


def safe_svg(chart: str) -> Markup:
    """A chart's SVG as markup the template passes on: matplotlib escapes the text it draws into it."""
    return Markup(chart)
