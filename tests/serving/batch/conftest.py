"""Batch-job fixtures: the `leadval` environment on the session's champions, and the jobs' simulated CRM."""

from __future__ import annotations

from datetime import datetime

import pytest

from features.simulate.config import SimulationConfig
from tests.serving.conftest import TrainedStore, simulated_crm

CRM_END = datetime(2025, 12, 31)


@pytest.fixture(scope="module")
def registry(trained_store: TrainedStore, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for `leadval` with the session's lead and CLV champions (tests/serving/conftest.py).

    LEADVAL_DB names a file of its own: each test points it at the CRM it scores.
    """
    return {
        "MLFLOW_TRACKING_URI": trained_store.tracking_uri,
        "LEADVAL_ARTIFACT_ROOT": trained_store.artifact_root,
        "LEADVAL_DB": f"sqlite:///{tmp_path_factory.mktemp('batch') / 'unused.db'}",
        "OPENBLAS_NUM_THREADS": "1",
    }


def batch_crm(url: str, end: datetime = CRM_END) -> str:
    """A simulated CRM of 1,200 leads and 150 customers at ``url``; returns its last day (the as-of to score at)."""
    return simulated_crm(url, SimulationConfig(n_leads=1200, n_customers=150, seed=11, end=end))
