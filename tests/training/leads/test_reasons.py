"""Reason codes: wording for sales, grouping by original feature, sums equal to the raw margin."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pytest

from training.leads.reasons import MIN_IMPACT, ReasonCoder, column_wording, crm_wording, phrase


def test_crm_features_are_worded_for_a_salesperson() -> None:
    wording = {w.feature: w for w in crm_wording(["pricing_page_view_7d", "days_since_last_demo_request",
                                                  "source_channel", "email_open_rate", "engagement_minutes_30d",
                                                  "active_days_30d", "days_since_created", "mystery"])}
    assert phrase(wording["pricing_page_view_7d"], 4.0) == "4 pricing-page visits in the last 7 days"
    assert phrase(wording["pricing_page_view_7d"], 1.0) == "1 pricing-page visit in the last 7 days"
    assert phrase(wording["pricing_page_view_7d"], 0.0) == "no pricing-page visits in the last 7 days"
    assert phrase(wording["days_since_last_demo_request"], np.nan) == "no demo request yet"
    assert phrase(wording["days_since_last_demo_request"], 3.5) == "last demo request 3 days ago"
    assert phrase(wording["days_since_last_demo_request"], 0.2) == "last demo request today"
    assert phrase(wording["source_channel"], 1.0, ("organic", "paid_social")) == "source: paid social"
    assert phrase(wording["source_channel"], np.nan, ("organic",)) == "source not known"
    assert phrase(wording["email_open_rate"], 0.4) == "opened 40% of emails received"
    assert phrase(wording["engagement_minutes_30d"], 12.4) == "12 minutes of engagement in the last 30 days"
    assert phrase(wording["active_days_30d"], 0.0) == "not active in the last 30 days"
    assert phrase(wording["days_since_created"], 95.0) == "lead created 3 months ago"
    assert phrase(wording["mystery"], 2.5) == "mystery: 2.5"
    assert {w.group for w in crm_wording(["pricing_page_view_7d", "pricing_page_view_90d",
                                          "days_since_last_pricing_page_view"])} == {"pricing_page_view"}
    assert phrase(column_wording(["job"], {"job"})[0], 0.0, ("admin.",)) == "job: admin."


@pytest.fixture(scope="module")
def booster_and_data() -> tuple[lgb.Booster, np.ndarray]:
    rng = np.random.default_rng(7)
    x = np.column_stack([rng.integers(0, 3, 2_000), rng.poisson(2, 2_000), rng.poisson(2, 2_000),
                         rng.normal(size=2_000)]).astype(float)
    x[rng.random(2_000) < 0.1, 3] = np.nan
    y = (rng.random(2_000) < 1 / (1 + np.exp(-(x[:, 1] - x[:, 2] + (x[:, 0] == 2) - 1)))).astype(int)
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_leaves": 8, "max_depth": 3},
                        lgb.Dataset(x, y, categorical_feature=[0]), 30)
    return booster, x


def test_grouped_contributions_and_bias_add_up_to_the_margin(booster_and_data) -> None:
    booster, x = booster_and_data
    coder = ReasonCoder(crm_wording(["source_channel", "demo_request_7d", "demo_request_30d", "score_x"]),
                        {"source_channel": ("a", "b", "c")})
    contributions = booster.predict(x, pred_contrib=True)
    grouped = coder.grouped(contributions)
    assert coder.groups == ("source_channel", "demo_request", "score_x")
    np.testing.assert_allclose(grouped.sum(axis=1) + contributions[:, -1], booster.predict(x, raw_score=True),
                               atol=1e-9)
    reasons = [json.loads(r) for r in coder.phrases(contributions, x).json()]
    assert coder.phrases(contributions, x).lists() == reasons
    for parsed, row in zip(reasons, grouped):
        assert len(parsed["up"]) == min(3, int((row > MIN_IMPACT).sum()))
        assert len(parsed["down"]) == min(3, int((row < -MIN_IMPACT).sum()))
    strongest = int(np.argmax(grouped[:, 1]))
    assert "demo request" in reasons[strongest]["up"][0]
    assert coder.phrases(contributions[:0], x[:0]).json() == []


def test_few_rows_are_worded_exactly_as_in_a_large_batch(booster_and_data) -> None:
    booster, x = booster_and_data
    coder = ReasonCoder(crm_wording(["source_channel", "demo_request_7d", "demo_request_30d", "score_x"]),
                        {"source_channel": ("a", "b", "c")})
    contributions = booster.predict(x[:300], pred_contrib=True)
    batch = coder.phrases(contributions, x[:300]).json()
    assert [coder.phrases(contributions[i : i + 1], x[i : i + 1]).json()[0] for i in range(300)] == batch
