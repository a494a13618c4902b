"""Fits on many rows start from a fit on a sample: the same optimum as the fit from lifetimes' start, and degenerate
fits (a parameter at its bound) end exactly where they always did."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.rfm import rfm_summary
from tests.training.clv.test_degenerate import no_dropout_transactions
from tests.training.clv.test_fit import simulated_transactions
from training.clv import fit
from training.clv.fit import fit_gamma_gamma, fit_purchases


def _fits(rfm: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, sampled: bool) -> dict[str, list[float]]:
    """Every purchase model and Gamma-Gamma on ``rfm``, with the sample's start on any size or never."""
    monkeypatch.setattr(fit, "SAMPLED_ABOVE", 500 if sampled else 10**12)
    monkeypatch.setattr(fit, "SAMPLE_ROWS", 400)
    gg = fit_gamma_gamma(rfm)
    return {kind: fit_purchases(kind, rfm) for kind in ("bgnbd", "mbgnbd", "pnbd")} | {"gg": [gg.p, gg.q, gg.v]}


def test_a_fit_from_a_samples_start_reaches_the_same_optimum(monkeypatch: pytest.MonkeyPatch) -> None:
    rfm = rfm_summary(simulated_transactions(4000, seed=5), "2024-12-31")
    sampled, plain = _fits(rfm, monkeypatch, True), _fits(rfm, monkeypatch, False)
    for kind in ("bgnbd", "mbgnbd", "pnbd"):
        assert not sampled[kind].at_bound
        np.testing.assert_allclose(list(sampled[kind].values().values()), list(plain[kind].values().values()),
                                   rtol=2e-6)
        assert sampled[kind].log_likelihood == pytest.approx(plain[kind].log_likelihood, rel=1e-10)
    np.testing.assert_allclose(sampled["gg"], plain["gg"], rtol=2e-6)


def test_a_fit_at_its_bound_is_the_one_from_lifetimes_start(monkeypatch: pytest.MonkeyPatch) -> None:
    rfm = rfm_summary(no_dropout_transactions(1500, seed=0), "2024-12-31")
    sampled, plain = _fits(rfm, monkeypatch, True), _fits(rfm, monkeypatch, False)
    for kind in ("bgnbd", "mbgnbd", "pnbd"):
        assert sampled[kind].at_bound and sampled[kind] == plain[kind]
