"""Degenerate CLV fits, said in words: a parameter at its bound, a dropout that collapsed, Gamma-Gamma's doubts.

A fit can converge and still say nothing useful. On a year of an online retailer's transactions, BG/NBD,
MBG/NBD and Pareto/NBD all drive their dropout to ~0: P(alive) is 1.000 for every customer, ``at_risk`` is
empty and the segments are plain value quantiles. These checks turn such fits into warnings:

- a parameter at its bound: its log (time scaled so the largest T is 1) ended beyond +-10
  (``training.clv.fit.LOG_BOUND``): the likelihood kept improving towards 0 or infinity;
- a collapsed dropout: P(alive) of the central 98% of customers within 0.05
  (``features.kpi.predictive.p_alive_informative``): it tells no one apart, so segments go by value and
  recency instead;
- Gamma-Gamma: frequency and order value correlated (|r| > 0.3) among repeat buyers, or q <= 1 (the mean
  order value is infinite: CLV means nothing);
- non-convergence (worded in ``training.clv.selection``): a penalizer a model or Gamma-Gamma had no usable fit
  with, or a model that had none at all (it is then no candidate);
- an empty segment among the customers at the observation end.

``train clv`` says every warning on stderr, under ``warnings`` in ``--json`` and in the MLflow run (the
``warnings`` tag and ``warnings.json``). The model's own (its fit at a bound or collapsed, its penalizers
without a usable fit, Gamma-Gamma's doubts, segments by recency) also travel with the registered model
(``CLVParameters.warnings``): every nightly run that scores with it and the report repeat them. What is said
about the training data and the choice (an empty segment, a model not chosen, every model degenerate) stays
with the training run.

``auto`` never chooses a degenerate model (at a bound or collapsed) when another is not.
"""

from __future__ import annotations

from collections.abc import Mapping

from training.clv.fit import GAMMA_GAMMA_CORRELATION_LIMIT, GammaGammaParameters, gamma_gamma_assumption_holds
from training.clv.purchases import ParetoNbdParameters, PurchaseParameters

_NO_DROPOUT = {"a->0", "b->inf", "s->0", "beta->inf"}
"""Bounds at which a model's dropout vanishes."""
_ALIKE_DROPOUT = ({"a->inf", "b->inf"}, {"s->inf", "beta->inf"})
"""Both parameters of the dropout towards infinity: its mean stays, its spread over customers vanishes."""


def bound_warning(model: PurchaseParameters) -> str | None:
    """Words for the parameters of ``model`` that ran to a bound; None when none did."""
    if not model.at_bound:
        return None
    ran = ", ".join(f"{bound.split('->')[0]} = {getattr(model, bound.split('->')[0]):.3g} (towards "
                    f"{'infinity' if bound.endswith('inf') else '0'})" for bound in model.at_bound)
    names = {bound.split("->")[0] for bound in model.at_bound}
    pareto = isinstance(model, ParetoNbdParameters)
    if any(both <= set(model.at_bound) for both in _ALIKE_DROPOUT):
        mean = (f"mean s/beta = {model.s / model.beta:.2g} per time unit" if pareto
                else f"mean a/(a+b) = {model.a / (model.a + model.b):.2g} per purchase")
        meaning = (f"dropout {'rates' if pareto else 'probabilities'} look alike for every customer ({mean}; their "
                   "spread collapsed)")
    elif _NO_DROPOUT & set(model.at_bound):
        if pareto:
            meaning = (f"the dropout rate collapsed to ~0 (mean s/beta = {model.s / model.beta:.2g} per time unit): "
                       "the model sees customers who never leave")
        else:
            meaning = (f"the dropout probability collapsed to ~0 (mean a/(a+b) = {model.a / (model.a + model.b):.2g} "
                       "per purchase): the model sees customers who never leave")
    elif {"r", "alpha"} & names:
        meaning = "purchase rates look alike for every customer (their Gamma spread collapsed)"
    else:
        meaning = "the likelihood kept improving towards the edge of the parameter space"
    return f"{model.label} fit at a bound: {ran}; {meaning}"


def collapse_warning(model: PurchaseParameters, p_alive_range: tuple[float, float]) -> str:
    """Words for a P(alive) that carries no information."""
    low, high = p_alive_range
    return (f"{model.label}: P(alive) is {low:.3f} to {high:.3f} for 98% of customers (a dropout that collapsed): "
            "it tells no one apart, so P(alive) and segments by P(alive) would mean nothing")


def segments_fallback_warning(p_alive_range: tuple[float, float], at_risk_days: float, lost_days: float) -> str:
    """Words for segments that go by value and recency because P(alive) carries no information."""
    low, high = p_alive_range
    return (f"segments by value and recency, not P(alive) (which is {low:.3f} to {high:.3f} for 98% of customers): "
            f"at_risk after {at_risk_days:,.0f} days without a purchase, lost after {lost_days:,.0f}")


def gamma_gamma_warnings(gamma_gamma: GammaGammaParameters | None, correlation: float) -> list[str]:
    """Gamma-Gamma's assumption failures: correlated frequency and order value, or an infinite mean order value."""
    out = []
    if not gamma_gamma_assumption_holds(correlation):
        out.append(f"Gamma-Gamma: frequency and monetary value correlate (r = {correlation:.2f}, |r| > "
                   f"{GAMMA_GAMMA_CORRELATION_LIMIT}) among repeat buyers: it assumes they are independent, so order "
                   "values and CLV may be biased")
    if gamma_gamma is not None and gamma_gamma.q <= 1:
        out.append(f"Gamma-Gamma: q = {gamma_gamma.q:.3g} <= 1, so the population's mean order value is infinite and "
                   "expected order values (and CLV) mean nothing; check order values for outliers")
    return out


def empty_segments_warning(counts: Mapping[str, int], as_of: str) -> str | None:
    """Words for the segments no customer is in at training; None when every segment has someone.

    The value cut-offs are percentiles over all customers: when most are lost or at risk, every active customer is
    above them and ``promising`` (or ``loyal``) stays empty, as on CDNOW.
    """
    empty = [name for name, n in counts.items() if n == 0]
    total = sum(counts.values())
    if not empty or not total:
        return None
    gone = (counts.get("lost", 0) + counts.get("at_risk", 0)) / total
    why = (f": the value cut-offs are percentiles over all customers, and {gone:.0%} of them are lost or at risk"
           if gone > 0.5 and {"champions", "loyal", "promising"} & set(empty) else "")
    return f"no customer in segment {', '.join(empty)} (of {total:,} customers at {as_of}){why}"
