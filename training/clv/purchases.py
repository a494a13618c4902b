"""The purchase-and-dropout models (BG/NBD, MBG/NBD, Pareto/NBD): their parameters and per-customer predictions.

Each model says how often a customer buys while "alive" (Poisson at a rate lambda ~ Gamma(r, alpha), the
same in all three) and how they silently drop out:

- BG/NBD: after each repeat purchase, with probability p ~ Beta(a, b). A one-time buyer has never had the
  chance to drop out, so their P(alive) is 1 whatever their age (a known structural property);
- MBG/NBD: also at the first purchase, so one-time buyers fade too;
- Pareto/NBD: at any moment, at a rate mu ~ Gamma(s, beta).

Every function here takes the frequency, recency and T in the model's own time unit and dispatches on the
parameters' type; :func:`training.clv.predict.predict_clv` is the one entry point that calls them. The
BG/NBD formulas are lifetimes' (``BetaGeoFitter``), bit for bit; MBG/NBD's are
``ModifiedBetaGeoFitter``'s; Pareto/NBD's are in :mod:`training.clv.pareto_nbd`.

References
----------
Fader, P. S., Hardie, B. G. S., & Lee, K. L. (2005). "Counting Your Customers" the Easy Way (eqs. 9, 10).
Batislam, E. P., Denizel, M., & Filiztekin, A. (2007), and Wagner, U., & Hoppe, D. (2008), Erratum on the
MBG/NBD model. International Journal of Research in Marketing 24(3), 25(3).
Fader, P. S., & Hardie, B. G. S. (2005). A Note on Deriving the Pareto/NBD Model. brucehardie.com/notes/009.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
from scipy.special import expit, hyp2f1

from features.errors import InvalidInput
from training.clv import pareto_nbd

MODEL_LABELS: dict[str, str] = {"bgnbd": "BG/NBD", "mbgnbd": "MBG/NBD", "pnbd": "Pareto/NBD"}
"""The models by their short name (``--model``), in the order they are listed."""


class _Named:
    """What every fitted purchase model says about itself: its short name, label and parameters by name."""

    kind: ClassVar[str]
    names: ClassVar[tuple[str, ...]]

    @property
    def label(self) -> str:
        """The model's name as it is written: ``BG/NBD``, ``MBG/NBD`` or ``Pareto/NBD``."""
        return MODEL_LABELS[self.kind]

    def values(self) -> dict[str, float]:
        """The population parameters under their usual names."""
        return {name: getattr(self, name) for name in self.names}


@dataclass(frozen=True)
class _BetaDropout(_Named):
    """BG/NBD and MBG/NBD: Gamma(r, alpha) purchase rates, Beta(a, b) dropout chances at purchases.

    ``at_bound`` names the parameters whose fit ran towards 0 or infinity, e.g. ``("a->0",)`` (see
    ``training.clv.diagnostics``).
    """

    r: float
    alpha: float
    a: float
    b: float
    penalizer: float
    log_likelihood: float
    n_customers: int
    at_bound: tuple[str, ...] = ()

    names: ClassVar[tuple[str, ...]] = ("r", "alpha", "a", "b")


@dataclass(frozen=True)
class BgNbdParameters(_BetaDropout):
    """Fitted BG/NBD population parameters (``alpha`` in the model's time unit)."""

    kind: ClassVar[str] = "bgnbd"


@dataclass(frozen=True)
class MbgNbdParameters(_BetaDropout):
    """Fitted MBG/NBD population parameters (``alpha`` in the model's time unit)."""

    kind: ClassVar[str] = "mbgnbd"


@dataclass(frozen=True)
class ParetoNbdParameters(_Named):
    """Fitted Pareto/NBD population parameters (``alpha`` and ``beta`` in the model's time unit)."""

    r: float
    alpha: float
    s: float
    beta: float
    penalizer: float
    log_likelihood: float
    n_customers: int
    at_bound: tuple[str, ...] = ()

    kind: ClassVar[str] = "pnbd"
    names: ClassVar[tuple[str, ...]] = ("r", "alpha", "s", "beta")


