"""BG/NBD, MBG/NBD and Gamma-Gamma negative log-likelihoods with analytic gradients, fast on millions of customers.

The objectives are lifetimes' own (``BetaGeoFitter``, ``ModifiedBetaGeoFitter`` and ``GammaGammaFitter``'s
``_negative_log_likelihood``): a weighted mean over rows plus
``penalizer * sum(params ** 2)``, in log-parameters, BG/NBD times scaled so that the largest T is 1.
They are rearranged so that every term that depends on one variable only (frequency, recency, T or
order value) is computed once per distinct value: the gammas once per frequency, the logs once per
distinct recency and T. Per customer row only a log-sum-exp (BG/NBD) or one log (Gamma-Gamma) is
left, and the gradient is written out instead of taped by autograd. Tests hold values and gradients
to lifetimes' to 1e-10. (Pareto/NBD's, which needs an integral per customer, is in
``training.clv.pareto_nbd``.)

References
----------
Fader, P. S., Hardie, B. G. S., & Lee, K. L. (2005). "Counting Your Customers" the Easy Way, eq. (6)
and http://brucehardie.com/notes/004/ (the log-likelihood in its numerically stable form).
Batislam, E. P., Denizel, M., & Filiztekin, A. (2007). Empirical validation and comparison of models for
customer base analysis. IJRM 24(3), with the erratum of Wagner & Hoppe (2008) (MBG/NBD).
Fader, P. S., & Hardie, B. G. S. (2013). The Gamma-Gamma Model of Monetary Value, eq. (1a).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import digamma, gammaln


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    distinct, index = np.unique(values, return_inverse=True)
    return distinct, index


@dataclass(frozen=True)
class BgNbdData:
    """Rows (frequency, recency, T, weight) split into distinct values and the index of each row's value."""

    x: np.ndarray
    x_index: np.ndarray
    recency: np.ndarray
    recency_index: np.ndarray
    age: np.ndarray
    age_index: np.ndarray
    weight: np.ndarray
    weight_per_x: np.ndarray
    repeat: np.ndarray

    @classmethod
    def from_rows(cls, frequency: np.ndarray, recency: np.ndarray, age: np.ndarray, weight: np.ndarray) -> BgNbdData:
        x, x_index = _distinct(np.asarray(frequency, dtype="float64"))
        rec, rec_index = _distinct(np.asarray(recency, dtype="float64"))
        t, t_index = _distinct(np.asarray(age, dtype="float64"))
        weight = np.asarray(weight, dtype="float64")
        return cls(x, x_index, rec, rec_index, t, t_index, weight,
                   np.bincount(x_index, weights=weight, minlength=len(x)), x[x_index] > 0)


def bgnbd_objective(log_params: np.ndarray, data: BgNbdData, penalizer: float) -> tuple[float, np.ndarray]:
    """Mean BG/NBD negative log-likelihood (+ L2 penalty) and its gradient in log-parameters."""
    return _beta_geometric_objective(log_params, data, penalizer, modified=False)


def mbgnbd_objective(log_params: np.ndarray, data: BgNbdData, penalizer: float) -> tuple[float, np.ndarray]:
    """Mean MBG/NBD negative log-likelihood (+ L2 penalty) and its gradient in log-parameters.

    BG/NBD's likelihood with a chance of dropping out at the first purchase too: the second branch
    ``log a - log(b + x) - (r+x) log(alpha + t_x)`` applies to every customer, one-time buyers included, and
    the Beta terms are shifted by one purchase.
    """
    return _beta_geometric_objective(log_params, data, penalizer, modified=True)


