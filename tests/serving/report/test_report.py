"""The KPI report and the list commands on a tiny CRM in a real database, and the page in a real Chromium.

Chromium comes from the Debian package ``chromium``; the test fails (never skips) when it is missing.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from datetime import date
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
import typer
from mlflow.tracking import MlflowClient
from PIL import Image
from typer.testing import CliRunner

from features.crm import schema
from features.crm.store import connect, create_schema, insert_frame
from features.errors import InvalidInput
from features.kpi.definitions import METRICS
from features.kpi.metrics import kpi_table
from features.kpi.tables import kpi_tables, read_kpi_tables, report_window
from features.kpi.targets import Target
from serving.cli import report as report_cli
from serving.report.data import build_report, clv_model_note
from serving.report.page import SECTIONS, _clv_model, render_html
from tests.features.kpi.test_metrics import WINDOW_ARGS, hand_made_crm, hand_made_frames
from tests.mlflow_stores import empty_tracking_uri
from training.clv.predict import CLVParameters, SegmentRule
from training.clv.purchases import BgNbdParameters
from training.clv.pyfunc import run_tags

T = pd.Timestamp
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--proxy-server=http://127.0.0.1:9"]
TARGETS = """
[[targets]]
metric = "conversion_rate"
scope = "channel:paid_search"
target = "40%"
deadline = 2025-06-30

[[targets]]
metric = "cac"
scope = "all"
target = 50
direction = "at_most"
deadline = 2025-01-31
"""

app = typer.Typer()
app.command("report")(report_cli.report)
app.command("segments")(report_cli.segments_export)
app.command("top")(report_cli.leads_top)


def _lead_scores() -> pd.DataFrame:
    rows = [  # L1 was scored before it converted; the rest are open.
        ("L1", 80, 0.80, "A", [{"text": "Asked for a demo"}], 900.0, T("2025-01-15")),
        ("L2", 60, 0.60, "A", [{"text": "Visited pricing 3 times"}, {"text": "Free email domain"}], 600.0,
         T("2025-02-28")),
        ("L3", 30, 0.30, "B", {"up": ["Opened emails"], "down": ["Small company"]}, 90.0, T("2025-02-28")),
        ("L6", 55, 0.55, "A", ["Attended a webinar"], 700.0, T("2025-02-28")),
        ("L7", 5, 0.05, "D", None, 10.0, T("2025-02-28")),
    ]
    frame = pd.DataFrame(rows, columns=["lead_id", "score", "probability", "band", "reasons", "expected_value",
                                        "as_of"])
    return frame.assign(model_name="lead-scoring", scored_at=frame["as_of"] + pd.Timedelta(hours=3))


BACKTEST_BANDS = [  # as_of, band, leads, conversions, predicted_rate, actual_rate
    (T("2024-11-01"), "A", 10, 3, 0.30, 0.3), (T("2024-11-01"), "B", 20, 2, 0.08, 0.1),
    (T("2024-11-01"), "C", 30, 0, 0.02, 0.0), (T("2024-11-01"), "D", 40, 1, 0.01, 0.025),
    (T("2024-12-01"), "A", 30, 6, 0.20, 0.2), (T("2024-12-01"), "B", 20, 2, 0.08, 0.1),
    (T("2024-12-01"), "C", 0, 0, None, None), (T("2024-12-01"), "D", 50, 0, 0.01, 0.0),
]


def _backtest(backtest_id: str, created_at: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of a stored backtest at two as-of dates, as `leadval backtest leads` writes them."""
    bands = pd.DataFrame(BACKTEST_BANDS, columns=["as_of", "band", "leads", "conversions", "predicted_rate",
                                                  "actual_rate"]).assign(backtest_id=backtest_id)
    runs = pd.DataFrame({"as_of": [T("2024-11-01"), T("2024-12-01")], "leads": [100, 100], "conversions": [6, 8],
                         "base_rate": [0.06, 0.08], "mean_probability": [0.05, 0.07], "roc_auc": [0.81, 0.83],
                         "pr_auc": [0.3, 0.35], "lift_top10": [3.0, 2.5],
                         "trained_to": [T("2024-07-04"), T("2024-08-03")]})
    runs = runs.assign(backtest_id=backtest_id, model="retrain", model_version="4", horizon_days=90,
                       recipe=[{"source": "config.json of the champion's training run r1", "config": {}}] * 2,
                       created_at=created_at)
    return runs, bands


