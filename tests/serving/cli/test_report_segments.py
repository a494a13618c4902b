"""`leadval segments` and `leadval report` on a segment of the CLV model that has no customers, in a real SQLite CRM."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.crm import schema
from features.crm.store import connect, create_schema, insert_frame
from tests.features.kpi.test_metrics import hand_made_frames
from tests.leadval_cli import last_json, run_leadval

NO_CHAMPIONS = """
[[targets]]
metric = "predicted_cltv"
scope = "segment:champions"
target = 1000
deadline = "+6 months"

[[targets]]
metric = "historic_cltv"
scope = "segment:champions"
target = 100
deadline = "+6 months"

[[targets]]
metric = "conversion_rate"
scope = "all"
target = "30%"
deadline = "+3 months"
"""


def _crm_without_champions(url: str) -> None:
    """The hand-made CRM with its one champion (C1) scored as loyal: segment champions exists but is empty."""
    frames = hand_made_frames()
    scores = frames.pop("customer_scores").assign(segment=["loyal", "promising", "loyal"], horizon_days=365,
                                                  model_name="clv")
    engine = connect(url)
    create_schema(engine)
    with engine.begin() as conn:
        for name, frame in frames.items():
            insert_frame(conn, schema.table(name), frame)
        insert_frame(conn, schema.customer_scores, scores)
    engine.dispose()


def test_segments_on_an_empty_segment_writes_the_header_and_a_note(sqlite_url: str, tmp_path: Path) -> None:
    _crm_without_champions(sqlite_url)
    out = tmp_path / "champions.csv"
    ran = run_leadval("segments", "--db", sqlite_url, "--segment", "champions", "--out", str(out), "--json")
    assert ran.returncode == 0
    assert out.read_bytes() == b"customer_id,segment,clv,p_alive,last_order_at\r\n"  # the header only
    assert "note: no customers in segment 'champions'" in ran.stderr
    result = last_json(ran)
    assert result["rows"] == 0 and result["segments"] == {}
    assert len(result["warnings"]) == 1 and "segment 'champions'" in result["warnings"][0]
    parquet = tmp_path / "champions.parquet"
    run_leadval("segments", "--db", sqlite_url, "--segment", "champions", "--out", str(parquet))
    assert pd.read_parquet(parquet).empty
    typo = run_leadval("segments", "--db", sqlite_url, "--segment", "champs", "--out", str(out), check=False)
    assert typo.returncode != 0 and "--segment 'champs' is unknown" in typo.stderr  # a typo is still an error


def test_report_shows_no_data_for_targets_on_an_empty_segment(sqlite_url: str, tmp_path: Path) -> None:
    _crm_without_champions(sqlite_url)
    targets = tmp_path / "targets.toml"
    targets.write_text(NO_CHAMPIONS)
    out = tmp_path / "r.html"
    ran = run_leadval("report", "--db", sqlite_url, "--out", str(out), "--from", "2025-01-01", "--to", "2025-02-28",
                      "--targets", str(targets), "--json")
    statuses = {(t["metric"], t["scope"]): t["status"] for t in last_json(ran)["targets"]}
    assert statuses[("predicted_cltv", "segment:champions")] == "no_data"
    assert statuses[("historic_cltv", "segment:champions")] == "no_data"
    assert statuses[("conversion_rate", "all")] in ("on_track", "at_risk")  # the other targets are still judged
    assert "1 on track" in ran.stdout or "1 at risk" in ran.stdout
    assert "no data" in out.read_text()