def _beta_geometric_objective(log_params: np.ndarray, data: BgNbdData, penalizer: float,
                              modified: bool) -> tuple[float, np.ndarray]:
    """BG/NBD (``modified=False``) or MBG/NBD: the same Gamma-Poisson purchases, Beta-geometric dropout."""
    r, alpha, a, b = params = np.exp(log_params)
    x, w_x = data.x, data.weight_per_x
    total = data.weight.sum()
    shift = 1 if modified else 0
    # Per distinct frequency: A1 + A2 without the alpha term, and the dropout branch's Beta denominator.
    a1a2 = (gammaln(r + x) - gammaln(r) + gammaln(a + b) + gammaln(b + x + shift) - gammaln(b)
            - gammaln(a + b + x + shift))
    dropout_b = b + x if modified else b + np.maximum(x, 1) - 1
    # Per row: log(exp(A3) + [dropout possible] exp(A4)), A3 = -(r+x) log(alpha+T),
    # A4 = log a - log(dropout_b) - (r+x) log(alpha+t_x); BG/NBD's one-time buyers cannot have dropped out.
    rx = (r + x)[data.x_index]
    log_age = np.log(alpha + data.age)[data.age_index]
    log_rec = np.log(alpha + data.recency)[data.recency_index]
    a3 = -rx * log_age
    a4 = np.log(a) - np.log(dropout_b)[data.x_index] - rx * log_rec
    if modified:
        top = np.maximum(a3, a4)
        e4 = np.exp(a4 - top)
    else:
        top = np.where(data.repeat, np.maximum(a3, a4), a3)
        e4 = np.where(data.repeat, np.exp(a4 - top), 0.0)
    mix = np.exp(a3 - top) + e4
    share4 = e4 / mix                                   # weight of the A4 branch per row
    w = data.weight
    ll = (w_x * a1a2).sum() + r * np.log(alpha) * total + (w * (np.log(mix) + top)).sum()

    w_share4 = w * share4
    w_share3 = w - w_share4
    d_r = ((w_x * (digamma(r + x) - digamma(r))).sum() + np.log(alpha) * total
           - (w_share3 * log_age).sum() - (w_share4 * log_rec).sum())
    inv_age = (1.0 / (alpha + data.age))[data.age_index]
    inv_rec = (1.0 / (alpha + data.recency))[data.recency_index]
    d_alpha = r / alpha * total - (w_share3 * rx * inv_age).sum() - (w_share4 * rx * inv_rec).sum()
    share4_per_x = np.bincount(data.x_index, weights=w_share4, minlength=len(x))
    d_a = (w_x * (digamma(a + b) - digamma(a + b + x + shift))).sum() + share4_per_x.sum() / a
    d_b = ((w_x * (digamma(a + b) + digamma(b + x + shift) - digamma(b) - digamma(a + b + x + shift))).sum()
           - (share4_per_x / dropout_b).sum())
    gradient = -np.array([d_r, d_alpha, d_a, d_b]) * params / total + 2 * penalizer * params ** 2
    return float(-ll / total + penalizer * (params ** 2).sum()), gradient


@dataclass(frozen=True)
class GammaGammaData:
    """Repeat buyers' rows (frequency, mean order value, weight) with the constant terms precomputed."""

    x: np.ndarray
    x_index: np.ndarray
    weight: np.ndarray
    weight_per_x: np.ndarray
    x_rows: np.ndarray
    spend_rows: np.ndarray
    log_monetary: np.ndarray
    log_x_rows: np.ndarray

    @classmethod
    def from_rows(cls, frequency: np.ndarray, monetary: np.ndarray, weight: np.ndarray) -> GammaGammaData:
        x, x_index = _distinct(np.asarray(frequency, dtype="float64"))
        monetary = np.asarray(monetary, dtype="float64")
        weight = np.asarray(weight, dtype="float64")
        xs = x[x_index]
        return cls(x, x_index, weight, np.bincount(x_index, weights=weight, minlength=len(x)), xs, xs * monetary,
                   np.log(monetary), np.log(xs))


def gamma_gamma_objective(log_params: np.ndarray, data: GammaGammaData, penalizer: float) -> tuple[float, np.ndarray]:
    """Mean Gamma-Gamma negative log-likelihood (+ L2 penalty) and its gradient in log-parameters."""
    p, q, v = params = np.exp(log_params)
    x, w_x, w, xs = data.x, data.weight_per_x, data.weight, data.x_rows
    total = w.sum()
    px = p * xs
    log_spend = np.log(data.spend_rows + v)
    per_x = gammaln(p * x + q) - gammaln(p * x) - gammaln(q) + q * np.log(v)
    ll = (w_x * per_x).sum() + (w * ((px - 1) * data.log_monetary + px * data.log_x_rows - (px + q) * log_spend)).sum()
    w_log_spend = w * log_spend
    d_p = ((w_x * x * (digamma(p * x + q) - digamma(p * x))).sum()
           + (w * xs * (data.log_monetary + data.log_x_rows)).sum() - (xs * w_log_spend).sum())
    d_q = (w_x * (digamma(p * x + q) - digamma(q) + np.log(v))).sum() - w_log_spend.sum()
    d_v = (w_x * q / v).sum() - (w * (px + q) / (data.spend_rows + v)).sum()
    gradient = -np.array([d_p, d_q, d_v]) * params / total + 2 * penalizer * params ** 2
    return float(-ll / total + penalizer * (params ** 2).sum()), gradient
