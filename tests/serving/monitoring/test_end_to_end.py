"""Issue 16's "done when", end to end and in process: a champion trained on a stationary simulated CRM as of
2025-06-30 scores leads after it and the CRM is monitored at its end (2025-12-31).

* On stationary CRMs (3 seeds) the monitor says ok (exit 0): no false alarm.
* On a CRM that drifts from 2025-07-01 (``--scenario drift``) the same champion is stale: its realized AUC on new
  leads is as on its holdout for a run before the change took hold (2025-07-01: new leads then were created before
  the change) and falls for one after (2025-10-01); the monitor says alert (exit 4) on the drifted features (the
  new country and campaign) and on realized accuracy. ``retrain --if-needed`` then retrains, and the candidate,
  better on the post-change holdout, becomes the champion (the last test: it changes the module's store).

20,000 leads: fewer leave too few conversions among new leads for an AUC drop to be beyond chance. Scoring runs in
the test's process (``workers=1``): the suite keeps every core busy already (worker processes: test_pool.py).
"Stationary" means the whole process, the campaign calendar too (:func:`steady_calendar`): the default calendar
launches campaigns late and runs event campaigns in bursts, which changes the source mix and is rightly reported
as input drift. Rollback restoring the previous champion for the batch job is tested in tests/serving/cli/test_models.py.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from features.crm.store import connect
from features.lead_labels import LABEL_COLUMN, SNAPSHOT_COLUMN
from features.simulate.config import SimulationConfig, steady_calendar
from features.simulate.generate import generate_crm
from serving.batch.jobs import score_open_leads
from serving.monitoring.run import MonitoringRun, monitor
from tests.mlflow_stores import empty_tracking_uri
from training.leads.data.splits import CrmTrainingConfig, crm_splits
from training.leads.job import train_and_register
from training.leads.pyfunc import scorer_of
from training.leads.reference import AGE_COLUMN
from training.registry import LEAD_MODEL_NAME, load_registered
from training.retraining import retrain, retraining_need
from training.tracking import use_tracking

pytestmark = pytest.mark.slow  # trains two champions, scores four CRMs of 20,000 leads: ~80 s

END = datetime(2025, 12, 31)
TRAINED_AS_OF = "2025-06-30"
"""The champion's cutoff: the day before the drifting CRM's change (default: 6 months before its end)."""
SCORED = ("2025-10-01", "2025-12-31")
"""Runs after the change; the horizon (90 days) of the 2025-10-01 run has passed by the end."""
BEFORE = (datetime(2025, 7, 1), datetime(2025, 9, 30))
"""A run whose new leads were all created before the change, and the day its horizon has passed."""
LEADS = 20_000
STATIONARY_SEEDS = (1, 2, 3)
DRIFT_SEED = 1


def simulated(folder: Path, seed: int, scenario: str = "stationary") -> str:
    """A CRM of :data:`LEADS` leads ending at :data:`END` with a steady campaign calendar; its URL."""
    url = f"sqlite:///{folder / f'crm_{scenario}_{seed}.db'}"
    engine = connect(url)
    generate_crm(engine, SimulationConfig(n_leads=LEADS, n_customers=200, seed=seed, end=END, scenario=scenario,
                                          channels=steady_calendar()))
    engine.dispose()
    return url


def scored_and_monitored(url: str, tracking_uri: str, artifact_root: str) -> MonitoringRun:
    """The champion's runs at :data:`SCORED` on the CRM at ``url``, then the monitor as of :data:`END`."""
    engine = connect(url)
    use_tracking(tracking_uri, create=False)
    for day in SCORED:
        score_open_leads(engine, as_of=day, workers=1)
    result = monitor(engine, tracking_uri, END, artifact_root=artifact_root)
    engine.dispose()
    return result


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """The folder, MLflow store and artifact root of a champion trained on stationary seed 1 as of 2025-06-30."""
    folder = tmp_path_factory.mktemp("end_to_end")
    tracking_uri, artifact_root = empty_tracking_uri(folder), str(folder / "artifacts")
    engine = connect(simulated(folder, STATIONARY_SEEDS[0]))
    config = CrmTrainingConfig(as_of=TRAINED_AS_OF)
    splits = crm_splits(engine, config)
    engine.dispose()
    train_and_register(splits, config, tracking_uri, artifact_root)
    return folder, tracking_uri, artifact_root


def _by_check(result: MonitoringRun) -> dict[str, object]:
    return {c.check: c for c in result.checks if c.model == "lead-scoring"}


