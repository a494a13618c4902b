"""Engagement time, the brand awareness proxies and the A/B tests in ``leadval report`` on a generated CRM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from features.crm.store import connect
from features.errors import InvalidInput
from features.kpi.awareness import BRAND_AWARENESS_DEFINITION, BRAND_PATTERN
from features.kpi.engagement import ENGAGEMENT_TIME_DEFINITION
from features.kpi.experiments import PEEKING_CAUTION
from serving.cli.app import app
from serving.report.page import SECTIONS

RUNNER = CliRunner()


def _report(url: str, out: Path, *extra: str) -> dict:
    result = RUNNER.invoke(app, ["report", "--db", url, "--out", str(out), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_report_json_has_engagement_brand_and_experiments(crm_url: str, tmp_path: Path) -> None:
    payload = _report(crm_url, tmp_path / "r.html")
    totals = payload["totals"]
    assert totals["engagement_time_seconds"] > 0
    assert totals["engagement_time_seconds"] == pytest.approx(
        totals["engagement_time_session_seconds"] + totals["engagement_time_webinar_seconds"]
        + (totals["engagement_time_page_view_seconds"] or 0))
    assert sum(row["engagement_seconds"] for row in payload["engagement_time"]["by_channel"]) == pytest.approx(
        totals["engagement_time_seconds"])
    assert 0 < len(payload["engagement_time"]["by_content"]) <= 10
    for key in ("brand_search_click_share", "brand_search_lead_share", "brand_direct_lead_share",
                "brand_social_reach_impressions", "brand_direct_lead_share_trend_per_period"):
        assert key in totals
    assert 0 <= totals["brand_direct_lead_share"] <= 1
    assert payload["brand_awareness"]["pattern"] == BRAND_PATTERN
    assert payload["brand_awareness"]["trend"]
    experiments = payload["experiments"]
    assert experiments and {e["status"] for e in experiments} <= {"running", "finished"}
    for e in experiments:
        assert e["verdict"] in ("winner", "no_difference", "too_little_data")
        assert (e["winner"] is not None) == (e["verdict"] == "winner")
        assert e["variants"] and e["metric"] == "conversion"
    assert payload["experiments_caution"] == PEEKING_CAUTION


def test_report_page_has_the_three_sections(crm_url: str, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    payload = _report(crm_url, out)
    page = out.read_text(encoding="utf-8")
    for anchor in ("engagement-time", "brand", "experiments"):
        assert f'<section id="{anchor}">' in page and (anchor, dict(SECTIONS)[anchor]) in SECTIONS
    assert "<h2>Brand awareness (proxies)</h2>" in page and "<h2>Experiments (A/B tests)</h2>" in page
    assert "<h2>Engagement time</h2>" in page
    for experiment in payload["experiments"]:
        assert experiment["experiment"] in page
    assert ("no detectable difference" in page) or any(e["winner"] for e in payload["experiments"])
    assert "peeking" in page
    for definition in (ENGAGEMENT_TIME_DEFINITION, BRAND_AWARENESS_DEFINITION):
        assert definition.replace("'", "&#39;") in page


def test_brand_pattern_option_is_escaped_and_documented(crm_url: str, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    payload = _report(crm_url, out, "--brand-pattern", "<b>nothing</b>")
    assert payload["brand_awareness"]["pattern"] == "<b>nothing</b>"
    assert payload["totals"]["brand_search_click_share"] == 0
    assert any("brand pattern" in w for w in payload["warnings"])
    page = out.read_text(encoding="utf-8")
    assert "<b>nothing</b>" not in page and "&lt;b&gt;nothing&lt;/b&gt;" in page
    help_text = RUNNER.invoke(app, ["report", "--help"], env={"COLUMNS": "200"}).output
    assert "--brand-pattern" in help_text and f"'{BRAND_PATTERN}'" in help_text


def test_a_bad_brand_pattern_is_one_clear_error(crm_url: str, tmp_path: Path) -> None:
    result = RUNNER.invoke(app, ["report", "--db", crm_url, "--out", str(tmp_path / "r.html"),
                                 "--brand-pattern", "(unclosed"])
    assert isinstance(result.exception, InvalidInput)
    assert "not a regular expression" in str(result.exception)
    assert not (tmp_path / "r.html").exists()


def test_a_crm_without_experiment_assignments_still_reports(crm_url: str, tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    old.write_bytes(Path(crm_url.removeprefix("sqlite:///")).read_bytes())
    url = f"sqlite:///{old}"
    engine = connect(url, create=False)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE experiment_assignments"))
    engine.dispose()
    out = tmp_path / "r.html"
    payload = _report(url, out)
    assert payload["experiments"] == []
    assert payload["totals"]["engagement_time_seconds"] > 0
    assert "No experiments in the CRM" in out.read_text(encoding="utf-8")
