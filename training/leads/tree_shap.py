"""Exact TreeSHAP for shallow LightGBM trees from precomputed tables: ``pred_contrib`` at a fraction of its cost.

Path-dependent TreeSHAP (what LightGBM's ``pred_contrib`` computes) sees a row only through the child
it takes at each split. A tree with ``k`` splits therefore has at most ``2**k`` distinct outcomes, and
for trees of depth 3 (7 splits, the lead model's default) every outcome's contributions fit in a
128-row table built once per model. Scoring a batch is then a handful of vectorised steps: every
split's decision for every row, each tree's outcome code, one table lookup per tree, and a sum per
feature. On the demo lead model (88 trees) 1,000 rows take ~7 ms against ~60 ms for ``pred_contrib``.

Each leaf's part of the table is the Shapley value of its product game: with the leaf's path features
``U`` (``d`` of them), ``z_k`` the share of training rows following the path at the splits on ``k``
and ``o_k`` = 1 if the row follows it there (else 0), feature ``j`` gets
``v * sum over S in U - {j} of |S|! (d - |S| - 1)! / d! * (o_j - z_j) * prod_S o_k * prod_(U - S - j) z_k``,
which is what the TreeSHAP recursion adds up (Lundberg et al., 2020). Splits decide as LightGBM's
``NumericalDecision``/``CategoricalDecision`` do (missing types, default directions, NaN and negative
categories to the right, values within 1e-35 of zero read as zero). Results equal ``pred_contrib`` to
rounding (tests: 1e-9 on real and edge-case rows); :meth:`TreeShap.from_booster` returns None for
models with trees too large for tables, and callers then use ``pred_contrib``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import lightgbm as lgb
import numpy as np

MAX_SPLITS = 10
"""Largest number of splits in a tree for which a table (``2**splits`` rows) is built."""
ZERO_THRESHOLD = float(np.float32(1e-35))
"""LightGBM reads inputs with ``|value| <= kZeroThreshold`` (``1e-35f``, a float) as 0."""
_MISSING_TYPES = {"None": 0, "Zero": 1, "NaN": 2}


@dataclass(frozen=True)
class _Split:
    feature: int
    categorical: bool
    threshold: float
    categories: frozenset[int]
    default_left: bool
    missing_type: int
    count: int
    left_count: int
    right_count: int


@dataclass(frozen=True)
class _Leaf:
    value: float
    count: int
    path: tuple[tuple[int, bool], ...]
    """(split index in the tree, whether the path goes left there), root first."""


def _parse_tree(root: dict[str, Any]) -> tuple[list[_Split], list[_Leaf]]:
    """The splits (pre-order) and leaves of one tree of ``Booster.dump_model()``."""
    splits: list[_Split] = []
    leaves: list[_Leaf] = []
    stack: list[tuple[dict[str, Any], tuple[tuple[int, bool], ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if "leaf_value" in node:
            leaves.append(_Leaf(float(node["leaf_value"]), int(node.get("leaf_count", 0)), path))
            continue
        categorical = node["decision_type"] == "=="
        index = len(splits)
        splits.append(_Split(
            feature=int(node["split_feature"]),
            categorical=categorical,
            threshold=math.nan if categorical else float(node["threshold"]),
            categories=frozenset(int(c) for c in str(node["threshold"]).split("||")) if categorical else frozenset(),
            default_left=bool(node["default_left"]),
            missing_type=_MISSING_TYPES[node["missing_type"]],
            count=int(node["internal_count"]),
            left_count=_rows(node["left_child"]),
            right_count=_rows(node["right_child"]),
        ))
        stack.append((node["right_child"], (*path, (index, False))))
        stack.append((node["left_child"], (*path, (index, True))))
    return splits, leaves


def _rows(node: dict[str, Any]) -> int:
    """Training rows that reached a node of ``Booster.dump_model()``."""
    return int(node["leaf_count"] if "leaf_value" in node else node["internal_count"])


def _shapley_weights(d: int) -> np.ndarray:
    """``|S|! (d - |S| - 1)! / d!`` for ``|S|`` = 0..d-1."""
    return np.array([math.factorial(s) * math.factorial(d - s - 1) / math.factorial(d) for s in range(d)])


def _tree_table(splits: list[_Split], leaves: list[_Leaf], n_splits: int
                ) -> tuple[np.ndarray, list[int]]:
    """(outcome code x tree feature) contributions and the tree's features.

    Bit ``i`` of an outcome code: split ``i`` went left.
    """
    codes = np.arange(2 ** n_splits)
    went_left = ((codes[:, None] >> np.arange(max(len(splits), 1))) & 1).astype(bool)
    features = list(dict.fromkeys(s.feature for s in splits))
    slot = {f: i for i, f in enumerate(features)}
    table = np.zeros((len(codes), max(len(features), 1)))
    for leaf in leaves:
        path_features = list(dict.fromkeys(splits[i].feature for i, _ in leaf.path))
        d = len(path_features)
        if d == 0:
            continue
        zero = np.ones(d)
        one = np.ones((len(codes), d), dtype=bool)
        for i, left in leaf.path:
            k = path_features.index(splits[i].feature)
            zero[k] *= (splits[i].left_count if left else splits[i].right_count) / splits[i].count
            one[:, k] &= went_left[:, i] == left
        one_f = one.astype(np.float64)
        weights = _shapley_weights(d)
        for j in range(d):
            others = [k for k in range(d) if k != j]
            total = np.zeros(len(codes))
            for size in range(d):
                for subset in combinations(others, size):
                    term = np.full(len(codes), weights[size])
                    for k in others:
                        term = term * (one_f[:, k] if k in subset else zero[k])
                    total += term
            table[:, slot[path_features[j]]] += leaf.value * (one_f[:, j] - zero[j]) * total
    return table, features


_VARIANTS = {(0, False): 0, (0, True): 0, (2, True): 1, (2, False): 2, (1, True): 3, (1, False): 4}
"""(missing type, default left) -> the copy of the input a numerical split compares with its threshold:
0 NaN read as 0; 1/2 NaN as -inf/+inf (goes left/right); 3/4 NaN and 0 as -inf/+inf."""


def _decision_inputs(matrix: np.ndarray, variants: tuple[int, ...]) -> np.ndarray:
    """(variants * features x rows): the input columns as each kind of numerical split reads them."""
    x = np.where(np.abs(matrix) <= ZERO_THRESHOLD, 0.0, matrix)
    nan = np.isnan(x)
    copies = []
    for variant in variants:
        if variant == 0:
            copies.append(np.where(nan, 0.0, x))
        else:
            missing = nan | (x == 0.0) if variant >= 3 else nan
            copies.append(np.where(missing, -np.inf if variant % 2 else np.inf, x))
    return np.concatenate(copies, axis=1).T


@dataclass(frozen=True)
class TreeShap:
    """Per-tree SHAP tables of one booster, and the split arrays that turn rows into table rows.

    Split slots are ``width`` per tree (trees with fewer splits leave slots unused); pairs are the
    (tree, feature) combinations the trees use, sorted by feature, each with its table column.
    """

    n_features: int
    bias: float
    width: int
    variants: tuple[int, ...]
    split_row: np.ndarray
    """Per split slot: the row of :func:`_decision_inputs` it compares (categorical and unused slots: any)."""
    threshold: np.ndarray
    categorical: np.ndarray
    """Indexes of the categorical split slots."""
    category_feature: np.ndarray
    category_offset: np.ndarray
    """Per categorical slot: where its row starts in ``category_sets``."""
    category_sets: np.ndarray
    """Flattened (categorical slots x ``category_width``) True where the category goes left."""
    category_width: int
    pair_tree: np.ndarray
    pair_table: np.ndarray
    """(pairs x 2**width) contributions of the pair's feature for each outcome code of its tree."""
    feature_starts: np.ndarray
    present_features: np.ndarray

    @classmethod
    def from_booster(cls, booster: lgb.Booster) -> TreeShap | None:
        """Tables for a binary or regression booster, or None when a tree has more than :data:`MAX_SPLITS` splits."""
        dump = booster.dump_model()
        if dump.get("num_tree_per_iteration", 1) != 1 or dump.get("average_output"):
            return None
        trees = [_parse_tree(t["tree_structure"]) for t in dump["tree_info"]]
        width = max((len(splits) for splits, _ in trees), default=0)
        if width > MAX_SPLITS or not trees:
            return None
        width = max(width, 1)
        pairs: list[tuple[int, int, np.ndarray]] = []
        bias = 0.0
        for t, (splits, leaves) in enumerate(trees):
            values, features = _tree_table(splits, leaves, width)
            pairs += [(feature, t, values[:, k]) for k, feature in enumerate(features)]
            bias += (sum(leaf.value * leaf.count / splits[0].count for leaf in leaves) if splits
                     else leaves[0].value)
        pairs.sort(key=lambda pair: (pair[0], pair[1]))
        n_features = booster.num_feature()
        slots = [(splits[i] if i < len(splits) else None) for splits, _ in trees for i in range(width)]
        numeric = [s for s in slots if s is not None and not s.categorical]
        variants = tuple(sorted({_VARIANTS[(s.missing_type, s.default_left)] for s in numeric})) or (0,)
        row_of = {v: i * n_features for i, v in enumerate(variants)}
        cat_slots = [i for i, s in enumerate(slots) if s is not None and s.categorical]
        category_width = max((max(slots[i].categories, default=0) for i in cat_slots), default=0) + 2
        category_sets = np.zeros((len(cat_slots), category_width), dtype=bool)
        for row, i in enumerate(cat_slots):
            category_sets[row, sorted(slots[i].categories)] = True
        present, starts = np.unique([feature for feature, _, _ in pairs], return_index=True)
        return cls(
            n_features=n_features,
            bias=bias,
            width=width,
            variants=variants,
            split_row=np.array([row_of[_VARIANTS[(s.missing_type, s.default_left)]] + s.feature
                                if s is not None and not s.categorical else 0 for s in slots], dtype=np.int64),
            threshold=np.array([s.threshold if s is not None and not s.categorical else np.inf for s in slots]),
            categorical=np.array(cat_slots, dtype=np.int64),
            category_feature=np.array([slots[i].feature for i in cat_slots], dtype=np.int64),
            category_offset=np.arange(len(cat_slots), dtype=np.int64) * category_width,
            category_sets=category_sets.ravel(),
            category_width=category_width,
            pair_tree=np.array([t for _, t, _ in pairs], dtype=np.int64),
            pair_table=np.array([values for _, _, values in pairs]).reshape(len(pairs), 2 ** width),
            feature_starts=starts,
            present_features=present,
        )

    def outcome_codes(self, matrix: np.ndarray) -> np.ndarray:
        """(trees x rows) code of the splits each row takes: bit ``i`` set when split ``i`` of the tree goes left."""
        left = _decision_inputs(matrix, self.variants)[self.split_row] <= self.threshold[:, None]
        if len(self.categorical):
            category = matrix[:, self.category_feature].T
            beyond = self.category_width - 1
            valid = (category > -1.0) & (category < beyond)
            codes = np.where(valid, np.trunc(np.where(valid, category, 0.0)), beyond).astype(np.int64)
            left[self.categorical] = self.category_sets[self.category_offset[:, None] + codes]
        bits = left.reshape(-1, self.width, len(matrix))
        codes = bits[:, 0, :].astype(np.int64)
        for i in range(1, self.width):
            codes |= bits[:, i, :].astype(np.int64) << i
        return codes

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """SHAP values in ``pred_contrib``'s layout: (rows x features + 1), the bias last.

        Each row sums to the raw margin.
        """
        n = len(matrix)
        out = np.zeros((n, self.n_features + 1))
        out[:, -1] = self.bias
        if n == 0 or len(self.pair_tree) == 0:
            return out
        codes = self.outcome_codes(np.asarray(matrix, dtype=np.float64))
        index = codes[self.pair_tree] + (np.arange(len(self.pair_tree)) << self.width)[:, None]
        values = np.take(self.pair_table, index)
        out[:, self.present_features] = np.add.reduceat(values, self.feature_starts, axis=0).T
        return out