def _write_crm(url: str, scores: bool = True, backtest: bool = True, **scored_by: str) -> None:
    """The hand-made CRM; ``scored_by``: columns naming the CLV model behind the customer scores (``run_id``...)."""
    engine = connect(url)
    create_schema(engine)
    frames = hand_made_frames()
    customer_scores = frames.pop("customer_scores").assign(horizon_days=365, model_name="clv", **scored_by)
    with engine.begin() as conn:
        for name in ("leads", "activities", "customers", "orders", "marketing_spend"):
            insert_frame(conn, schema.table(name), frames[name])
        if scores:
            insert_frame(conn, schema.lead_scores, _lead_scores())
            insert_frame(conn, schema.customer_scores, customer_scores)
        if backtest:  # an older backtest, then the latest: the report shows the latest
            for backtest_id, created in (("bt-older", T("2025-03-01 08:00")), ("bt-latest", T("2025-03-02 08:00"))):
                runs, bands = _backtest(backtest_id, created)
                insert_frame(conn, schema.lead_backtests, runs)
                insert_frame(conn, schema.lead_backtest_bands, bands.assign(
                    conversions=bands["conversions"] * (backtest_id == "bt-latest")))
    engine.dispose()


@pytest.fixture
def crm_url(sqlite_url: str) -> str:
    _write_crm(sqlite_url)
    return sqlite_url


def _invoke(*args: str) -> tuple[str, dict | None]:
    """Run a command; its stdout, and with --json its last line parsed."""
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    last = json.loads(result.stdout.strip().splitlines()[-1]) if "--json" in args else None
    return result.stdout, last


class Written(NamedTuple):
    out: Path
    result: dict
    stdout: str
    stderr: str
    run_id: str


CLV_WARNINGS = (
    "BG/NBD fit at a bound: a = 4.18e-07 (towards 0); the dropout probability collapsed to ~0 (mean a/(a+b) = 2.1e-11 "
    "per purchase): the model sees customers who never leave",
    "segments by value and recency, not P(alive) (which is 1.000 to 1.000 for 98% of customers): at_risk after 30 days "
    "without a purchase, lost after 60",
)


def _clv_training_run(folder: Path) -> tuple[str, str]:
    """A real MLflow store with a CLV training run that recorded two warnings and segments by recency, tagged as
    ``train clv`` tags its runs; its tracking URI and run id."""
    tracking = empty_tracking_uri(folder)
    client = MlflowClient(tracking_uri=tracking)
    run = client.create_run(client.create_experiment("clv", artifact_location=(folder / "artifacts").as_uri()))
    params = CLVParameters("D", BgNbdParameters(2.16, 68.0, 4.18e-07, 19474.8, 0.0, -21233.9, 1113, ("a->0",)), None,
                           segment_rule=SegmentRule(basis="recency", recency_at_risk_days=30.0, recency_lost_days=60.0),
                           warnings=CLV_WARNINGS)
    for key, value in run_tags(params).items():
        client.set_tag(run.info.run_id, key, value)
    return tracking, run.info.run_id


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Written:
    """The tiny CRM in SQLite with scores (the customers' by a CLV model whose training warned), and the report
    written for January-February 2025 with two targets."""
    folder = tmp_path_factory.mktemp("report")
    url = f"sqlite:///{folder / 'crm.db'}"
    tracking, run_id = _clv_training_run(folder)
    _write_crm(url, run_id=run_id, model_version="3")
    targets = folder / "targets.toml"
    targets.write_text(TARGETS)
    out = folder / "reports" / "kpi_report.html"
    done = CliRunner().invoke(app, ["report", "--db", url, "--out", str(out), "--from", "2025-01-01", "--to",
                                    "2025-02-28", "--targets", str(targets), "--tracking-uri", tracking, "--json"])
    assert done.exit_code == 0, done.output
    assert out.exists() and f"Wrote {out}" in done.stdout
    return Written(out, json.loads(done.stdout.strip().splitlines()[-1]), done.stdout, done.stderr, run_id)


