"""Pareto/NBD: its likelihood with analytic gradients, and its per-customer predictions.

While alive a customer buys at rate lambda ~ Gamma(r, alpha) and dies at an exponential time of rate
mu ~ Gamma(s, beta). A customer's likelihood (Fader & Hardie's note 009, eq. 18) is

    L = G(r, alpha, s, beta) * [ (alpha + T)^-(r+x) (beta + T)^-s + s * I(t_x, T) ],
    I(t_x, T) = integral from t_x to T of (alpha + tau)^-(r+x) (beta + tau)^-(s+1) dtau,

the first term "alive at T", the second "died at some tau between the last purchase and T". lifetimes
writes I with the Gaussian hypergeometric function 2F1 (``ParetoNBDFitter._log_A_0``), which scipy's
``hyp2f1`` overflows or gets wrong for frequent buyers (x in the hundreds) or one rate far above the other
(the degenerate fits where beta runs off). Here I is ``tail(t_x) - tail(T)`` with ``tail(t)`` the integral
from t to infinity, computed by tanh-sinh quadrature in y = log(min(alpha, beta) + tau), where the
log-integrand is concave with closed-form slope, mode and kink (at y = log|alpha - beta|): the range is cut
into at most five pieces at the mode, the kink, where the slope first reaches about 1, two units past the
kink, and where the integrand has fallen e^-50 below its top; each decreasing piece is mapped to
v = exp(-k (y - start)) with k its starting slope, so every piece is smooth. Tests hold it to 1e-10 of
adaptive quadrature over rates and frequencies far beyond real fits, and the likelihood to lifetimes' where
lifetimes' is finite.

The tails are computed once per distinct (frequency, time) pair, and the gradient comes from the same
nodes (derivatives under the integral sign: log(alpha + tau), 1/(alpha + tau) and the same for beta),
so a fit costs a few quadratures per distinct pair, not per customer.

References
----------
Schmittlein, D. C., Morrison, D. G., & Colombo, R. (1987). Counting your customers: Who are they and
what will they do next? Management Science 33(1).
Fader, P. S., & Hardie, B. G. S. (2005). A Note on Deriving the Pareto/NBD Model and Related
Expressions. http://brucehardie.com/notes/009/ (eqs. 18, 36-37, 41).
Fader, P. S., Hardie, B. G. S., & Lee, K. L. (2005). RFM and CLV: Using Iso-Value Curves for Customer
Base Analysis. Journal of Marketing Research 42(4) (the CDNOW estimates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import digamma, exprel, gammaln

_STEP = 0.15
_U = np.arange(-2.85, 2.85 + _STEP / 2, _STEP)
_S = np.pi / 2 * np.sinh(_U)
_FRACTION_LEFT = 1.0 / (1.0 + np.exp(2 * _S))
"""Tanh-sinh nodes (39: 4e-11 relative error for rates within a factor 10 of each other, 5e-9 far beyond)
as the distance from the anchor of a piece, in (0, 1): (1 - tanh(s)) / 2."""
_LOG_WEIGHT = np.log(_STEP * np.pi / 4 * np.cosh(_U) / np.cosh(_S) ** 2)
_EFOLDS = 50.0
"""The integrand is cut where it has fallen this many e-folds below its top (e^-50: far below float precision
of the sum)."""


@dataclass(frozen=True)
class Tails:
    """Per pair: log of the tail integral and, with ``moments``, the integrand-weighted means of log(alpha + tau),
    log(beta + tau), 1/(alpha + tau) and 1/(beta + tau)."""

    log_value: np.ndarray
    log_alpha: np.ndarray | None = None
    log_beta: np.ndarray | None = None
    inv_alpha: np.ndarray | None = None
    inv_beta: np.ndarray | None = None


def tails(pa: np.ndarray, qb: np.ndarray, alpha: float, beta: float, t: np.ndarray, moments: bool = False) -> Tails:
    """The integral from ``t`` to infinity of (alpha + tau)^-pa (beta + tau)^-qb, per pair (pa + qb > 1).

    See the module docstring for the method.
    """
    pa, qb, t = (np.asarray(v, dtype="float64") for v in np.broadcast_arrays(pa, qb, t))
    gamma, d = min(alpha, beta), abs(alpha - beta)
    alpha_is_min = alpha <= beta
    p_min, q_max = (pa, qb) if alpha_is_min else (qb, pa)
    m = p_min + q_max - 1
    y0 = np.log(gamma + t)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_d = np.log(d) if d > 0 else -np.inf

        def psi(y: np.ndarray) -> np.ndarray:
            """The log-integrand in y (Jacobian included), per pair."""
            return -m * y - q_max * np.log1p(d * np.exp(-y))

        def slope(y: np.ndarray) -> np.ndarray:
            far = d * np.exp(-y)
            return -m + q_max * far / (1 + far)

        rho_mode = (1 - p_min) / q_max
        y_mode = np.where((p_min < 1) & (d > 0), log_d + np.log(rho_mode) - np.log1p(-rho_mode), -np.inf)
        y_top = np.maximum(y0, y_mode)
        psi_top = psi(y_top)
        y_kink = np.maximum(log_d, y_top)
        y_one = np.clip(log_d - np.log(np.where(q_max > 1, q_max - 1, np.nan)), y_top, y_kink)
        y_one = np.where(np.isnan(y_one), y_kink, y_one)
        y_past = y_kink + 2      # two units past the kink its pull on the slope is spent (below e^-2 of q_max)
        ends = [np.where(slope(y_top) < 0, y_top - _EFOLDS / slope(y_top), np.inf)]
        for y in (y_one, y_past):
            ends.append(np.where(slope(y) < 0, y - np.maximum(0.0, _EFOLDS - (psi_top - psi(y))) / slope(y), np.inf))
        y_end = np.minimum.reduce(ends)
        # one piece when the kink is two units behind and the fall at least half as steep as it will ever be,
        # or when the kink can steepen the fall by 5% at most
        single = ((log_d + 2 <= y_top) & (-slope(y_top) >= m / 2)) | (m + slope(y_top) <= 0.05 * m)
        cut_one, cut_kink, cut_past = (np.minimum(np.where(single, y_top, y), y_end) for y in (y_one, y_kink, y_past))
        # (start, end, steepest-or-starting slope magnitude, direction): the rising piece runs up to the mode
        # and is anchored there; the others fall from their start.
        pieces = [(y0, y_top, slope(y0), -1.0)] + [
            (lo, hi, -slope(lo), 1.0) for lo, hi in ((y_top, cut_one), (cut_one, cut_kink), (cut_kink, cut_past),
                                                     (cut_past, y_end))]
        lo, hi, k, sign = (np.stack([np.broadcast_to(piece[i], t.shape) for piece in pieces], axis=1).ravel()
                           for i in range(4))
        pair = np.repeat(np.arange(len(t)), len(pieces))
        keep = hi - lo > 0
        lo, hi, k, sign, pair = lo[keep], hi[keep], k[keep], sign[keep], pair[keep]
        length = hi - lo
        k = np.maximum(k, 1.0 / length)
        anchor = np.where(sign > 0, lo, hi)
        span = -np.expm1(-k * length)                                           # 1 - v at the far end
        log_v = np.log1p(np.multiply.outer(-span, _FRACTION_LEFT))
        np.maximum(log_v, -(k * length)[:, None], out=log_v)
        # y = anchor - sign log(v) / k, and the log of (integrand x Jacobian x weight) / e^psi_top is
        # -m y - q_max log(1 + d e^-y) - log v + log w + log(span / k): the terms linear in log v are merged.
        to_y = -sign / k
        y = anchor[:, None] + to_y[:, None] * log_v
        inv_min = np.exp(-y)                                                    # 1 / (min(alpha, beta) + tau)
        far = d * inv_min
        log_far = np.log1p(far)
        m_p, q_p = m[pair], q_max[pair]
        exponent = (-m_p * to_y - 1.0)[:, None] * log_v
        exponent -= q_p[:, None] * log_far
        exponent += (np.log(span) - np.log(k) - psi_top[pair] - m_p * anchor)[:, None]
        exponent += _LOG_WEIGHT[None, :]
        node = np.exp(exponent, out=exponent)
    total = np.bincount(pair, weights=node.sum(axis=1), minlength=len(t))
    log_value = psi_top + np.log(total)
    if not moments:
        return Tails(log_value)

    def mean(values: np.ndarray) -> np.ndarray:
        return np.bincount(pair, weights=np.einsum("ij,ij->i", node, values), minlength=len(t)) / total

    log_max = y + log_far
    inv_max = inv_min / (1 + far)
    log_a, log_b, inv_a, inv_b = ((y, log_max, inv_min, inv_max) if alpha_is_min else (log_max, y, inv_max, inv_min))
    return Tails(log_value, mean(log_a), mean(log_b), mean(inv_a), mean(inv_b))


def _log_difference(log_big: np.ndarray, log_small: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log(e^big - e^small) and the ratio e^(small - big), for small <= big (-inf when equal)."""
    ratio = np.exp(np.minimum(log_small - log_big, 0.0))
    with np.errstate(divide="ignore"):
        return log_big + np.log1p(-ratio), ratio


