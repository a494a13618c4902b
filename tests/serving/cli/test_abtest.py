"""``leadval abtest`` on a small generated CRM, in this process: JSON and table, errors in one line, read-only."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import text

from features.crm.store import connect, create_schema
from features.simulate.config import SimulationConfig
from features.simulate.generate import generate_crm
from tests.leadval_cli import last_json, run_leadval

END = "2025-12-31"


@pytest.fixture(scope="module")
def crm_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('abtest') / 'crm.db'}"
    engine = connect(url)
    create_schema(engine)
    generate_crm(engine, SimulationConfig(n_leads=1_500, n_customers=100, seed=2, end=pd.Timestamp(END)))
    engine.dispose()
    return url


def test_json_lists_every_experiment_with_its_variants(crm_url: str) -> None:
    result = last_json(run_leadval("abtest", "--db", crm_url, "--as-of", END, "--json"))
    assert [e["experiment"] for e in result["experiments"]] == ["email_cta_button", "landing_page_hero",
                                                                 "nurture_subject_line"]
    for experiment in result["experiments"]:
        assert experiment["metric"] == "conversion" and experiment["control"] == "control"
        assert {"difference", "ci_low", "ci_high", "p_value", "needed_per_variant", "verdict"} <= set(experiment)
        assert sum(v["prob_best"] for v in experiment["variants"]) == pytest.approx(1.0)
        for variant in experiment["variants"]:
            assert set(variant) >= {"variant", "n", "rate", "ci_low", "ci_high", "prob_best"}
            assert variant["ci_low"] <= variant["rate"] <= variant["ci_high"]
    assert any("peeking" in note for note in result["notes"]) and result["as_of"] == "2025-12-31T00:00:00"


def test_one_experiment_on_ctr_and_the_table_for_people(crm_url: str) -> None:
    ran = run_leadval("abtest", "--db", crm_url, "--experiment", "email_cta_button", "--metric", "ctr",
                      "--as-of", END)
    assert "email_cta_button (running" in ran.stdout and "orange_button" in ran.stdout
    assert "P(best)" in ran.stdout and "Caution: Fixed-horizon tests" in ran.stdout
    assert "landing_page_hero" not in ran.stdout
    revenue = last_json(run_leadval("abtest", "--db", crm_url, "--metric", "revenue", "--as-of", END, "--json"))
    assert all(e["metric"] == "revenue" for e in revenue["experiments"])


def test_an_unknown_experiment_is_one_line_naming_the_known_ones(crm_url: str) -> None:
    ran = run_leadval("abtest", "--db", crm_url, "--experiment", "nope", check=False)
    assert ran.returncode == 1
    assert ran.stderr.strip() == ("error: no experiment 'nope' in the CRM; known: email_cta_button, "
                                  "landing_page_hero, nurture_subject_line")
    bad = run_leadval("abtest", "--db", crm_url, "--metric", "opens", check=False)
    assert bad.returncode == 1 and "--metric 'opens' is unknown" in bad.stderr


def test_a_crm_without_the_table_says_so_and_a_missing_crm_is_not_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = connect(url)
    create_schema(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE experiment_assignments"))
    engine.dispose()
    ran = run_leadval("abtest", "--db", url, check=False)
    assert ran.returncode == 1 and "has no experiment_assignments table" in ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1
    missing = tmp_path / "nowhere" / "crm.db"
    ran = run_leadval("abtest", "--db", f"sqlite:///{missing}", check=False)
    assert ran.returncode == 1 and "no CRM database" in ran.stderr and not missing.parent.exists()
