"""The simulator's A/B tests: the other tables of a seed unchanged, the true effects written down and found."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from features.crm import schema
from features.crm.store import connect, create_schema, read_frame
from features.errors import InvalidInput
from features.kpi.experiments import experiment_results, experiment_trials
from features.kpi.tables import kpi_tables
from features.simulate.config import Experiment, SimulationConfig
from features.simulate.generate import TRUTH_TABLES, generate_crm, truth_experiments

END = pd.Timestamp("2025-12-31")
CONFIG = SimulationConfig(n_leads=5_000, n_customers=200, seed=0, end=END)


def tables(url: str, config: SimulationConfig) -> dict[str, pd.DataFrame]:
    """Generate ``config`` at ``url`` and read every CRM and truth table back, rows in key order."""
    engine = connect(url)
    create_schema(engine)
    generate_crm(engine, config)
    frames = {}
    for table in (*schema.CRM_TABLES, *TRUTH_TABLES):
        key = [c.name for c in table.primary_key.columns]
        frames[table.name] = read_frame(engine, table).sort_values(key).reset_index(drop=True)
    engine.dispose()
    return frames


@pytest.fixture(scope="module")
def crm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    return tables(f"sqlite:///{tmp_path_factory.mktemp('ab') / 'crm.db'}", CONFIG)


def test_experiments_leave_every_other_table_of_a_seed_as_it_was(tmp_path) -> None:
    small = SimulationConfig(n_leads=300, n_customers=30, seed=5, chunk_leads=120, end=END)
    with_tests = tables(f"sqlite:///{tmp_path / 'with.db'}", small)
    without = tables(f"sqlite:///{tmp_path / 'without.db'}", replace(small, experiments=()))
    assert len(with_tests["experiment_assignments"]) > 0 and without["experiment_assignments"].empty
    for name in set(with_tests) - {"experiment_assignments", "truth_experiments"}:
        pd.testing.assert_frame_equal(with_tests[name], without[name], check_exact=True, obj=name)


def test_assignments_are_of_leads_created_while_the_experiment_ran(crm: dict[str, pd.DataFrame]) -> None:
    truth, assigned = crm["truth_experiments"], crm["experiment_assignments"]
    created = assigned.merge(crm["leads"][["lead_id", "created_at"]], on="lead_id")
    assert len(created) == len(assigned) and (created["assigned_at"] == created["created_at"]).all()
    window = created.merge(truth.drop_duplicates("experiment"), on="experiment")
    assert ((window["assigned_at"] >= window["eligible_from"]) & (window["assigned_at"] < window["eligible_to"])).all()
    assert set(zip(truth["experiment"], truth["variant"])) == set(zip(assigned["experiment"], assigned["variant"]))
    assert truth.loc[truth["experiment"] == "landing_page_hero", "true_effect"].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("metric", ["conversion", "ctr"])
def test_the_true_effects_are_found_and_the_null_experiment_is_not(crm: dict[str, pd.DataFrame], metric: str) -> None:
    truth = crm["truth_experiments"]
    kpi = kpi_tables(crm["leads"], crm["activities"], crm["customers"], crm["orders"],
                     experiment_assignments=crm["experiment_assignments"])
    results = {r.experiment: r for r in experiment_results(experiment_trials(kpi, metric, END), metric, END)}
    for experiment in truth.loc[truth["metric"] == metric, "experiment"].unique():
        effect = truth.loc[(truth["experiment"] == experiment) & ~truth["is_control"], "true_effect"].item()
        result = results[experiment]
        assert result.ci_low <= effect <= result.ci_high, experiment
        assert (result.verdict == "winner") == (effect != 0), experiment


def test_a_wrong_experiment_is_refused() -> None:
    with pytest.raises(InvalidInput, match="metric 'opens'"):
        SimulationConfig(experiments=(Experiment("x", "opens", ("a", "b"), (0.0, 0.1), (0.0, 1.0)),))
    with pytest.raises(InvalidInput, match="control's effect must be 0"):
        SimulationConfig(experiments=(Experiment("x", "ctr", ("a", "b"), (0.1, 0.1), (0.0, 1.0)),))


def test_truth_experiments_is_documented() -> None:
    assert all(c.info.get("doc") for c in truth_experiments.columns)
