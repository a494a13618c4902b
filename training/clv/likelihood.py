"""BG/NBD, MBG/NBD and Gamma-Gamma negative log-likelihoods with analytic gradients, fast on millions of customers.

The objectives are lifetimes' own (``BetaGeoFitter``, ``ModifiedBetaGeoFitter`` and ``GammaGammaFitter``'s
``_negative_log_likelihood``): a weighted mean over rows plus
``penalizer * sum(params ** 2)``, in log-parameters, BG/NBD times scaled so that the largest T is 1.
They are rearranged so that every term that depends on one variable only (frequency, recency, T or
order value) is computed once per distinct value: the gammas once per frequency, the logs once per
distinct recency and T, BG/NBD's "alive" branch once per T and Gamma-Gamma's parameter-free row sums
once per fit. Per customer row only log(1 + dropout odds) (BG/NBD) or one log (Gamma-Gamma) is left,
computed in cache-sized blocks, and the gradient is written out instead of taped by autograd. Tests hold
values and gradients to lifetimes' to 1e-10. (Pareto/NBD's, which needs an integral per customer, is in
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
import pandas as pd
from scipy.special import digamma, gammaln

BLOCK = 16_384
"""Rows per block of the per-row terms: a block's temporaries stay in the CPU cache and its allocations are reused,
where whole-array numpy on ~1M rows pages in fresh memory for every temporary (about 4x slower)."""
_EXP_CAP = 700.0
"""Dropout log-odds are exponentiated up to 700 (exp overflows past 709.78); beyond it log(1 + odds) is the
log-odds itself in double precision."""


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct values and each value's index into them (pandas' hash table: faster than a sort)."""
    index, distinct = pd.factorize(values, sort=True)
    return distinct, index


