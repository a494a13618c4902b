"""Choosing the purchase model on the holdout: the three models on CDNOW, and the criterion itself."""

from __future__ import annotations

import pytest

from features.errors import InvalidInput
from tests.training.clv.test_fit import cdnow_transactions
from training.clv.evaluation import HoldoutSummary
from training.clv.fit import ModelDidNotConverge
from training.clv.job import CLVConfig, fit_clv
from training.clv.purchases import BgNbdParameters, MbgNbdParameters, ParetoNbdParameters
from training.clv.selection import Candidate, choose


@pytest.fixture(scope="module")
def cdnow_fit():
    transactions = cdnow_transactions().rename(columns={"date": "ordered_at"})
    return fit_clv(transactions, CLVConfig("1997-09-30", "1998-06-30", time_unit="W", source="CDNOW sample"))


def test_three_models_on_the_cdnow_holdout(cdnow_fit) -> None:
    """Weeks 40-78: 1,882 actual repeat purchases. Predicted (best penalizer each): BG/NBD 1,653 (MAE 0.786),
    MBG/NBD 1,632 (0.764), Pareto/NBD 1,666 (0.755): ``auto`` takes Pareto/NBD, the lowest MAE."""
    by_kind = {c.kind: c for c in cdnow_fit.choice.candidates}
    assert set(by_kind) == {"bgnbd", "mbgnbd", "pnbd"}
    expected = {"bgnbd": (1653.4, 0.7855), "mbgnbd": (1631.6, 0.7644), "pnbd": (1665.5, 0.7545)}
    for kind, (predicted, mae) in expected.items():
        candidate = by_kind[kind]
        assert candidate.converged and not candidate.degenerate
        assert candidate.holdout.actual_purchases == 1882
        assert candidate.holdout.predicted_purchases == pytest.approx(predicted, abs=0.5)
        assert candidate.holdout.mae == pytest.approx(mae, abs=5e-4)
    assert cdnow_fit.params.model == "pnbd"
    assert cdnow_fit.choice.reason.startswith("lowest holdout MAE (Pareto/NBD 0.7545, MBG/NBD 0.7644, BG/NBD 0.7855)")
    assert by_kind["bgnbd"].purchases.penalizer == 0.0 and by_kind["pnbd"].purchases.penalizer == 0.0
    assert cdnow_fit.params.segment_rule.basis == "p_alive" and cdnow_fit.params.warnings == ()
    assert cdnow_fit.segments == {"champions": 427, "loyal": 193, "promising": 0, "at_risk": 200, "lost": 1537}
    assert cdnow_fit.warnings == ("no customer in segment promising (of 2,357 customers at 1998-06-30): the value "
                                  "cut-offs are percentiles over all customers, and 74% of them are lost or at risk",)
    as_json = by_kind["pnbd"].as_dict()
    assert set(as_json["params"]) == {"r", "alpha", "s", "beta"}
    assert as_json["holdout"]["predicted_purchases"] == pytest.approx(1665.5, abs=0.5)


def _candidate(kind: str, mae: float, log_likelihood: float, problems: tuple[str, ...] = (),
               converged: bool = True, predicted: float = 50.0) -> Candidate:
    cls = {"bgnbd": BgNbdParameters, "mbgnbd": MbgNbdParameters, "pnbd": ParetoNbdParameters}[kind]
    fit = cls(1.0, 2.0, 3.0, 4.0, 0.0, log_likelihood, 100) if converged else None
    holdout = HoldoutSummary(100, 50.0, predicted, mae, 0.5) if converged else None
    return Candidate(kind, fit, holdout, {0.0: mae}, (0.1, 0.9), problems if converged else ("did not converge",))


def test_lowest_mae_wins_and_near_ties_go_to_the_closest_holdout_total() -> None:
    """50 actual holdout purchases: within 1% of the lowest MAE, the total closest to 50 wins whatever the calibration
    log-likelihood says; the log-likelihood only breaks an exact tie."""
    clear = choose([_candidate("bgnbd", 1.00, -100.0), _candidate("mbgnbd", 0.90, -200.0),
                    _candidate("pnbd", 0.95, -50.0)])
    assert clear.chosen.kind == "mbgnbd" and clear.reason.startswith("lowest holdout MAE")
    tie = choose([_candidate("bgnbd", 1.000, -100.0, predicted=41.0),
                  _candidate("mbgnbd", 1.005, -90.0, predicted=40.0),
                  _candidate("pnbd", 1.009, -300.0, predicted=52.0)])
    assert tie.chosen.kind == "pnbd" and tie.warnings == ()
    assert tie.reason == ("holdout MAE within 1% of the lowest for BG/NBD, MBG/NBD, Pareto/NBD (BG/NBD 1.0000, MBG/NBD "
                          "1.0050, Pareto/NBD 1.0090); total predicted repeat purchases closest to the actual 50 "
                          "(Pareto/NBD 52.0, BG/NBD 41.0, MBG/NBD 40.0)")
    outside = choose([_candidate("bgnbd", 1.000, -100.0, predicted=41.0), _candidate("pnbd", 1.02, -90.0)])
    assert outside.chosen.kind == "bgnbd"  # 2% worse is no tie, however close its total
    exact = choose([_candidate("bgnbd", 1.0, -100.0, predicted=45.0), _candidate("mbgnbd", 1.0, -90.0, predicted=55.0)])
    assert exact.chosen.kind == "mbgnbd"


def test_degenerate_models_are_chosen_only_when_all_are() -> None:
    degenerate = ("X fit at a bound: a = 1e-09 (towards 0)",)
    some = choose([_candidate("bgnbd", 0.5, -10.0, degenerate), _candidate("mbgnbd", 0.9, -90.0),
                   _candidate("pnbd", 1.0, -80.0, converged=False)])
    assert some.chosen.kind == "mbgnbd"
    assert some.warnings == (f"BG/NBD not chosen: {degenerate[0]}", "Pareto/NBD not chosen: did not converge")
    everyone = choose([_candidate(k, m, -10.0, degenerate) for k, m in (("bgnbd", 0.5), ("mbgnbd", 0.6),
                                                                        ("pnbd", 0.7))])
    assert everyone.chosen.kind == "bgnbd"
    assert everyone.warnings[0] == degenerate[0]
    assert "every CLV model is degenerate on this data" in everyone.warnings[1]


def test_a_requested_model_is_taken_whatever_the_holdout_says() -> None:
    candidates = [_candidate("bgnbd", 0.5, -10.0), _candidate("mbgnbd", 0.9, -90.0),
                  _candidate("pnbd", 1.0, -80.0, converged=False)]
    forced = choose(candidates, "mbgnbd")
    assert forced.chosen.kind == "mbgnbd" and forced.reason == "--model mbgnbd"
    with pytest.raises(ModelDidNotConverge, match="--model pnbd: did not converge"):
        choose(candidates, "pnbd")
    with pytest.raises(InvalidInput, match="--model: expected one of auto, bgnbd, mbgnbd, pnbd"):
        CLVConfig("2024-06-30", "2024-12-31", model="bg/nbd")  # checked before any fit
    with pytest.raises(ModelDidNotConverge):
        choose([_candidate(k, 1.0, -1.0, converged=False) for k in ("bgnbd", "mbgnbd", "pnbd")])
