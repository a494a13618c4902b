"""Holdout metrics, the gains table and the plots, on outcomes whose answers are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.leads.evaluation import (
    evaluation_plots,
    expected_calibration_error,
    gains_table,
    lead_metrics,
    lift_and_capture,
)


def test_perfect_ranking_has_full_auc_and_maximal_lift() -> None:
    y = np.array([1] * 10 + [0] * 90)
    p = np.linspace(0.99, 0.01, 100)
    metrics = lead_metrics(y, p)
    assert metrics["roc_auc"] == 1.0 and metrics["pr_auc"] == pytest.approx(1.0)
    assert metrics["lift_top10"] == pytest.approx(10.0) and metrics["capture_top10"] == 1.0
    assert metrics["capture_top20"] == 1.0 and metrics["lift_top20"] == pytest.approx(5.0)
    assert lift_and_capture(y, p[::-1], 0.1) == (0.0, 0.0)


def test_gains_table_by_decile() -> None:
    rng = np.random.default_rng(1)
    p = rng.random(1_000)
    y = (rng.random(1_000) < p).astype(int)
    table = gains_table(y, p)
    assert list(table["decile"]) == list(range(1, 11)) and table["leads"].sum() == 1_000
    assert table["conversions"].sum() == y.sum() and table["cumulative_capture"].iloc[-1] == pytest.approx(1.0)
    assert table["conversion_rate"].iloc[0] > table["conversion_rate"].iloc[-1]
    assert (table["lift"] * table["leads"]).sum() / 1_000 == pytest.approx(1.0)


def test_calibrated_probabilities_have_small_ece_and_miscalibrated_large() -> None:
    rng = np.random.default_rng(2)
    p = rng.random(20_000) * 0.3
    y = (rng.random(20_000) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.01
    assert expected_calibration_error(y, np.minimum(p * 2, 1)) > 0.1


def test_plots_are_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    p = rng.random(500)
    y = (rng.random(500) < p).astype(int)
    written = evaluation_plots(y, {"model": p, "baseline": p ** 2}, pd.Series([3.0, 1.0], index=["a", "b"]),
                               tmp_path)
    assert {f.name for f in written} == {"roc.png", "pr.png", "gains_lift.png", "calibration.png",
                                         "feature_importance.png"}
    assert all(f.stat().st_size > 1_000 for f in written)