def _distinct_pairs(x: np.ndarray, *times: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Distinct (x, t) pairs over all ``times`` arrays, and each array's index into them."""
    x_values, x_code = np.unique(np.concatenate([x] * len(times)), return_inverse=True)
    t_values, t_code = np.unique(np.concatenate(times), return_inverse=True)
    keys, inverse = np.unique(x_code.astype(np.int64) * len(t_values) + t_code, return_inverse=True)
    n = len(x)
    return (x_values[keys // len(t_values)], t_values[keys % len(t_values)],
            [inverse[i * n:(i + 1) * n] for i in range(len(times))])


@dataclass(frozen=True)
class ParetoNbdData:
    """Weighted rows (frequency, recency, T) with the distinct frequencies, ages and (frequency, time) pairs."""

    x: np.ndarray
    x_index: np.ndarray
    age: np.ndarray
    age_index: np.ndarray
    weight: np.ndarray
    weight_per_x: np.ndarray
    pair_x: np.ndarray
    pair_t: np.ndarray
    recency_pair: np.ndarray
    age_pair: np.ndarray

    @classmethod
    def from_rows(cls, frequency: np.ndarray, recency: np.ndarray, age: np.ndarray, weight: np.ndarray
                  ) -> ParetoNbdData:
        frequency = np.asarray(frequency, dtype="float64")
        recency = np.asarray(recency, dtype="float64")
        age = np.asarray(age, dtype="float64")
        weight = np.asarray(weight, dtype="float64")
        x, x_index = np.unique(frequency, return_inverse=True)
        ages, age_index = np.unique(age, return_inverse=True)
        pair_x, pair_t, (recency_pair, age_pair) = _distinct_pairs(frequency, recency, age)
        return cls(x, x_index, ages, age_index, weight, np.bincount(x_index, weights=weight, minlength=len(x)),
                   pair_x, pair_t, recency_pair, age_pair)


def pareto_nbd_objective(log_params: np.ndarray, data: ParetoNbdData, penalizer: float) -> tuple[float, np.ndarray]:
    """Mean Pareto/NBD negative log-likelihood (+ L2 penalty, per customer as for BG/NBD) and its gradient in
    log-parameters."""
    r, alpha, s, beta = params = np.exp(log_params)
    x, w_x, w = data.x, data.weight_per_x, data.weight
    total = w.sum()
    tail = tails(r + data.pair_x, s + 1.0, alpha, beta, data.pair_t, moments=True)
    near, far = data.recency_pair, data.age_pair
    log_i, ratio = _log_difference(tail.log_value[near], tail.log_value[far])
    rx_x = r + x
    log_age_a = np.log(alpha + data.age)[data.age_index]
    log_age_b = np.log(beta + data.age)[data.age_index]
    rx = rx_x[data.x_index]
    log_alive = -rx * log_age_a - s * log_age_b
    log_died = np.log(s) + log_i
    top = np.maximum(log_alive, log_died)
    with np.errstate(invalid="ignore"):
        mix = np.exp(log_alive - top) + np.exp(log_died - top)
    per_x = gammaln(rx_x) - gammaln(r)
    ll = (w_x * per_x).sum() + (r * np.log(alpha) + s * np.log(beta)) * total + (w * (np.log(mix) + top)).sum()

    died = np.exp(log_died - top) / mix
    alive = 1.0 - died
    open_ = ratio < 1.0                       # t_x < T: the "died in between" branch exists
    gap = np.where(open_, 1.0 - ratio, 1.0)

    def d_log_i(near_moment: np.ndarray, far_moment: np.ndarray) -> np.ndarray:
        return np.where(open_, (near_moment[near] - ratio * far_moment[far]) / gap, 0.0)

    w_died, w_alive = w * died, w * alive
    d_r = ((w_x * (digamma(rx_x) - digamma(r))).sum() + np.log(alpha) * total - (w_alive * log_age_a).sum()
           - (w_died * d_log_i(tail.log_alpha, tail.log_alpha)).sum())
    d_s = (np.log(beta) * total - (w_alive * log_age_b).sum() + (w_died / s).sum()
           - (w_died * d_log_i(tail.log_beta, tail.log_beta)).sum())
    d_alpha = (r / alpha * total - (w_alive * rx / (alpha + data.age)[data.age_index]).sum()
               - (w_died * rx * d_log_i(tail.inv_alpha, tail.inv_alpha)).sum())
    d_beta = (s / beta * total - (w_alive * s / (beta + data.age)[data.age_index]).sum()
              - (w_died * (s + 1) * d_log_i(tail.inv_beta, tail.inv_beta)).sum())
    gradient = -np.array([d_r, d_alpha, d_s, d_beta]) * params / total + 2 * penalizer * params ** 2
    return float(-ll / total + penalizer * (params ** 2).sum()), gradient


def log_death_odds(r: float, alpha: float, s: float, beta: float, x: np.ndarray, recency: np.ndarray,
                   age: np.ndarray) -> np.ndarray:
    """log(P(died by T) / P(alive at T)) given (frequency, recency, T) in the model's unit (-inf when t_x = T)."""
    x, recency, age = (np.asarray(v, dtype="float64") for v in (x, recency, age))
    pair_x, pair_t, (near, far) = _distinct_pairs(x, recency, age)
    log_tail = tails(r + pair_x, s + 1.0, alpha, beta, pair_t).log_value
    log_i, _ = _log_difference(log_tail[near], log_tail[far])
    return np.log(s) + log_i + (r + x) * np.log(alpha + age) + s * np.log(beta + age)


def expected_purchases_if_alive(r: float, alpha: float, s: float, beta: float, x: np.ndarray, age: np.ndarray,
                                t: float) -> np.ndarray:
    """Expected purchases in (T, T + t] of a customer alive at T (note 009, eq. 41 without P(alive)).

    (r + x)/(alpha + T) * (beta + T)/(s - 1) * (1 - ((beta + T)/(beta + T + t))^(s - 1)), written with
    ``exprel`` so that s = 1 is its limit.
    """
    horizon = np.log1p(t / (beta + age))
    return (r + x) / (alpha + age) * (beta + age) * horizon * exprel(-(s - 1) * horizon)


def probability_of_buying_if_alive(r: float, alpha: float, s: float, beta: float, x: np.ndarray, age: np.ndarray,
                                   t: np.ndarray | float) -> np.ndarray:
    """P(at least one purchase in (T, T + t]) of a customer alive at T; ``t`` one duration for all or one per customer.

    Given alive at T, lambda ~ Gamma(r + x, alpha + T) and mu ~ Gamma(s, beta + T), independent; the first
    purchase comes before death and within t with probability E[lambda / (lambda + mu) (1 - e^-(lambda+mu) t)]
    = (r + x) (alpha + T)^(r+x) (beta + T)^s * integral from T to T + t of (alpha + u)^-(r+x+1) (beta + u)^-s du.
    """
    x, age, t = (np.asarray(v, dtype="float64") for v in np.broadcast_arrays(x, age, t))
    pair_x, pair_t, (start, stop) = _distinct_pairs(x, age, age + t)
    log_tail = tails(r + pair_x + 1.0, s, alpha, beta, pair_t).log_value
    log_i, _ = _log_difference(log_tail[start], log_tail[stop])
    return np.exp(np.log(r + x) + (r + x) * np.log(alpha + age) + s * np.log(beta + age) + log_i)


def expected_purchases_new_customer(r: float, alpha: float, s: float, beta: float, t: np.ndarray) -> np.ndarray:
    """Expected repeat purchases of a new customer within ``t`` (note 009, eq. 27)."""
    horizon = np.log1p(np.asarray(t, dtype="float64") / beta)
    return r / alpha * beta * horizon * exprel(-(s - 1) * horizon)
