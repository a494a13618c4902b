"""A/B test statistics: true effects found inside their intervals, null experiments rarely called, no leakage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.errors import InvalidInput
from features.kpi.experiments import compare_variants, control_variant, experiment_results, experiment_trials
from features.kpi.tables import kpi_tables

AS_OF = pd.Timestamp("2025-06-30")
DAY = pd.Timedelta(days=1)


def trials(rng: np.random.Generator, rates: dict[str, float], n: int) -> pd.DataFrame:
    """n leads per variant with Bernoulli outcomes at the given true rates, all assigned a month before AS_OF."""
    return pd.DataFrame({
        "variant": np.repeat(list(rates), n),
        "assigned_at": AS_OF - 30 * DAY,
        "trial": True,
        "outcome": np.concatenate([rng.random(n) < rate for rate in rates.values()]).astype(float),
    })


def test_a_true_effect_is_detected_and_its_interval_covers_it() -> None:
    """200 experiments with a true +6 points (10% -> 16%, 1,000 leads per variant): found, and covered ~95%."""
    rng = np.random.default_rng(1)
    results = [compare_variants(f"subject_{i}", "conversion", trials(rng, {"control": 0.10, "B": 0.16}, 1_000), AS_OF)
               for i in range(200)]
    assert sum(r.verdict == "winner" and r.winner == "B" for r in results) / len(results) >= 0.9
    assert sum(r.ci_low <= 0.06 <= r.ci_high for r in results) / len(results) >= 0.92
    result = results[0]
    assert result.compared == "B" and result.p_value < 0.05 and result.ci_low > 0
    assert result.needed_per_variant < 1_000 and result.more_needed_per_variant == 0
    best = {v["variant"]: v["prob_best"] for v in result.variants}
    assert best["B"] > 0.99 and sum(best.values()) == pytest.approx(1.0)
    for v in result.variants:
        assert v["ci_low"] <= v["rate"] <= v["ci_high"] and v["n"] == 1_000


def test_null_experiments_are_rarely_declared_winners() -> None:
    """False-positive rate over 200 small null experiments (150 leads per variant, 10% conversion): at most 8%."""
    rng = np.random.default_rng(2025)
    results = [compare_variants(f"null_{i}", "conversion", trials(rng, {"control": 0.10, "B": 0.10}, 150), AS_OF)
               for i in range(200)]
    winners = sum(r.verdict == "winner" for r in results)
    assert winners / len(results) <= 0.08
    covered = sum(r.ci_low <= 0 <= r.ci_high for r in results if r.ci_low is not None)
    assert covered / len(results) >= 0.92


def test_a_worse_variant_makes_the_control_the_winner_and_more_data_is_asked_of_small_tests() -> None:
    worse = compare_variants("cta", "conversion", trials(np.random.default_rng(3), {"A": 0.30, "B": 0.15}, 400), AS_OF)
    assert worse.control == "A" and worse.winner == "A" and worse.difference < 0
    small = compare_variants("tiny", "conversion", trials(np.random.default_rng(4), {"control": 0.1, "B": 0.2}, 20),
                             AS_OF)
    assert small.verdict == "too_little_data" and small.winner is None


def test_probability_best_is_seeded_and_three_variants_are_compared_with_bonferroni() -> None:
    data = trials(np.random.default_rng(5), {"control": 0.1, "B": 0.12, "C": 0.11}, 300)
    first, again = (compare_variants("three", "conversion", data, AS_OF, seed=7) for _ in range(2))
    assert first.variants == again.variants
    assert any("Bonferroni" in w for w in first.warnings)


def test_control_is_named_control_else_a_else_the_first() -> None:
    assert control_variant(["treatment", "Control"]) == "Control"
    assert control_variant(["B", "A"]) == "A"
    assert control_variant(["red", "blue"]) == "blue"


def test_revenue_per_lead_uses_welch_and_a_mismatched_split_is_warned() -> None:
    rng = np.random.default_rng(6)
    data = pd.DataFrame({
        "variant": ["control"] * 900 + ["B"] * 300,
        "assigned_at": AS_OF - DAY,
        "trial": True,
        "outcome": np.concatenate([rng.exponential(100, 900), rng.exponential(150, 300)]),
    })
    result = compare_variants("price", "revenue", data, AS_OF)
    observed = data[data["variant"] == "B"]["outcome"].mean() - data[data["variant"] == "control"]["outcome"].mean()
    assert result.difference == pytest.approx(observed) and result.ci_low < observed < result.ci_high
    assert result.verdict == "winner" and result.winner == "B"
    assert any("sample ratio mismatch" in w for w in result.warnings)
    assert result.status == "running"


def hand_made_crm() -> dict[str, pd.DataFrame]:
    t = pd.Timestamp("2025-03-01")
    leads = pd.DataFrame({
        "lead_id": ["L1", "L2", "L3", "L4", "L5"],
        "created_at": [t] * 5,
        "source_channel": ["email"] * 5,
        # L1 converted after assignment; L2 before it (does not count); L3 after as_of (does not count).
        "converted_at": [t + 5 * DAY, t + DAY, AS_OF + DAY, None, None],
    })
    assignments = pd.DataFrame({
        "experiment": ["exp"] * 5,
        "variant": ["control", "B", "control", "B", "B"],
        "lead_id": ["L1", "L2", "L3", "L4", "L5"],
        "assigned_at": [t + DAY, t + 2 * DAY, t + DAY, t + DAY, AS_OF + 3 * DAY],  # L5: assigned after as_of
    })
    activities = pd.DataFrame({
        "lead_id": ["L1", "L1", "L2", "L4", "L4"],
        "occurred_at": [t + 2 * DAY, t + 3 * DAY, t + DAY, t + 2 * DAY, AS_OF + DAY],
        "activity_type": ["email_open", "email_click", "email_open", "email_open", "email_click"],
    })
    customers = pd.DataFrame({"customer_id": ["C1", "C3"], "lead_id": ["L1", "L3"], "created_at": [t, t]})
    orders = pd.DataFrame({"customer_id": ["C1", "C1", "C3"], "ordered_at": [t + 6 * DAY, t, t + 6 * DAY],
                           "amount": [100.0, 40.0, 70.0]})
    return {"leads": leads, "experiment_assignments": assignments, "activities": activities, "customers": customers,
            "orders": orders}


def test_outcomes_count_only_what_happened_after_assignment_and_by_as_of() -> None:
    crm = kpi_tables(**hand_made_crm())
    conversion = experiment_trials(crm, "conversion", AS_OF).set_index("lead_id")
    assert "L5" not in conversion.index
    assert conversion["outcome"].to_dict() == {"L1": 1.0, "L2": 0.0, "L3": 0.0, "L4": 0.0}
    ctr = experiment_trials(crm, "ctr", AS_OF).set_index("lead_id")
    assert ctr["trial"].to_dict() == {"L1": True, "L2": False, "L3": False, "L4": True}
    assert ctr.loc[["L1", "L4"], "outcome"].tolist() == [1.0, 0.0]
    revenue = experiment_trials(crm, "revenue", AS_OF).set_index("lead_id")
    assert revenue["outcome"].to_dict() == {"L1": 100.0, "L2": 0.0, "L3": 70.0, "L4": 0.0}
    (result,) = experiment_results(experiment_trials(crm, "conversion", AS_OF), "conversion", AS_OF)
    assert result.verdict == "too_little_data" and result.status == "finished"
    with pytest.raises(InvalidInput, match="--metric 'opens' is unknown"):
        experiment_trials(crm, "opens", AS_OF)


def test_a_crm_without_assignments_has_no_experiments() -> None:
    crm = kpi_tables(hand_made_crm()["leads"])
    assert crm.experiment_assignments.empty
    assert experiment_results(experiment_trials(crm, "conversion", AS_OF), "conversion", AS_OF) == []