def test_report_json_has_channels_and_targets(written: Written) -> None:
    result = written.result
    channels = {c["channel"]: c for c in result["channels"]}
    paid = channels["paid_search"]
    assert {"channel", "leads", "conversion_rate", "spend", "cac", "roi", "clv_to_cac"} <= set(paid)
    assert (paid["leads"], paid["conversion_rate"], paid["spend"], paid["cac"]) == (4, 0.5, 300, 150)
    assert paid["roi"] == pytest.approx(50 / 300)
    assert paid["clv_to_cac"] == pytest.approx(750 / 300)
    assert channels["organic_search"]["cac"] is None  # undefined becomes null, never NaN
    assert result["window"] == {"from": "2025-01-01", "to": "2025-02-28", "period": "week"}
    # Weekly paid search cohorts: 0 % (L2), 0 % (L3), 100 % (L4) -> rising, projected to 100 % by June.
    # CAC has one complete week with spend (Feb 1st: 150 for C3): above 50 by the deadline, missed.
    statuses = {t["metric"]: (t["status"], t["projected"]) for t in result["targets"]}
    assert statuses == {"conversion_rate": ("on_track", 1.0), "cac": ("missed", 150.0)}
    # Conversion by band: the latest backtest, pooled over its two dates; never today's scores.
    bands = {b["band"]: b for b in result["predictive"]["conversion_by_band"]}
    assert (bands["A"]["leads"], bands["A"]["conversions"], bands["A"]["as_ofs"]) == (40, 9, 2)
    assert bands["A"]["predicted_rate"] == pytest.approx((10 * 0.3 + 30 * 0.2) / 40)
    assert bands["A"]["actual_rate"] == pytest.approx(9 / 40)
    assert bands["C"]["leads"] == 30 and bands["C"]["predicted_rate"] == pytest.approx(0.02)
    assert result["bands"][0] == {"band": "A", "leads": 10, "predicted_rate": 0.3, "actual_rate": 0.3,
                                  "as_of": "2024-11-01T00:00:00"}
    assert [(b["as_of"][:10], b["band"]) for b in result["bands"]] == [
        (d, b) for d in ("2024-11-01", "2024-12-01") for b in "ABCD"]
    backtest = result["backtest"]
    assert (backtest["backtest_id"], backtest["model"], backtest["model_version"], backtest["horizon_days"]) == (
        "bt-latest", "retrain", "4", 90)
    assert (backtest["as_of_from"], backtest["as_of_to"]) == ("2024-11-01T00:00:00", "2024-12-01T00:00:00")
    assert backtest["as_ofs"][1]["roc_auc"] == 0.83 and backtest["recipe"]["source"].startswith("config.json")
    assert result["scores_as_of"] == {"from": "2025-01-15T00:00:00", "to": "2025-02-28T00:00:00"}
    assert result["predictive"]["top_customers"][0]["customer_id"] == "C1"
    assert sum(a["markov"] for a in result["attribution"]) == pytest.approx(3)


