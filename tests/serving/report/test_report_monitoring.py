"""The report's monitoring section: the latest ``leadval monitor`` run and the track record, from ``monitoring_runs``."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from features.crm import schema
from features.crm.store import connect, create_schema
from serving.cli.app import app

RUNNER = CliRunner()


def _row(run: str, as_of: str, model: str, check: str, status: str, value: float | None = None,
         warn: float | None = None, alert: float | None = None) -> dict:
    return {"run_id": run, "checked_at": datetime.fromisoformat(as_of), "as_of": datetime.fromisoformat(as_of),
            "model": model, "model_version": "1" if model == "lead-scoring" else None, "check": check,
            "status": status, "value": value, "warn": warn, "alert": alert, "detail": f"{check} as of {as_of}"}


def _report(url: str, out: Path) -> dict:
    result = RUNNER.invoke(app, ["report", "--db", url, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_without_monitoring_the_section_says_how_to_start(crm_url: str, tmp_path: Path) -> None:
    payload = _report(crm_url, tmp_path / "r.html")
    assert payload["monitoring"] == []
    assert "No monitoring yet: run leadval monitor" in (tmp_path / "r.html").read_text()


def test_the_latest_run_and_the_track_record_are_shown(crm_url: str, tmp_path: Path) -> None:
    rows = [
        _row("m1", "2026-03-01", "lead-scoring", "realized_auc", "ok", 0.86, 0.82, 0.77),
        _row("m1", "2026-03-01", "lead-scoring", "overall", "ok"),
        _row("m1", "2026-03-01", "all", "overall", "ok"),
        _row("m2", "2026-06-01", "lead-scoring", "realized_auc", "alert", 0.70, 0.82, 0.77),
        _row("m2", "2026-06-01", "lead-scoring", "input_drift:country", "ok", 0.02, 0.1, 0.25),
        _row("m2", "2026-06-01", "lead-scoring", "overall", "alert"),
        _row("m2", "2026-06-01", "all", "overall", "alert"),
        _row("m3", "2026-09-01", "all", "overall", "ok"),  # after the report's window: left out
    ]
    engine = connect(crm_url)
    create_schema(engine)
    with engine.begin() as conn:
        conn.execute(schema.monitoring_runs.delete())
        conn.execute(schema.monitoring_runs.insert(), rows)
    engine.dispose()
    payload = _report(crm_url, tmp_path / "r.html")
    assert [(r["run_id"], r["check"]) for r in payload["monitoring"]][:3] == [
        ("m1", "overall"), ("m1", "overall"), ("m1", "realized_auc")]
    assert {r["run_id"] for r in payload["monitoring"]} == {"m1", "m2"}
    page = (tmp_path / "r.html").read_text()
    section = page[page.index('<section id="monitoring">'):]
    section = section[:section.index("</section>")]
    assert "as of 2026-06-01: <strong>alert</strong>" in section
    assert "realized_auc" in section and "input_drift:country" not in section  # ok checks of the latest run hide
    assert "Track record" in section and "<svg" in section
    assert pd.Series(["2026-03-01", "2026-06-01"]).map(section.__contains__).all()
