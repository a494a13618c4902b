"""Reason codes: wording for sales, grouping by original feature, sums equal to the raw margin, and reasons a
salesperson believes (no absence as an up reason, no fresh intent as a down reason)."""

from __future__ import annotations

import json
import re

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.leads.reasons import (
    FRESH_DAYS,
    MIN_IMPACT,
    SMALL_ROWS,
    ReasonCoder,
    column_wording,
    crm_wording,
    phrase,
    states_absence,
    states_fresh_intent,
)

ABSENCE = re.compile(r"^no |not known|unknown|\bnone\b|^not active|(^| )0% of", re.IGNORECASE)
"""An absence in words, read off the phrase (independently of :func:`states_absence`)."""
FRESH_INTENT = re.compile(r"^(?:[1-9]\d* (?:pricing-page visits?|demo requests?|webinar registrations?|webinars? "
                          r"attended|forms? submitted) in the last)|^last (?:pricing-page visit|demo request|webinar "
                          r"registration|webinar attended|form submitted) (?:today|yesterday|(\d+) days ago)$")


def fresh_intent_in_words(text: str) -> bool:
    """A phrase stating an intent activity counted, or its last one at most FRESH_DAYS days ago."""
    found = FRESH_INTENT.search(text)
    return bool(found) and (found.group(1) is None or int(found.group(1)) <= FRESH_DAYS)


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
    assert phrase(wording["engagement_minutes_30d"], 0.5) == "under a minute of engagement in the last 30 days"
    assert phrase(wording["engagement_minutes_30d"], 0.0) == "no engagement time in the last 30 days"
    assert phrase(wording["active_days_30d"], 0.0) == "not active in the last 30 days"
    assert phrase(wording["days_since_created"], 95.0) == "lead created 3 months ago"
    assert phrase(wording["mystery"], 2.5) == "mystery: 2.5"
    assert {w.group for w in crm_wording(["pricing_page_view_7d", "pricing_page_view_90d",
                                          "days_since_last_pricing_page_view"])} == {"pricing_page_view"}
    assert phrase(column_wording(["job"], {"job"})[0], 0.0, ("admin.",)) == "job: admin."


KIND_FEATURES = ["source_channel", "web_session_7d", "days_since_last_web_session", "days_since_created",
                 "engagement_minutes_30d", "email_open_rate", "active_days_30d", "demo_request_30d",
                 "days_since_last_demo_request", "form_submit_90d", "days_since_last_form_submit", "mystery"]
CATEGORIES = ("organic", "unknown", "paid_social", "None")
values = st.one_of(st.just(float("nan")), st.sampled_from([0.0, 0.4, 0.5, 0.5000001, 0.004, 0.005, 0.0051, 1.0,
                                                           1.5, 2.5, 29.9, 30.0, 30.1, 59.99, 60.0]),
                   st.floats(min_value=0, max_value=900, allow_nan=False))


@settings(max_examples=300, deadline=None)
@given(value=values, feature=st.sampled_from(KIND_FEATURES))
def test_absence_and_fresh_intent_checks_agree_with_the_words(value: float, feature: str) -> None:
    wording = crm_wording([feature])[0]
    if wording.kind == "category":
        value = float("nan") if value != value else float(int(value) % len(CATEGORIES))
    text = phrase(wording, value, CATEGORIES)
    assert states_absence(wording, value, CATEGORIES) == bool(ABSENCE.search(text)), text
    assert states_fresh_intent(wording, value) == fresh_intent_in_words(text), text


@settings(max_examples=200, deadline=None)
@given(column=st.lists(values, min_size=1, max_size=40), feature=st.sampled_from(KIND_FEATURES))
def test_a_batch_words_each_value_as_phrase_does(column: list[float], feature: str) -> None:
    coder = ReasonCoder(crm_wording([feature]), {"source_channel": CATEGORIES})
    x = np.array(column)[:, None]
    if coder.wording[0].kind == "category":
        x = np.where(np.isnan(x), np.nan, np.nan_to_num(x).astype(int) % len(CATEGORIES))
    expected = [phrase(coder.wording[0], v, CATEGORIES) for v in x[:, 0].tolist()]
    assert coder._word(x, np.arange(len(x)), np.zeros(len(x), dtype="int64")).tolist() == expected


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


CRM_LIKE = ["source_channel", "demo_request_7d", "demo_request_30d", "days_since_last_demo_request",
            "web_session_7d", "days_since_last_web_session", "email_open_rate", "days_since_created", "score_x"]


