"""Choosing the models on the holdout: the purchase model among BG/NBD, MBG/NBD and Pareto/NBD, and the penalizers.

Each model is fitted for every penalizer of the grid and keeps the fit with the lowest holdout MAE of
per-customer repeat purchases (the metric champions are gated on). ``auto`` then chooses among the
models that are not degenerate (a parameter at its bound, or a P(alive) that tells no one apart, see
``training.clv.diagnostics``; when all are, among all of them, with a warning):

- the lowest holdout MAE;
- models within 1% of that MAE are a tie (per customer a single holdout does not tell them apart): the
  one whose total predicted repeat purchases over the holdout come closest to the actual total wins (what
  sums of CLV over customers rest on); the calibration log-likelihood only breaks an exact tie. (The
  likelihood alone, an in-sample figure, would pick MBG/NBD on the full CDNOW and on lifetimes' example
  transactions while it misses the holdout total by 19% and 14%, against 13% and 0.4% for Pareto/NBD.)

``--model bgnbd|mbgnbd|pnbd`` takes that model whatever the comparison says (and fails if it did not
converge with any penalizer); all three are fitted and reported either way. Gamma-Gamma keeps the
penalizer with the lowest holdout MAE of the mean order value of customers who bought in both periods.
A penalizer a model (or Gamma-Gamma) did not converge with, or that predicted non-finite values, is left
out with a warning (non-convergence); a model with no usable penalizer is not a candidate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.kpi.predictive import p_alive_informative, p_alive_range
from training.clv.diagnostics import bound_warning, collapse_warning
from training.clv.evaluation import HoldoutSummary, evaluate_on_holdout
from training.clv.fit import GammaGammaParameters, ModelDidNotConverge, fit_gamma_gamma, fit_purchases
from training.clv.predict import CLVParameters, expected_order_value
from training.clv.purchases import MODEL_LABELS, PurchaseParameters, probability_alive

MODEL_CHOICES: tuple[str, ...] = ("auto", *MODEL_LABELS)
"""What ``--model`` accepts (``CLVConfig`` checks it)."""
NEAR_TIE = 0.01
"""Holdout MAEs within this share of the lowest are a tie, broken by the total predicted holdout purchases."""


@dataclass(frozen=True)
class Candidate:
    """One purchase model's best fit over the penalizer grid, with its holdout figures and problems."""

    kind: str
    purchases: PurchaseParameters | None
    holdout: HoldoutSummary | None
    mae_by_penalizer: dict[float, float]
    p_alive_range: tuple[float, float]
    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()
    """What deserves a warning without making the fit degenerate: penalizers it did not converge with."""

    @property
    def label(self) -> str:
        """The model's name as it is written: ``BG/NBD``, ``MBG/NBD`` or ``Pareto/NBD``."""
        return MODEL_LABELS[self.kind]

    @property
    def converged(self) -> bool:
        """Whether some penalizer of the grid gave a usable fit (one that converged to finite predictions)."""
        return self.purchases is not None

    @property
    def degenerate(self) -> bool:
        """At a bound or with a collapsed dropout (a candidate that did not converge is not a candidate)."""
        return self.converged and bool(self.problems)

    def as_dict(self) -> dict[str, object]:
        """The candidate in ``--json``: model, params, log_likelihood, penalizer, holdout, p_alive_range, ..."""
        fit = self.purchases
        return {
            "model": self.kind,
            "label": self.label,
            "converged": self.converged,
            "degenerate": self.degenerate,
            "params": fit.values() if fit else None,
            "at_bound": list(fit.at_bound) if fit else [],
            "log_likelihood": fit.log_likelihood if fit else None,
            "penalizer": fit.penalizer if fit else None,
            "holdout": self.holdout.as_dict() if self.holdout else None,
            "mae_by_penalizer": {f"{k:g}": v for k, v in self.mae_by_penalizer.items()},
            "p_alive_range": list(self.p_alive_range),
            "warnings": [*self.problems, *self.notes],
        }


@dataclass(frozen=True)
class Choice:
    """The chosen candidate, all of them, why, and what deserves a warning."""

    chosen: Candidate
    candidates: tuple[Candidate, ...]
    reason: str
    warnings: tuple[str, ...]


