"""Table TreeSHAP equals LightGBM's own ``pred_contrib`` on every kind of split and on edge-case inputs."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from training.leads.tree_shap import TreeShap

SHALLOW = {"num_leaves": 8, "max_depth": 3, "min_data_in_leaf": 5, "verbosity": -1, "num_threads": 1}
EDGE_VALUES = [np.nan, 0.0, -0.0, 1e-40, -1e-40, np.inf, -np.inf, -1.0, -0.5, 0.5, 0.99, 1.0, 2.0, 3.7,
               40.0, 1e12, -1e12]


def _training_data(seed: int = 3, n: int = 3_000) -> tuple[np.ndarray, np.ndarray]:
    """Two categoricals (3 and 40 categories, some missing), counts with many zeros, a normal with NaNs."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.integers(0, 3, n), rng.integers(0, 40, n), rng.poisson(0.7, n), rng.poisson(3, n),
                         rng.normal(size=n)]).astype(float)
    x[rng.random(n) < 0.1, 1] = np.nan
    x[rng.random(n) < 0.15, 4] = np.nan
    margin = x[:, 2] - 0.4 * x[:, 3] + (x[:, 0] == 2) + 0.8 * np.isin(x[:, 1], [3, 7, 11, 19]) + np.nan_to_num(x[:, 4])
    return x, (rng.random(n) < 1 / (1 + np.exp(-margin))).astype(int)


BOOSTERS = {
    "missing as NaN": {"objective": "binary"},
    "zero as missing": {"objective": "binary", "zero_as_missing": True},
    "no missing handling": {"objective": "binary", "use_missing": False},
    "regression": {"objective": "regression"},
}


@pytest.fixture(scope="module", params=list(BOOSTERS))
def booster(request: pytest.FixtureRequest) -> lgb.Booster:
    x, y = _training_data()
    params = {**SHALLOW, **BOOSTERS[request.param], "max_cat_to_onehot": 4, "cat_smooth": 1}
    return lgb.train(params, lgb.Dataset(x, y, categorical_feature=[0, 1]), 40)


def _thresholds(booster: lgb.Booster) -> list[float]:
    frame = booster.trees_to_dataframe()
    numeric = frame.loc[frame["decision_type"] == "<=", "threshold"]
    return sorted(set(numeric.astype(float)))


def _assert_matches(booster: lgb.Booster, rows: np.ndarray) -> None:
    tables = TreeShap.from_booster(booster)
    assert tables is not None
    np.testing.assert_allclose(tables.contributions(rows), booster.predict(rows, pred_contrib=True),
                               rtol=0, atol=1e-9)


def test_training_rows_match_pred_contrib(booster: lgb.Booster) -> None:
    _assert_matches(booster, _training_data(seed=11, n=2_000)[0])


def test_every_edge_value_and_exact_threshold_in_every_column(booster: lgb.Booster) -> None:
    values = EDGE_VALUES + _thresholds(booster)
    base = _training_data(seed=5, n=len(values))[0]
    rows = np.concatenate([np.where(np.arange(5) == column, np.array(values)[:, None], base) for column in range(5)])
    _assert_matches(booster, rows)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_random_rows_of_special_values_match(data: st.DataObject) -> None:
    booster = _hypothesis_booster()
    pool = EDGE_VALUES + _thresholds(booster) + list(range(45))
    rows = data.draw(arrays(np.float64, (data.draw(st.integers(1, 30)), 5), elements=st.sampled_from(pool)))
    _assert_matches(booster, rows)


_CACHE: dict[str, lgb.Booster] = {}


def _hypothesis_booster() -> lgb.Booster:
    if "booster" not in _CACHE:
        x, y = _training_data()
        _CACHE["booster"] = lgb.train({**SHALLOW, "objective": "binary", "max_cat_to_onehot": 4},
                                      lgb.Dataset(x, y, categorical_feature=[0, 1]), 25)
    return _CACHE["booster"]


def test_one_leaf_trees_add_only_to_the_bias() -> None:
    x, _ = _training_data(n=500)
    booster = lgb.train({**SHALLOW, "objective": "regression"}, lgb.Dataset(x, np.full(len(x), 2.5)), 5)
    assert booster.trees_to_dataframe()["node_depth"].max() == 1
    _assert_matches(booster, x)


def test_trees_too_large_for_tables_are_left_to_pred_contrib() -> None:
    x, y = _training_data()
    deep = lgb.train({"objective": "binary", "num_leaves": 31, "verbosity": -1}, lgb.Dataset(x, y), 5)
    assert TreeShap.from_booster(deep) is None


def test_empty_input_gives_only_the_layout() -> None:
    x, y = _training_data(n=500)
    booster = lgb.train({**SHALLOW, "objective": "binary"}, lgb.Dataset(x, y), 5)
    tables = TreeShap.from_booster(booster)
    assert tables is not None and tables.contributions(x[:0]).shape == (0, 6)