@pytest.mark.parametrize("seed", STATIONARY_SEEDS)
def test_a_stationary_crm_is_ok(champion: tuple[Path, str, str], seed: int) -> None:
    folder, tracking_uri, artifact_root = champion
    url = f"sqlite:///{folder / f'crm_stationary_{seed}.db'}" if seed == STATIONARY_SEEDS[0] else simulated(folder,
                                                                                                           seed)
    result = scored_and_monitored(url, tracking_uri, artifact_root)
    assert (result.status, result.exit_code) == ("ok", 0), result.warnings
    checks = _by_check(result)
    assert checks["realized_auc"].status == "ok" and checks["realized_auc"].value > 0.75
    assert checks["input_drift:source_channel"].status == "ok"


@pytest.fixture(scope="module")
def drifting(champion: tuple[Path, str, str]) -> tuple[str, MonitoringRun, MonitoringRun]:
    """The drifting CRM's URL, and the monitor before the change took hold (as of 2025-09-30, judging the
    2025-07-01 run) and at the end."""
    folder, tracking_uri, artifact_root = champion
    url = simulated(folder, DRIFT_SEED + 10, "drift")
    engine = connect(url)
    use_tracking(tracking_uri, create=False)
    score_open_leads(engine, as_of=BEFORE[0], workers=1)
    before = monitor(engine, tracking_uri, BEFORE[1], artifact_root=artifact_root)
    engine.dispose()
    return url, before, scored_and_monitored(url, tracking_uri, artifact_root)


def test_a_drifting_crm_alerts_on_the_drifted_features_and_realized_accuracy(
        drifting: tuple[str, MonitoringRun, MonitoringRun]) -> None:
    _, before, after = drifting
    assert (after.status, after.exit_code) == ("alert", 4)
    checks = _by_check(after)
    assert checks["input_drift:country"].status == "alert"
    assert checks["new_categories:country"].status in ("warn", "alert")
    assert "JP" in checks["new_categories:country"].detail
    assert checks["new_categories:campaign"].status in ("warn", "alert")
    assert "tiktok_lead_ads" in checks["new_categories:campaign"].detail
    new_leads_before, new_leads_after = _by_check(before)["realized_auc_new_leads"], checks["realized_auc_new_leads"]
    assert "as of 2025-07-01" in new_leads_before.detail and new_leads_before.status == "ok"
    assert "as of 2025-10-01" in new_leads_after.detail and new_leads_after.status == "alert"
    assert new_leads_after.value < new_leads_before.value - 0.08
    assert "realized_auc_new_leads" in next(c for c in after.checks if c.check == "overall"
                                            and c.model == "lead-scoring").detail


def _holdout_auc(model_uri: str, test: pd.DataFrame, new_leads_only: bool) -> float:
    """ROC AUC of the registered model on the holdout rows (those younger than the horizon, or all)."""
    from sklearn.metrics import roc_auc_score

    rows = test[test[AGE_COLUMN] < 90] if new_leads_only else test
    scored = scorer_of(load_registered(model_uri)).predict(rows, reasons=False)
    return float(roc_auc_score(rows[LABEL_COLUMN], scored["probability"]))


def test_retrain_if_needed_promotes_a_model_better_on_the_post_change_holdout(
        champion: tuple[Path, str, str], drifting: tuple[str, MonitoringRun, MonitoringRun]) -> None:
    """Better on the whole post-change holdout; on its new leads no better, and said so: the training split ends
    270 days before the CRM (2025-02-03), before the change (README, "Monitoring")."""
    folder, tracking_uri, artifact_root = champion
    url = drifting[0]
    engine = connect(url)
    use_tracking(tracking_uri, create=False)
    need = retraining_need(engine, LEAD_MODEL_NAME, max_age_days=365)
    assert need.retrain and "says alert" in need.why and "realized_auc_new_leads" in need.why
    retrained = retrain("leads", engine, url, tracking_uri, artifact_root, need.why)
    assert retrained["promoted"] and retrained["champion_version"] == retrained["new_version"] == "2"
    holdout = crm_splits(engine, CrmTrainingConfig()).test
    engine.dispose()
    assert holdout[SNAPSHOT_COLUMN].min() >= pd.Timestamp("2025-07-01")  # the post-change period
    stale, fresh = (_holdout_auc(f"models:/{LEAD_MODEL_NAME}/{v}", holdout, False) for v in ("1", "2"))
    assert fresh > stale and retrained["candidate_metric"] == pytest.approx(fresh)
    new_leads = retrained["candidate_new_leads_auc"], retrained["champion_new_leads_auc"]
    assert new_leads[1] == pytest.approx(_holdout_auc(f"models:/{LEAD_MODEL_NAME}/1", holdout, True))
    assert new_leads[0] < new_leads[1] + 0.01
    assert any("no better than champion v1" in w and "2025-02-03" in w for w in retrained["warnings"])