@dataclass(frozen=True)
class BgNbdData:
    """Rows (frequency, recency, T, weight) as indices into their distinct values, one-time buyers first, with the
    weights per distinct frequency and per distinct T that the per-value terms need."""

    x: np.ndarray
    x_index: np.ndarray
    recency: np.ndarray
    recency_index: np.ndarray
    age: np.ndarray
    age_index: np.ndarray
    weight: np.ndarray
    x_rows: np.ndarray
    weight_per_x: np.ndarray
    weight_per_age: np.ndarray
    x_weight_per_age: np.ndarray
    first_repeat: int

    @classmethod
    def from_rows(cls, frequency: np.ndarray, recency: np.ndarray, age: np.ndarray, weight: np.ndarray) -> BgNbdData:
        """The data of rows given as values (one per customer or per weighted unique row)."""
        x, x_index = _distinct(np.asarray(frequency, dtype="float64"))
        rec, rec_index = _distinct(np.asarray(recency, dtype="float64"))
        t, t_index = _distinct(np.asarray(age, dtype="float64"))
        return cls.from_codes(x, x_index, rec, rec_index, t, t_index, weight)

    @classmethod
    def from_codes(cls, x: np.ndarray, x_index: np.ndarray, recency: np.ndarray, recency_index: np.ndarray,
                   age: np.ndarray, age_index: np.ndarray, weight: np.ndarray) -> BgNbdData:
        """The data of rows given as indices into sorted distinct values (no second factorisation of ~1M rows)."""
        weight = np.asarray(weight, dtype="float64")
        x_rows = x[x_index]
        one_time = x_rows == 0
        first_repeat = int(one_time.sum())
        if not one_time[:first_repeat].all():
            order = np.argsort(~one_time, kind="stable")
            x_index, recency_index, age_index, weight, x_rows = (
                column[order] for column in (x_index, recency_index, age_index, weight, x_rows))
        return cls(x, x_index, recency, recency_index, age, age_index, weight, x_rows,
                   np.bincount(x_index, weights=weight, minlength=len(x)),
                   np.bincount(age_index, weights=weight, minlength=len(age)),
                   np.bincount(age_index, weights=weight * x_rows, minlength=len(age)), first_repeat)


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
    """BG/NBD (``modified=False``) or MBG/NBD: the same Gamma-Poisson purchases, Beta-geometric dropout.

    Per row the log-likelihood is A1 + A2 + log(exp(A3) + [dropout possible] exp(A4)) with
    A3 = -(r+x) log(alpha+T) and A4 = log a - log(dropout_b) - (r+x) log(alpha+t_x), written as
    A3 + log(1 + exp(A4 - A3)): A1, A2 are sums per distinct frequency, A3 a sum per distinct T, and only
    log(1 + odds) is left per row (BG/NBD's one-time buyers cannot have dropped out: no such term).
    """
    r, alpha, a, b = params = np.exp(log_params)
    x, w_x = data.x, data.weight_per_x
    total = w_x.sum()
    shift = 1 if modified else 0
    a1a2 = (gammaln(r + x) - gammaln(r) + gammaln(a + b) + gammaln(b + x + shift) - gammaln(b)
            - gammaln(a + b + x + shift))
    dropout_b = b + x if modified else b + np.maximum(x, 1) - 1
    log_age, inv_age = np.log(alpha + data.age), 1.0 / (alpha + data.age)
    alive_weight = r * data.weight_per_age + data.x_weight_per_age  # sum of w (r + x) per distinct T
    log1p_odds, share, share_gap, share_slope, share_inv_b = _dropout_branch(
        data, 0 if modified else data.first_repeat, r, np.log(a) - np.log(dropout_b), 1.0 / dropout_b,
        log_age, np.log(alpha + data.recency), inv_age, 1.0 / (alpha + data.recency))
    ll = (w_x * a1a2).sum() + r * np.log(alpha) * total - alive_weight @ log_age + log1p_odds
    d_r = ((w_x * (digamma(r + x) - digamma(r))).sum() + np.log(alpha) * total - data.weight_per_age @ log_age
           + share_gap)
    d_alpha = r / alpha * total - alive_weight @ inv_age + share_slope
    d_a = (w_x * (digamma(a + b) - digamma(a + b + x + shift))).sum() + share / a
    d_b = ((w_x * (digamma(a + b) + digamma(b + x + shift) - digamma(b) - digamma(a + b + x + shift))).sum()
           - share_inv_b)
    gradient = -np.array([d_r, d_alpha, d_a, d_b]) * params / total + 2 * penalizer * params ** 2
    return float(-ll / total + penalizer * (params ** 2).sum()), gradient


def _dropout_branch(data: BgNbdData, start: int, r: float, log_odds_x: np.ndarray, inv_dropout_b: np.ndarray,
                    log_age: np.ndarray, log_rec: np.ndarray, inv_age: np.ndarray,
                    inv_rec: np.ndarray) -> tuple[float, float, float, float, float]:
    """Over rows from ``start``, in blocks: the sum of w log(1 + odds), odds = exp(A4 - A3), and, weighted by the
    dropout branch's share w odds / (1 + odds), the sums of 1, log((alpha+T)/(alpha+t_x)),
    (r+x) (1/(alpha+T) - 1/(alpha+t_x)) and 1/dropout_b (the gradient's per-row parts)."""
    log1p_odds = share_sum = share_gap = share_slope = share_inv_b = 0.0
    for begin in range(start, len(data.weight), BLOCK):
        rows = slice(begin, begin + BLOCK)
        age_index, recency_index, x_index, w = (data.age_index[rows], data.recency_index[rows], data.x_index[rows],
                                                data.weight[rows])
        gap = log_age.take(age_index)
        gap -= log_rec.take(recency_index)
        rx = data.x_rows[rows] + r
        log_odds = rx * gap
        log_odds += log_odds_x.take(x_index)
        if log_odds.max() > _EXP_CAP:
            capped = np.minimum(log_odds, _EXP_CAP)
            log1p_odds += w @ (log_odds - capped)
            odds = np.exp(capped)
        else:
            odds = np.exp(log_odds)
        log1p_odds += w @ np.log1p(odds)
        odds /= odds + 1.0
        odds *= w
        share_sum += odds.sum()
        share_gap += odds @ gap
        slope = inv_age.take(age_index)
        slope -= inv_rec.take(recency_index)
        slope *= rx
        share_slope += odds @ slope
        share_inv_b += odds @ inv_dropout_b.take(x_index)
    return log1p_odds, share_sum, share_gap, share_slope, share_inv_b


