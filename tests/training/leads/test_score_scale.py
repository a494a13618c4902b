"""The score scale: score = the percentile of the probability among reference leads, 1-99, bands as score ranges."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from features.errors import InvalidInput
from training.leads.fit import LeadModelConfig
from training.leads.reasons import crm_wording
from training.leads.scorer import SCORER_FILE, Calibrator, LeadScorer, ScoreScale
from training.leads.spec import FeatureSpec

probabilities = st.lists(st.floats(min_value=0.0, max_value=1.0, allow_nan=False), min_size=1, max_size=400)
shares = st.tuples(st.integers(2, 30), st.integers(1, 30), st.integers(1, 30)).map(
    lambda s: tuple(x / 100 for x in s))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reference=probabilities, queries=probabilities, band_shares=shares)
@example(reference=[2.225073858507e-311], queries=[0.5, 2.2250738585e-313], band_shares=(0.02, 0.01, 0.01))
def test_score_is_monotone_in_probability_and_bands_are_disjoint_score_ranges(
        reference: list[float], queries: list[float], band_shares: tuple[float, float, float]) -> None:
    scale = ScoreScale.fit(np.array(reference), band_shares)
    p = np.sort(np.array(queries + [0.0, 1.0]))
    score = scale.score(p)
    assert score.dtype == np.int64 and score.min() >= 1 and score.max() <= 99
    assert (np.diff(score) >= 0).all(), "a likelier lead never scores lower"
    band = scale.band(score)
    assert (np.diff([ord(b) for b in band]) <= 0).all(), "bands run D -> A as the probability rises"
    for letter, low, high, _ in scale.band_ranges():
        assert ((score >= low) & (score <= high) == (band == letter)).all()
    assert scale.score(np.array([0.0]))[0] == 1 or min(reference) == 0.0, "below every reference lead: 1"
    assert scale.score(np.array([1.0]))[0] == 99 or max(reference) == 1.0, "above every reference lead: 99"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(200, 3_000), seed=st.integers(0, 2**16), band_shares=shares)
def test_bands_hold_their_shares_of_the_reference_leads(n: int, seed: int,
                                                        band_shares: tuple[float, float, float]) -> None:
    reference = np.random.default_rng(seed).beta(0.3, 30, n)  # ~1% base rate, long right tail
    scale = ScoreScale.fit(reference, band_shares)
    band = scale.band(scale.score(reference))
    tolerance = 1 / n + 2 / 1_000  # mid-rank steps; at most ~0.1% per stored point when thinned
    for letter, share in zip("ABC", band_shares, strict=True):
        assert np.mean(band == letter) == pytest.approx(share, abs=tolerance)
    counts = np.bincount(scale.score(reference), minlength=100)[1:]
    assert counts.max() / n <= 0.02 + tolerance, "each score holds ~1% (99: the top 2%)"


def test_default_bands_are_a_top_ten_percent_and_read_as_score_ranges() -> None:
    scale = ScoreScale.fit(np.random.default_rng(0).beta(0.3, 30, 5_000), LeadModelConfig().band_shares)
    assert scale.band_scores == (91, 71, 41)
    assert scale.band_ranges() == [("A", 91, 99, pytest.approx(0.10)), ("B", 71, 90, pytest.approx(0.20)),
                                   ("C", 41, 70, pytest.approx(0.30)), ("D", 1, 40, pytest.approx(0.40))]
    a, b, c = scale.band_probabilities()
    assert a > b > c
    assert scale.band(scale.score(np.array([a * 1.000001, a]))).tolist() == ["A", "B"]


def test_ties_share_a_score_and_the_scale_stays_compact() -> None:
    reference = np.r_[np.full(3_000, 0.002), np.random.default_rng(1).uniform(0, 0.2, 50_000)]
    scale = ScoreScale.fit(reference, (0.1, 0.2, 0.3))
    assert len(scale.probabilities) <= 1_003
    tied = scale.score(np.array([0.002, 0.002]))
    assert tied[0] == tied[1]
    with pytest.raises(InvalidInput, match="band_shares"):
        LeadModelConfig(band_shares=(0.01, 0.2, 0.3))
    with pytest.raises(InvalidInput, match="reference probabilities"):
        ScoreScale.fit(np.array([]), (0.1, 0.2, 0.3))


@pytest.fixture(scope="module")
def tiny_scorer() -> tuple[LeadScorer, np.ndarray]:
    """A format-2 scorer on made-up CRM-like columns (a demo-request count and the days since it)."""
    rng = np.random.default_rng(3)
    x = np.column_stack([rng.poisson(0.3, 3_000), np.where(rng.random(3_000) < 0.3, rng.uniform(0, 90, 3_000),
                                                             np.nan)]).astype(float)
    y = (rng.random(3_000) < 1 / (1 + np.exp(-(x[:, 0] - 3)))).astype(int)
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_leaves": 4, "max_depth": 2},
                        lgb.Dataset(x, y), 20)
    spec = FeatureSpec("lead_id", (), (), ("demo_request_7d", "days_since_last_demo_request"))
    calibrator = Calibrator.fit(booster.predict(x, raw_score=True), y, "platt")
    scale = ScoreScale.fit(calibrator(booster.predict(x, raw_score=True)), (0.1, 0.2, 0.3))
    scorer = LeadScorer(spec, booster, calibrator, scale.band_probabilities(), crm_wording(spec.features),
                        90, 1, {"data_end": "2025-12-30T23:10:40"}, scale)
    return scorer, x


def test_format_1_models_still_load_and_score_as_they_did(tiny_scorer, tmp_path: Path) -> None:
    scorer, x = tiny_scorer
    scorer.save(tmp_path / "v2")
    saved = json.loads((tmp_path / "v2" / SCORER_FILE).read_text())
    assert saved["format_version"] == 2 and saved["score_scale"]["band_scores"] == [91, 71, 41]
    assert LeadScorer.load(tmp_path / "v2").score_matrix(x).score.tolist() == scorer.score_matrix(x).score.tolist()
    assert LeadScorer.load(tmp_path / "v2").info["data_end"] == "2025-12-30T23:10:40"

    saved["format_version"] = 1  # what leadval wrote before format 2: no score_scale
    del saved["score_scale"]
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / SCORER_FILE).write_text(json.dumps(saved))
    (tmp_path / "v1" / "booster.txt").write_text((tmp_path / "v2" / "booster.txt").read_text())
    legacy = LeadScorer.load(tmp_path / "v1")
    assert legacy.scale is None and legacy.format_version == 1
    scores = legacy.score_matrix(x)
    np.testing.assert_array_equal(scores.score, np.clip(np.rint(scores.probability * 100), 0, 100))
    thresholds = np.asarray(legacy.band_thresholds)
    np.testing.assert_array_equal(scores.band, np.array(list("ABCD"))[(scores.probability[:, None] < thresholds)
                                                                     .sum(axis=1)])
    assert not legacy.reason_coder.evidence and scorer.reason_coder.evidence
    legacy.save(tmp_path / "again")
    assert json.loads((tmp_path / "again" / SCORER_FILE).read_text())["format_version"] == 1
    assert replace(scorer, scale=None).format_version == 1

    saved["format_version"] = 3
    (tmp_path / "v1" / SCORER_FILE).write_text(json.dumps(saved))
    with pytest.raises(InvalidInput, match="format_version 3"):
        LeadScorer.load(tmp_path / "v1")