def fit_candidate(kind: str, holdout: pd.DataFrame, penalizers: tuple[float, ...], time_unit: str) -> Candidate:
    """``kind`` fitted for each penalizer on the calibration RFM of ``holdout``; the lowest holdout MAE wins
    (ties: the smaller penalizer). A fit that does not converge is left out (its MAE NaN)."""
    errors: dict[float, float] = {}
    failed: dict[str, list[float]] = {}
    best: tuple[float, PurchaseParameters, HoldoutSummary] | None = None
    previous = None
    for penalizer in sorted(penalizers):
        try:  # each penalizer starts from the fit for the one before unless at a bound (the first: lifetimes' start)
            fit = previous = fit_purchases(kind, holdout, penalizer, time_unit,
                                           previous if previous is not None and not previous.at_bound else None)
        except ModelDidNotConverge:
            errors[penalizer] = float("nan")
            failed.setdefault("did not converge", []).append(penalizer)
            continue
        summary, _ = evaluate_on_holdout(CLVParameters(time_unit, fit, None), holdout)
        errors[penalizer] = summary.mae
        if not np.isfinite(summary.mae):
            failed.setdefault("predicted non-finite holdout purchases", []).append(penalizer)
        elif best is None or summary.mae < best[0]:
            best = (summary.mae, fit, summary)
    label = MODEL_LABELS[kind]
    if best is None:
        return Candidate(kind, None, None, errors, (float("nan"), float("nan")),
                         (f"{label}: no usable fit with any penalizer: {_failures(failed)}",))
    _, fit, summary = best
    notes = ((f"{label}: no usable fit with penalizer {_failures(failed)}; kept penalizer {fit.penalizer:g}, the "
              "lowest holdout MAE of the others"),) if failed else ()
    alive = probability_alive(fit, holdout["frequency"].to_numpy(dtype="float64"),
                              holdout["recency"].to_numpy(dtype="float64"), holdout["T"].to_numpy(dtype="float64"))
    span = p_alive_range(alive)
    problems = [text for text in (bound_warning(fit),) if text]
    if not p_alive_informative(span):
        problems.append(collapse_warning(fit, span))
    return Candidate(kind, fit, summary, errors, span, tuple(problems), notes)


def _failures(failed: dict[str, list[float]]) -> str:
    """``{"did not converge": [0.001, 0.01]}`` as ``0.001, 0.01 (did not converge)``."""
    return "; ".join(f"{', '.join(f'{p:g}' for p in penalizers)} ({why})" for why, penalizers in failed.items())


def _near_tie_winner(pool: list[Candidate]) -> tuple[Candidate, str]:
    """The lowest holdout MAE among ``pool``, near-ties won by the total predicted holdout purchases (then the
    calibration log-likelihood), and the reason in words."""
    best_mae = min(c.holdout.mae for c in pool)
    tied = [c for c in pool if c.holdout.mae <= best_mae * (1 + NEAR_TIE)]
    winner = min(tied, key=lambda c: (_total_miss(c), -c.purchases.log_likelihood, c.holdout.mae))
    maes = ", ".join(f"{c.label} {c.holdout.mae:.4f}" for c in sorted(pool, key=lambda c: c.holdout.mae))
    if len(tied) == 1:
        return winner, f"lowest holdout MAE ({maes})"
    actual = winner.holdout.actual_purchases
    totals = ", ".join(f"{c.label} {c.holdout.predicted_purchases:,.1f}" for c in sorted(tied, key=_total_miss))
    return winner, (f"holdout MAE within {NEAR_TIE:.0%} of the lowest for {', '.join(c.label for c in tied)} "
                    f"({maes}); total predicted repeat purchases closest to the actual {actual:,.0f} ({totals})")


def _total_miss(candidate: Candidate) -> float:
    """How far the candidate's total predicted holdout purchases are from the actual total."""
    return abs(candidate.holdout.predicted_purchases - candidate.holdout.actual_purchases)