@dataclass(frozen=True)
class GammaGammaData:
    """Repeat buyers' rows (frequency, mean order value, weight): per distinct frequency the weights, per row the
    spend x m and the weights w and w x, and the parameter-free sums of the row terms."""

    x: np.ndarray
    weight_per_x: np.ndarray
    spend_rows: np.ndarray
    weight: np.ndarray
    x_weight: np.ndarray
    log_monetary_sum: float
    x_log_spend_sum: float

    @classmethod
    def from_rows(cls, frequency: np.ndarray, monetary: np.ndarray, weight: np.ndarray) -> GammaGammaData:
        """The data of rows given as values (one per repeat buyer or per weighted unique row)."""
        x, x_index = _distinct(np.asarray(frequency, dtype="float64"))
        monetary = np.asarray(monetary, dtype="float64")
        weight = np.asarray(weight, dtype="float64")
        xs = x[x_index]
        log_monetary = np.log(monetary)
        x_weight = weight * xs
        return cls(x, np.bincount(x_index, weights=weight, minlength=len(x)), xs * monetary, weight, x_weight,
                   float(weight @ log_monetary), float(x_weight @ (log_monetary + np.log(xs))))


def gamma_gamma_objective(log_params: np.ndarray, data: GammaGammaData, penalizer: float) -> tuple[float, np.ndarray]:
    """Mean Gamma-Gamma negative log-likelihood (+ L2 penalty) and its gradient in log-parameters.

    Per row the log-likelihood is (px - 1) log m + px log x - (px + q) log(x m + v) (plus per-frequency terms): the
    first two are parameter-free sums times p, so only log(x m + v) and its derivative 1 / (x m + v) are per row.
    """
    p, q, v = params = np.exp(log_params)
    x, w_x = data.x, data.weight_per_x
    total = w_x.sum()
    log_s, x_log_s, inv_s, x_inv_s = _spend_sums(data, v)
    per_x = gammaln(p * x + q) - gammaln(p * x) - gammaln(q) + q * np.log(v)
    ll = (w_x * per_x).sum() + p * data.x_log_spend_sum - data.log_monetary_sum - p * x_log_s - q * log_s
    d_p = (w_x * x * (digamma(p * x + q) - digamma(p * x))).sum() + data.x_log_spend_sum - x_log_s
    d_q = (w_x * (digamma(p * x + q) - digamma(q) + np.log(v))).sum() - log_s
    d_v = q / v * total - p * x_inv_s - q * inv_s
    gradient = -np.array([d_p, d_q, d_v]) * params / total + 2 * penalizer * params ** 2
    return float(-ll / total + penalizer * (params ** 2).sum()), gradient


def _spend_sums(data: GammaGammaData, v: float) -> tuple[float, float, float, float]:
    """Over rows, in blocks: the sums of w log s, w x log s, w / s and w x / s with s = x m + v."""
    log_s = x_log_s = inv_s = x_inv_s = 0.0
    for begin in range(0, len(data.weight), BLOCK):
        rows = slice(begin, begin + BLOCK)
        w, x_w = data.weight[rows], data.x_weight[rows]
        shifted = data.spend_rows[rows] + v
        logs = np.log(shifted)
        log_s += w @ logs
        x_log_s += x_w @ logs
        np.divide(1.0, shifted, out=shifted)
        inv_s += w @ shifted
        x_inv_s += x_w @ shifted
    return log_s, x_log_s, inv_s, x_inv_s