def test_printed_summary_labels_converted_leads_new_customers_and_both_cacs(written: Written) -> None:
    totals = written.result["totals"]
    assert (totals["paid_cac"], totals["blended_cac"]) == (pytest.approx(340 / 3), pytest.approx(340 / 4))
    assert "3 converted leads (conversion rate 42.9%); 4 new customers in all (with or without a lead), 3 of them" \
        in written.stdout
    assert "paid CAC 113.33 (spend / new customers of channels with spend); blended CAC 85.00" in written.stdout


def test_the_crm_reads_back_the_same_from_the_database(db_url: str) -> None:
    _write_crm(db_url)
    crm = read_kpi_tables(connect(db_url))
    expected = hand_made_crm()
    window = report_window(expected, *WINDOW_ARGS)
    pd.testing.assert_frame_equal(kpi_table(crm, window, "channel"), kpi_table(expected, window, "channel"))
    reasons = crm.lead_scores.set_index("lead_id")["reasons"]
    assert reasons["L2"] == [{"text": "Visited pricing 3 times"}, {"text": "Free email domain"}]


def test_page_is_self_contained_with_every_section_and_definition(written: Written) -> None:
    page = written.out.read_text()
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    assert not re.search(r"""(src|href|srcset)\s*=\s*["']?\s*(https?:|//)""", page, re.IGNORECASE)
    assert not re.search(r"""url\(\s*['"]?(?!#)""", page)  # only in-page references such as clip paths
    for anchor, _ in SECTIONS:
        assert f'id="{anchor}"' in page
    for metric in METRICS.values():
        assert f"<dt>{metric.label}</dt>" in page.replace("&#x27;", "'")
    assert page.count("<svg") >= 8
    assert "lead scores as of 2025-01-15 00:00 to 2025-02-28 00:00 UTC" in page
    text = re.sub(r"\s+", " ", page)
    assert "From backtest bt-latest" in text and "2 past dates, 2024-11-01 to 2024-12-01" in text
    assert "No backtest yet" not in page


def _chromium() -> str:
    binary = shutil.which("chromium")
    assert binary, "Chromium is needed for this test: apt-get install -y chromium (Debian package)"
    return binary


PROBE = """<script>
window.addEventListener("load", () => {
  const loaded = performance.getEntriesByType("resource").map(e => e.name);
  document.body.setAttribute("data-resources", JSON.stringify(loaded));
  document.querySelectorAll("svg.chart").forEach(el => {
    const r = el.getBoundingClientRect();
    el.setAttribute("data-rendered", Math.round(r.width) + "x" + Math.round(r.height));
  });
});
</script>"""