def choose(candidates: list[Candidate], requested: str = "auto") -> Choice:
    """The model ``requested`` (one of :data:`MODEL_CHOICES`, as ``CLVConfig`` checks; ``auto``: by the criterion in
    the module docstring) and the warnings to give.

    Raises ``ModelDidNotConverge`` when no candidate (or the requested one) converged.
    """
    converged = [c for c in candidates if c.converged]
    if not converged:
        raise ModelDidNotConverge("; ".join(p for c in candidates for p in c.problems) + "; try the other time unit "
                                  "(--time-unit W or D), a longer calibration period or more customers with repeat "
                                  "purchases")
    notes: list[str] = []
    if requested != "auto":
        (chosen,) = [c for c in candidates if c.kind == requested]
        if not chosen.converged:
            raise ModelDidNotConverge(f"--model {requested}: {chosen.problems[0]}; try --model auto, the other time "
                                      "unit (--time-unit W or D) or a longer calibration period")
        reason = f"--model {requested}"
    else:
        healthy = [c for c in converged if not c.degenerate]
        chosen, reason = _near_tie_winner(healthy or converged)
        if not healthy:
            notes.append(f"every CLV model is degenerate on this data ({', '.join(c.label for c in converged)}); "
                         f"{chosen.label} was chosen by the holdout anyway: read its P(alive) and segments with care")
    for c in candidates:
        if c is not chosen and (c.degenerate or not c.converged):
            notes.append(f"{c.label} not chosen: {'; '.join(c.problems)}")
    return Choice(chosen, tuple(candidates), reason, (*chosen.problems, *chosen.notes, *notes))


def gamma_gamma_rows(rfm: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The customers Gamma-Gamma can learn from, and a warning naming the repeat buyers left out: those whose repeat
    orders are worth 0 in total (free orders, refunds), whose mean order value Gamma-Gamma cannot fit.

    They keep their purchase predictions; their expected order value leans towards 0 like any customer's towards their
    own mean.
    """
    worthless = ((rfm["frequency"] > 0) & (rfm["monetary_value"] <= 0)).to_numpy()
    if not worthless.any():
        return rfm, []
    ids = rfm["customer_id"].astype(str).to_numpy()[worthless] if "customer_id" in rfm else np.flatnonzero(worthless)
    shown = ", ".join(map(str, ids[:5])) + (f" and {len(ids) - 5:,} more" if len(ids) > 5 else "")
    buyers = int((rfm["frequency"] > 0).sum())
    return rfm[~worthless], [f"Gamma-Gamma: {len(ids):,} of {buyers:,} repeat buyers have repeat orders worth 0 in "
                             f"total (customer {shown}) and were left out of its fit (it needs positive order values)"]


def fit_gamma_gamma_on_holdout(holdout: pd.DataFrame, penalizers: tuple[float, ...]
                               ) -> tuple[GammaGammaParameters, dict[float, float]]:
    """The Gamma-Gamma fit with the lowest holdout MAE of mean order value (customers buying in both periods)."""
    both = holdout[(holdout["frequency"] > 0) & (holdout["frequency_holdout"] > 0)]
    errors: dict[float, float] = {}
    best: tuple[float, GammaGammaParameters] | None = None
    for penalizer in sorted(penalizers):
        try:
            gg = fit_gamma_gamma(holdout, penalizer)
        except ModelDidNotConverge:
            errors[penalizer] = float("nan")
            continue
        predicted = expected_order_value(gg, both["frequency"].to_numpy(dtype="float64"),
                                         both["monetary_value"].to_numpy(dtype="float64"))
        mae = float(np.abs(predicted - both["monetary_value_holdout"].to_numpy()).mean()) if len(both) else 0.0
        errors[penalizer] = mae
        if np.isfinite(mae) and (best is None or mae < best[0]):
            best = (mae, gg)
    if best is None:
        raise ModelDidNotConverge(
            f"Gamma-Gamma did not converge to finite order values with any penalizer in {sorted(penalizers)}; "
            "check order values for outliers and currency mix-ups, or train with more repeat buyers"
        )
    return best[1], errors


def gamma_gamma_notes(gamma_gamma: GammaGammaParameters | None, mae_by_penalizer: dict[float, float]) -> list[str]:
    """A warning naming the penalizers Gamma-Gamma had no usable fit with (when another one had)."""
    failed = [p for p, mae in sorted(mae_by_penalizer.items()) if not np.isfinite(mae)]
    if gamma_gamma is None or not failed:
        return []
    return [(f"Gamma-Gamma: no usable fit with penalizer {', '.join(f'{p:g}' for p in failed)} (did not converge "
             f"or predicted non-finite order values); kept penalizer {gamma_gamma.penalizer:g}, the lowest holdout "
             "MAE of the others")]