PurchaseParameters = BgNbdParameters | MbgNbdParameters | ParetoNbdParameters
PARAMETER_TYPES: dict[str, type] = {"bgnbd": BgNbdParameters, "mbgnbd": MbgNbdParameters, "pnbd": ParetoNbdParameters}


def parameters_from_values(kind: str, values: dict[str, Any]) -> PurchaseParameters:
    """Rebuild a model's parameters from their JSON dict (``at_bound`` as a list)."""
    if kind not in PARAMETER_TYPES:
        raise InvalidInput(f"CLV parameters: unknown model {kind!r}; expected one of {', '.join(PARAMETER_TYPES)}")
    known = {f.name for f in fields(PARAMETER_TYPES[kind])}
    given = {k: v for k, v in values.items() if k in known}
    given["at_bound"] = tuple(given.get("at_bound") or ())
    return PARAMETER_TYPES[kind](**given)


def _signed_log_hyp2f1(a: np.ndarray, b: np.ndarray, c: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sign and log of the absolute value of 2F1(a, b; c; z), 0 <= z < 1, as lifetimes computes its log.

    Where 2F1 overflows, Euler's transformation ``(1 - z)^(c - a - b) 2F1(c - a, c - b; c; z)`` (lifetimes' fallback).
    With ``c < 0`` (BG/NBD's ``a + b + x - 1`` for a one-time buyer when a + b < 1) 2F1 can be negative: lifetimes
    takes its log and answers NaN; here its sign is kept, so the expectation stays finite and continuous across
    a + b = 1.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        value = np.asarray(hyp2f1(a, b, c, z), dtype="float64")
        infinite = np.isinf(value)
        if infinite.any():
            value[infinite] = hyp2f1((c - a)[infinite], (c - b)[infinite], c[infinite], z[infinite])
        ln_abs = np.log(np.abs(value))
        if infinite.any():
            ln_abs[infinite] += (c - a - b)[infinite] * np.log(1 - z[infinite])
    return np.sign(value), ln_abs


def _bgnbd_numerator(bg: BgNbdParameters, x: np.ndarray, age: np.ndarray, t: float) -> np.ndarray:
    """The t-dependent part of BG/NBD's conditional expectation (eq. 10), as lifetimes computes it."""
    r, alpha, a, b = bg.r, bg.alpha, bg.a, bg.b
    _a = r + x
    _b = b + x
    _c = a + b + x - 1
    _z = t / (alpha + age + t)
    sign, ln_hyp = _signed_log_hyp2f1(_a, _b, _c, _z)
    first_term = (a + b + x - 1) / (a - 1)
    second_term = 1 - sign * np.exp(ln_hyp + (r + x) * np.log((alpha + age) / (alpha + t + age)))
    return first_term * second_term


def _mbgnbd_numerator(bg: MbgNbdParameters, x: np.ndarray, age: np.ndarray, t: float) -> np.ndarray:
    """The t-dependent part of MBG/NBD's conditional expectation (Wagner & Hoppe 2008), as lifetimes'."""
    r, alpha, a, b = bg.r, bg.alpha, bg.a, bg.b
    _a, _b, _c = r + x, b + x + 1, a + b + x
    _z = t / (alpha + age + t)
    sign, ln_hyp = _signed_log_hyp2f1(_a, _b, _c, _z)
    return (a + b + x) / (a - 1) * (1 - sign * np.exp(ln_hyp + (r + x) * np.log((alpha + age) / (alpha + t + age))))


def _distinct(x: np.ndarray, age: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (frequency, T) pairs and the index of each customer's pair."""
    x_values, x_code = np.unique(x, return_inverse=True)
    t_values, t_code = np.unique(age, return_inverse=True)
    key = x_code.astype(np.int64) * len(t_values) + t_code
    keys, inverse = np.unique(key, return_inverse=True)
    return x_values[keys // len(t_values)], t_values[keys % len(t_values)], inverse


def probability_alive(model: PurchaseParameters, x: np.ndarray, recency: np.ndarray, age: np.ndarray) -> np.ndarray:
    """P(alive) given (frequency, recency, T) in the model's time unit (BG/NBD: 1 for one-time buyers)."""
    if isinstance(model, MbgNbdParameters):
        odds = model.a / (model.b + x) * ((model.alpha + age) / (model.alpha + recency)) ** (model.r + x)
        return 1.0 / (1.0 + odds)
    if isinstance(model, BgNbdParameters):
        log_div = ((model.r + x) * np.log((model.alpha + age) / (model.alpha + recency))
                   + np.log(model.a / (model.b + np.maximum(x, 1) - 1)))
        return np.where(x == 0, 1.0, expit(-log_div))
    return expit(-pareto_nbd.log_death_odds(model.r, model.alpha, model.s, model.beta, x, recency, age))


def cumulative_purchases(model: PurchaseParameters, x: np.ndarray, recency: np.ndarray, age: np.ndarray
                         ) -> Callable[[float], np.ndarray]:
    """``t -> expected repeat purchases in (T, T + t]`` per customer (t in the model's unit).

    The t-independent parts (P(alive), the BG/NBD denominator) are computed once, and the hypergeometric
    part once per distinct (frequency, T), so a horizon cut into discounting periods costs little more than one.
    """
    if isinstance(model, _BetaDropout):
        modified = isinstance(model, MbgNbdParameters)
        dropout = model.a / (model.b + x) if modified else (x > 0) * (model.a / (model.b + x - 1))
        denominator = 1 + dropout * ((model.alpha + age) / (model.alpha + recency)) ** (model.r + x)
        ux, uage, inverse = _distinct(x, age)
        numerator = _mbgnbd_numerator if modified else _bgnbd_numerator
        return lambda t: numerator(model, ux, uage, t)[inverse] / denominator
    alive = probability_alive(model, x, recency, age)
    r, alpha, s, beta = model.r, model.alpha, model.s, model.beta
    return lambda t: alive * pareto_nbd.expected_purchases_if_alive(r, alpha, s, beta, x, age, t)


def probability_of_buying(model: PurchaseParameters, x: np.ndarray, recency: np.ndarray, age: np.ndarray,
                          duration: np.ndarray | float) -> np.ndarray:
    """P(at least one purchase in (T, T + duration]) given the history: P(alive) x P(buys | alive); ``duration``
    one for all customers or one per customer."""
    alive = probability_alive(model, x, recency, age)
    if isinstance(model, _BetaDropout):
        # (MBG/)BG/NBD customers only drop out right after a purchase: alive, the next purchase is sure to come.
        return alive * (1 - ((model.alpha + age) / (model.alpha + age + duration)) ** (model.r + x))
    return alive * pareto_nbd.probability_of_buying_if_alive(model.r, model.alpha, model.s, model.beta, x, age,
                                                             duration)


def expected_purchases_new_customer(model: PurchaseParameters, t: np.ndarray) -> np.ndarray:
    """Expected repeat purchases of a new customer within ``t`` (model unit): BG/NBD eq. 9 and its siblings."""
    if isinstance(model, MbgNbdParameters):
        hyp = hyp2f1(model.r, model.b + 1, model.a + model.b, t / (model.alpha + t))
        return model.b / (model.a - 1) * (1 - hyp * (model.alpha / (model.alpha + t)) ** model.r)
    if isinstance(model, BgNbdParameters):
        hyp = hyp2f1(model.r, model.b, model.a + model.b - 1, t / (model.alpha + t))
        return (model.a + model.b - 1) / (model.a - 1) * (1 - hyp * (model.alpha / (model.alpha + t)) ** model.r)
    return pareto_nbd.expected_purchases_new_customer(model.r, model.alpha, model.s, model.beta, t)