@pytest.fixture(scope="module")
def crm_like() -> tuple[ReasonCoder, np.ndarray, np.ndarray]:
    """A booster on CRM-like columns where absences raise the odds and fresh demo requests can lower them
    (website visits count against, a demo request 10-30 days ago too): reasons the check must catch."""
    rng = np.random.default_rng(11)
    n = 3_000
    demo_days = np.where(rng.random(n) < 0.4, rng.uniform(0, 120, n), np.nan)
    web_days = np.where(rng.random(n) < 0.5, rng.uniform(0, 200, n), np.nan)
    x = np.column_stack([
        np.where(rng.random(n) < 0.1, np.nan, rng.integers(0, 3, n)),
        (demo_days < 7).astype(float), (demo_days < 30).astype(float), demo_days,
        np.where(web_days < 7, rng.poisson(2, n), 0), web_days,
        np.where(rng.random(n) < 0.2, np.nan, rng.beta(1, 3, n).round(2)), rng.uniform(0, 700, n),
        rng.normal(size=n),
    ])
    logit = (-1 + 2 * (x[:, 1] > 0) - 1.5 * ((demo_days > 10) & (demo_days < 30)) - 0.8 * (x[:, 4] > 0)
             - x[:, 7] / 300 + (x[:, 0] == 2) + x[:, 8])
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_leaves": 8, "max_depth": 3},
                        lgb.Dataset(x, y, categorical_feature=[0]), 40)
    coder = ReasonCoder(crm_wording(CRM_LIKE), {"source_channel": ("organic", "unknown", "paid_social")})
    return coder, booster.predict(x, pred_contrib=True), x


def reference_reasons(coder: ReasonCoder, contributions: np.ndarray, x: np.ndarray) -> list[dict[str, list[str]]]:
    """The reasons by their definition, one lead and one factor at a time."""
    grouped = coder.grouped(contributions)
    members = [[j for j, w in enumerate(coder.wording) if w.group == g] for g in coder.groups]
    out = []
    for row in range(len(x)):
        reasons = {}
        for direction, sign in (("up", 1.0), ("down", -1.0)):
            chosen = []
            for g in np.argsort(-sign * grouped[row], kind="stable"):
                if sign * grouped[row, g] <= MIN_IMPACT or len(chosen) == 3:
                    break
                feature = max(members[g], key=lambda m: sign * contributions[row, m])
                wording, value = coder.wording[feature], x[row, feature]
                categories = coder.categories.get(wording.feature, ())
                if coder.evidence and (states_absence(wording, value, categories) if sign > 0
                                       else states_fresh_intent(wording, value)):
                    continue
                chosen.append(phrase(wording, value, categories))
            reasons[direction] = chosen
        out.append(reasons)
    return out


def test_grouped_contributions_and_bias_add_up_to_the_margin(booster_and_data) -> None:
    booster, x = booster_and_data
    coder = ReasonCoder(crm_wording(["source_channel", "demo_request_7d", "demo_request_30d", "score_x"]),
                        {"source_channel": ("a", "b", "c")}, evidence=False)
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


@pytest.mark.parametrize("evidence", [True, False])
def test_reasons_follow_their_definition_in_a_batch_and_one_lead_at_a_time(crm_like, evidence: bool) -> None:
    coder, contributions, x = crm_like
    coder = ReasonCoder(coder.wording, coder.categories, evidence)
    contributions, x = contributions[:600], x[:600]
    expected = reference_reasons(coder, contributions, x)
    assert coder.phrases(contributions, x).lists() == expected
    assert [coder.phrases(contributions[i: i + 1], x[i: i + 1]).lists()[0] for i in range(600)] == expected
    assert [r for i in range(0, 600, SMALL_ROWS) for r in
            coder.phrases(contributions[i: i + SMALL_ROWS], x[i: i + SMALL_ROWS]).lists()] == expected


def test_up_reasons_state_evidence_and_down_reasons_no_fresh_intent(crm_like) -> None:
    coder, contributions, x = crm_like
    checked = coder.phrases(contributions, x).lists()
    unchecked = ReasonCoder(coder.wording, coder.categories, evidence=False).phrases(contributions, x).lists()
    said_up = [p for r in unchecked for p in r["up"] if ABSENCE.search(p)]
    said_down = [p for r in unchecked for p in r["down"] if fresh_intent_in_words(p)]
    assert len(said_up) > 100 and len(said_down) > 10, "the data must hold what the check removes"
    assert not [p for r in checked for p in r["up"] if ABSENCE.search(p)]
    assert not [p for r in checked for p in r["down"] if fresh_intent_in_words(p)]
    kept_three = np.mean([len(r["up"]) == 3 for r in checked])
    assert kept_three >= np.mean([len(r["up"]) == 3 for r in unchecked]) - 0.2, "dropped reasons are replaced"


def test_few_rows_are_worded_exactly_as_in_a_large_batch(booster_and_data) -> None:
    booster, x = booster_and_data
    for evidence in (True, False):
        coder = ReasonCoder(crm_wording(["source_channel", "demo_request_7d", "demo_request_30d", "score_x"]),
                            {"source_channel": ("a", "b", "c")}, evidence)
        contributions = booster.predict(x[:300], pred_contrib=True)
        batch = coder.phrases(contributions, x[:300]).json()
        assert [coder.phrases(contributions[i : i + 1], x[i : i + 1]).json()[0] for i in range(300)] == batch
