"""Models registered before the package layout changed still load and score as they did: scores, bands and reasons
exactly, probabilities to 1e-12 (CPUs with other vector units round numpy's and LightGBM's last bits differently)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest

from tests.conftest import REPO_ROOT

SAVED = REPO_ROOT / "tests" / "data" / "models_before_layout"


@pytest.mark.parametrize("name", ["lead_scoring", "clv"])
def test_model_registered_before_the_move_scores_as_it_did(name: str) -> None:
    model = mlflow.pyfunc.load_model(str(SAVED / name))
    scores = model.predict(pd.read_parquet(SAVED / f"{name}_input.parquet"))
    expected = pd.read_parquet(SAVED / f"{name}_expected.parquet")
    assert list(scores.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(scores.reset_index(drop=True), expected, check_exact=False, rtol=1e-12, atol=0.0,
                                  check_dtype=False, check_column_type=False)
    for column in scores.columns:
        if not pd.api.types.is_float_dtype(scores[column]):
            assert scores[column].tolist() == expected[column].tolist(), column


def test_saved_models_name_the_old_module_paths() -> None:
    """The pickles really are from before the move (otherwise the test above proves nothing)."""
    assert b"training.lead_model" in Path(SAVED / "lead_scoring" / "python_model.pkl").read_bytes()
    assert b"training.clv_model" in Path(SAVED / "clv" / "python_model.pkl").read_bytes()
