"""Importing experiment assignments: good rows load, bad ones are named by row and field and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine

from features.crm import schema
from features.crm.imports import import_file
from features.crm.store import connect, create_schema, insert_frame, read_frame
from features.errors import InvalidInput

HEADER = "experiment,variant,lead_id,assigned_at\n"


def crm(url: str) -> Engine:
    """A CRM with two leads."""
    engine = connect(url)
    create_schema(engine)
    with engine.begin() as conn:
        insert_frame(conn, schema.leads, pd.DataFrame({
            "lead_id": ["L1", "L2"], "created_at": [pd.Timestamp("2025-01-02")] * 2, "source_channel": ["email"] * 2}))
    return engine


def write(folder: Path, text: str) -> Path:
    path = folder / "assignments.csv"
    path.write_text(text, encoding="utf-8", newline="")
    return path


def test_assignments_load_and_reload_unchanged(sqlite_url: str, tmp_path: Path) -> None:
    engine = crm(sqlite_url)
    path = write(tmp_path, HEADER + "subject,control,L1,2025-01-02T10:00:00\nsubject,B,L2,2025-01-03\n")
    assert import_file(engine, "experiment_assignments", path, {})["inserted"] == 2
    assert import_file(engine, "experiment_assignments", path, {})["unchanged"] == 2
    rows = read_frame(engine, schema.experiment_assignments).sort_values("lead_id")
    assert rows["variant"].tolist() == ["control", "B"]
    assert rows["assigned_at"].tolist() == [pd.Timestamp("2025-01-02 10:00"), pd.Timestamp("2025-01-03")]


@pytest.mark.parametrize(("text", "field", "line", "words"), [
    (HEADER + "subject,control,L1,2025-01-02\nsubject,B,L404,2025-01-02\n", "lead_id", 3, "exists in leads"),
    (HEADER + "subject,control,L1,2025-01-02\nsubject,,L2,2025-01-02\n", "variant", 3, "a value (required)"),
    (HEADER + "subject,control,L1,yesterday\n", "assigned_at", 2, "ISO 8601"),
    (HEADER + "subject,control,L1,2025-01-02\nsubject,B,L1,2025-01-03\n", "(experiment, lead_id)", 2,
     "once in the file"),
    ("experiment,variant,lead_id\nsubject,control,L1\n", "assigned_at", None, "required column is missing"),
], ids=["unknown-lead", "empty-variant", "bad-time", "lead-twice-in-one-experiment", "missing-column"])
def test_bad_assignments_are_named_and_nothing_is_written(
    sqlite_url: str, tmp_path: Path, text: str, field: str, line: int | None, words: str
) -> None:
    engine = crm(sqlite_url)
    with pytest.raises(InvalidInput) as caught:
        import_file(engine, "experiment_assignments", write(tmp_path, text), {})
    message = str(caught.value)
    assert field in message and words in message, message
    if line is not None:
        assert f"line {line}" in message or f"lines {line}" in message, message
    assert read_frame(engine, schema.experiment_assignments).empty