@pytest.mark.slow  # a real headless Chromium process
def test_page_renders_in_headless_chromium_with_visible_plots(written: Written, tmp_path: Path) -> None:
    out = written.out
    # A copy with a probe that records what the browser loaded and the size each chart is drawn at.
    probed = tmp_path / "probed.html"
    probed.write_text(out.read_text().replace("</body>", PROBE + "</body>"))
    common = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400"]
    dom = subprocess.run([*common, "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    resources = re.search(r'data-resources="([^"]*)"', dom.stdout)
    assert resources is not None and json.loads(resources.group(1).replace("&quot;", '"')) == []
    sizes = [tuple(map(int, s.split("x"))) for s in re.findall(r'data-rendered="(\d+x\d+)"', dom.stdout)]
    assert len(sizes) >= 8 and all(w > 200 and h > 100 for w, h in sizes), sizes
    attributes = re.findall(r'<svg[^>]*class="chart"[^>]*>', dom.stdout)
    assert all(float(re.search(r'width="([\d.]+)', a).group(1)) > 0 for a in attributes)
    for heading in ("Marketing KPI report", "Channels", "Channel contribution (attribution)", "Predictive KPIs",
                    "Glossary"):
        assert heading in dom.stdout
    shot = tmp_path / "page.png"
    run = subprocess.run([*common, f"--screenshot={shot}", out.as_uri()], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype="int64")
    inked = (pixels.min(axis=2) < 200).mean()  # share of pixels that are not (near) white
    colours = len(np.unique((pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2]))
    assert inked > 0.05 and colours > 50, (inked, colours)


def test_report_without_scores_or_data_in_the_window_still_renders(sqlite_url: str, tmp_path: Path) -> None:
    _write_crm(sqlite_url, scores=False, backtest=False)
    out = tmp_path / "empty.html"
    stdout, result = _invoke("report", "--db", sqlite_url, "--out", str(out), "--from", "2030-01-01", "--to",
                             "2030-01-31", "--json")
    page = out.read_text()
    assert "No lead scores yet" in page and "No customer scores yet" in page
    assert "No backtest yet: run `leadval backtest leads`" in page and "lead scores none yet" in page
    assert "conversion by band: no backtest yet: run leadval backtest leads" in stdout
    assert result["totals"]["leads"] == 0 and result["channels"] == []
    assert result["bands"] == [] and result["backtest"] is None and result["predictive"]["conversion_by_band"] == []
    assert result["scores_as_of"] == {"from": None, "to": None}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2025-02-30"], "--from '2025-02-30' is not a date; expected YYYY-MM-DD"),
        (["--from", "2025-03-01", "--to", "2025-02-01"], "before --from"),
    ],
)
def test_report_input_errors_are_clear(crm_url: str, tmp_path: Path, args: list[str], message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        _invoke("report", "--db", crm_url, "--out", str(tmp_path / "r.html"), *args)


def test_report_rejects_a_target_for_an_unknown_channel(crm_url: str, tmp_path: Path) -> None:
    targets = tmp_path / "t.toml"
    targets.write_text(TARGETS.replace("channel:paid_search", "channel:tv"))
    with pytest.raises(InvalidInput, match="unknown channel 'tv'"):
        _invoke("report", "--db", crm_url, "--out", str(tmp_path / "r.html"), "--targets", str(targets))


def test_report_on_a_database_without_tables_says_what_to_do(sqlite_url: str, tmp_path: Path) -> None:
    connect(sqlite_url).dispose()  # an empty SQLite file: the database exists, its tables do not
    with pytest.raises(InvalidInput, match="run `leadval generate` or `leadval import` first"):
        _invoke("report", "--db", sqlite_url, "--out", str(tmp_path / "r.html"))


def test_segment_export_csv_and_parquet(crm_url: str, tmp_path: Path) -> None:
    csv = tmp_path / "all.csv"
    _, result = _invoke("segments", "--db", crm_url, "--out", str(csv), "--json")
    table = pd.read_csv(csv)
    assert list(table.columns) == ["customer_id", "segment", "clv", "p_alive", "last_order_at"]
    assert table["customer_id"].tolist() == ["C1", "C2", "C3"]  # highest CLV first
    assert table.loc[0, "last_order_at"] == "2025-03-05T00:00:00"
    assert result["rows"] == 3
    parquet = tmp_path / "best.parquet"
    _invoke("segments", "--db", crm_url, "--out", str(parquet), "--min-clv", "100")
    assert pd.read_parquet(parquet)["customer_id"].tolist() == ["C1", "C2"]
    _invoke("segments", "--db", crm_url, "--out", str(csv), "--segment", "loyal")
    assert pd.read_csv(csv)["customer_id"].tolist() == ["C3"]
    with pytest.raises(InvalidInput, match="--segment 'vip' is unknown; segments with customers: champions"):
        _invoke("segments", "--db", crm_url, "--out", str(csv), "--segment", "vip")
    with pytest.raises(InvalidInput, match="expected a file ending in .csv or .parquet"):
        _invoke("segments", "--db", crm_url, "--out", str(tmp_path / "x.xlsx"))


def test_top_leads_are_open_scored_leads_with_reasons(crm_url: str) -> None:
    stdout, result = _invoke("top", "--db", crm_url, "--n", "3", "--json")
    assert [lead["lead_id"] for lead in result["leads"]] == ["L2", "L6", "L3"]  # L1 converted: not open
    assert result["scores_as_of"] == {"from": "2025-01-15T00:00:00", "to": "2025-02-28T00:00:00"}
    assert "Scores as of 2025-01-15 00:00 to 2025-02-28 00:00 UTC." in stdout
    assert result["leads"][0]["reasons"] == "Visited pricing 3 times; Free email domain"
    assert result["leads"][2]["reasons"] == "up: Opened emails | down: Small company"
    assert "Visited pricing 3 times" in stdout and stdout.splitlines()[0].split()[:4] == ["#", "lead", "score", "band"]
    _, by_value = _invoke("top", "--db", crm_url, "--by", "value", "--json")
    assert [lead["lead_id"] for lead in by_value["leads"]] == ["L6", "L2", "L3", "L7"]


def test_top_leads_before_scoring_says_what_to_do(sqlite_url: str) -> None:
    _write_crm(sqlite_url, scores=False)
    with pytest.raises(InvalidInput, match="run `leadval score leads` first"):
        _invoke("top", "--db", sqlite_url)


def test_names_from_the_crm_are_escaped_on_the_page() -> None:
    script = "<script>alert(1)</script>"
    frames = hand_made_frames()
    frames["leads"] = frames["leads"].replace({"source_channel": {"paid_search": script},
                                               "campaign": {"spring": script}})
    frames["customers"] = frames["customers"].replace({"acquisition_channel": {"paid_search": script}})
    frames["marketing_spend"] = frames["marketing_spend"].replace({"channel": {"paid_search": script},
                                                                   "campaign": {"spring": script}})
    frames["activities"] = frames["activities"].replace({"content_id": {"blog-1": '<img src=x onerror="alert(1)">'}})
    crm = kpi_tables(**frames)
    goal = Target("cac", f"channel:{script}", 50, "at_most", date(2025, 6, 30), name=script)
    recorded = {"model": "pnbd", "segments_by": "p_alive", "warnings": [f"Gamma-Gamma: {script}"]}
    page = render_html(build_report(crm, report_window(crm, *WINDOW_ARGS), [goal], clv_recorded=recorded))
    assert "<script" not in page.lower() and "<img" not in page.lower()
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert f'<td class="txt">{escaped}</td>' in page  # channel tables and the target's name
    assert f'<td class="txt nowrap">channel:{escaped}</td>' in page  # the target's scope
    assert "&lt;img src=x onerror=" in page and 'onerror="' not in page  # content influence
    assert f"Warning from the model's training: Gamma-Gamma: {escaped}</li>" in page  # the CLV model's warnings



def test_report_says_what_the_clv_models_training_warned(written: Written) -> None:
    """The customer scores name the CLV model's training run; the warnings it recorded (as ``train clv`` records them)
    are on stderr, under ``warnings`` in --json and on the page, with the segments' basis (value and recency)."""
    said = [f"CLV model clv v3: {w}" for w in CLV_WARNINGS]
    assert [line for line in written.stderr.splitlines() if line.startswith("warning: CLV model")] == [
        f"warning: {w}" for w in said]
    assert written.result["warnings"][:len(said)] == said  # then the engagement, brand and experiment warnings
    assert "warning: none of the 6 sessions, webinars and page views in the window has a duration_seconds: " \
        "engagement time is unknown" in written.stderr.splitlines()
    note = written.result["predictive"]["clv_model"]
    assert (note["model"], note["segments_by"], note["segments_by_source"], note["warnings_source"]) == (
        "bgnbd", "recency", "model", "model")
    assert note["warnings"] == list(CLV_WARNINGS) and note["run_id"] == written.run_id
    assert ("customer scores by CLV model clv v3 (BG/NBD): segments by value and recency (P(alive) tells no one "
            "apart); 2 warning(s) from its training") in written.stdout
    text = html.unescape(re.sub(r"\s+", " ", written.out.read_text()))
    assert "Scored by CLV model clv v3 (BG/NBD)." in text and "segments go by value and recency instead" in text
    for warning in CLV_WARNINGS:
        assert f"Warning from the model's training: {warning}" in text
    assert "training warnings are unknown" not in text
    assert note["segment_rule_version"] == 2
    assert "without a purchase. A one-time buyer is never loyal or a champion." in text  # the model's note
    assert "lost. A one-time buyer is never loyal or a champion. When P(alive)" in text  # the glossary


def test_a_model_trained_before_warnings_were_recorded_has_them_unknown(tmp_path: Path) -> None:
    """A run from before the CLV run tags (a format-1 model: BG/NBD, the version-1 segment rule by P(alive)): its
    warnings are unknown, not none, and the page never says that one-time buyers stay out of loyal and champions."""
    tracking = empty_tracking_uri(tmp_path)
    client = MlflowClient(tracking_uri=tracking)
    run = client.create_run(client.create_experiment("clv", artifact_location=(tmp_path / "artifacts").as_uri()))
    client.set_tag(run.info.run_id, "gamma_gamma_assumption", "holds")
    scores = hand_made_frames()["customer_scores"].assign(model_name="clv", model_version="1", run_id=run.info.run_id)
    note = clv_model_note(scores, report_cli.read_clv_recorded(scores, tracking))
    assert (note["model"], note["segments_by"], note["segment_rule_version"], note["warnings"]) == (
        "bgnbd", "p_alive", 1, [])
    assert note["warnings_source"] == "the model was trained before training runs recorded warnings"
    assert report_cli._clv_line(note).endswith(
        "its training warnings unknown (the model was trained before training runs recorded warnings)")
    crm = hand_made_crm()
    text = html.unescape(re.sub(r"\s+", " ", render_html(build_report(
        crm, report_window(crm, *WINDOW_ARGS), clv_recorded=report_cli.read_clv_recorded(scores, tracking)))))
    assert "The model's training warnings are unknown: the model was trained before training runs recorded" in text
    assert "predates keeping one-time buyers out of loyal and champions" in text
    assert "never loyal or a champion" not in text


def test_without_the_clv_models_run_its_warnings_are_unknown(tmp_path: Path) -> None:
    """Scores that name no run, or a run where --tracking-uri has no store (none is created): the warnings are said
    to be unknown, with why, and the segment basis is inferred from the scores' P(alive)."""
    scores = hand_made_frames()["customer_scores"].assign(model_name="clv", model_version="3")
    no_run = clv_model_note(scores, report_cli.read_clv_recorded(scores, "sqlite:///unused.db"))
    assert no_run["warnings"] == [] and no_run["warnings_source"] == "the customer scores name no training run (run_id)"
    missing = tmp_path / "nowhere" / "mlflow.db"
    with_run = scores.assign(run_id="0123456789abcdef")
    no_store = clv_model_note(with_run, report_cli.read_clv_recorded(with_run, f"sqlite:///{missing}"))
    assert not missing.parent.exists()
    assert no_store["warnings_source"] == f"no MLflow store at {missing} (pass --tracking-uri)"
    assert (no_store["segments_by"], no_store["segments_by_source"]) == ("p_alive", "inferred from the scores")
    flat = scores.assign(run_id="0123456789abcdef", p_alive=[0.999, 0.9995, 1.0])
    assert clv_model_note(flat, None)["segments_by"] == "recency"  # P(alive) that tells no one apart
    assert "its training warnings unknown (no MLflow store at" in report_cli._clv_line(no_store)
    worded = _clv_model(no_store)
    assert worded["unknown"] == no_store["warnings_source"] and worded["warnings"] == []
    assert worded["text"].endswith("(Inferred from the scores: the model's own record is unavailable.)")
    assert "one-time buyer" not in worded["text"]  # the segment rule is unknown too
