"""Issue 16's "done when", end to end and in process: a champion trained on a stationary simulated CRM as of
2025-06-30 scores leads monthly and the CRM is monitored at its end (2025-12-31).

* On stationary CRMs (3 seeds) the monitor says ok (exit 0): no false alarm.
* On a CRM that drifts from 2025-07-01 (``--scenario drift``) the same champion is stale: the monitor says alert
  (exit 4) on the drifted features (the new country and campaign).

"Stationary" means the whole process, the campaign calendar too (:func:`steady_calendar`): the default calendar
launches campaigns late and runs event campaigns in bursts, which changes the source mix and is rightly reported as
input drift. Rollback restoring the previous champion for the batch job is tested in tests/serving/cli/test_models.py.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from features.crm.store import connect
from features.simulate.config import SimulationConfig, steady_calendar
from features.simulate.generate import generate_crm
from serving.batch.jobs import score_open_leads
from serving.monitoring.run import MonitoringRun, monitor
from tests.mlflow_stores import empty_tracking_uri
from training.leads.data.splits import CrmTrainingConfig, crm_splits
from training.leads.job import train_and_register
from training.tracking import use_tracking

pytestmark = pytest.mark.slow  # trains a champion and scores five CRMs: ~30 s

END = datetime(2025, 12, 31)
TRAINED_AS_OF = "2025-06-30"
"""The champion's cutoff: the day before the drifting CRM's change (default: 6 months before its end)."""
SCORED = ("2025-08-01", "2025-09-01", "2025-10-01", "2025-12-31")
"""Monthly runs after the change; the horizon (90 days) of the 2025-10-01 run has passed by the end."""
LEADS = 3_000
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
        score_open_leads(engine, as_of=day)
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


def test_a_drifting_crm_alerts_on_the_drifted_features(
        champion: tuple[Path, str, str]) -> None:
    folder, tracking_uri, artifact_root = champion
    drifting = scored_and_monitored(simulated(folder, DRIFT_SEED + 10, "drift"), tracking_uri, artifact_root)
    assert (drifting.status, drifting.exit_code) == ("alert", 4)
    checks = _by_check(drifting)
    assert checks["input_drift:country"].status == "alert"
    assert checks["new_categories:country"].status in ("warn", "alert")
    assert "JP" in checks["new_categories:country"].detail
    assert checks["new_categories:campaign"].status in ("warn", "alert")
    assert "tiktok_lead_ads" in checks["new_categories:campaign"].detail
