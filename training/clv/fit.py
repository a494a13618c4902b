"""Fitting BG/NBD (purchase frequency and dropout) and Gamma-Gamma (order value) on an RFM summary.

BG/NBD is fitted on the unique ``(frequency, recency, T)`` rows with their counts as weights:
lifetimes' likelihood is a weighted mean over rows and its time scale is the largest ``T``, both
unchanged by the compression, so the parameters are those of the raw fit (how much it saves depends
on how many customers share a history: much with day-level times over a short period, little over
years). Gamma-Gamma is fitted the same way on ``(frequency, monetary_value)`` of repeat buyers.
The objectives are lifetimes' own, with analytic gradients and per-distinct-value terms
(``training.clv.likelihood``), optimised as lifetimes does (BFGS from 0.1, ``tol=1e-7``) but without
the Hessian it adds for standard errors: the parameters equal lifetimes' to optimiser precision
(tests: 1e-6 relative; CDNOW's published values to every published digit). Inputs are checked first,
because lifetimes answers NaN, recency > T or non-positive order values with a misleading
``ConvergenceError``.

BLAS threads slow these small fits down badly (up to 17x with two threads): the CLI sets
``OPENBLAS_NUM_THREADS=1`` when it loads before numpy, the training job limits BLAS to one thread
with threadpoolctl while fitting (see ``serving.cli.train``), and the Makefile exports it.

References
----------
Fader, P. S., Hardie, B. G. S., & Lee, K. L. (2005). "Counting Your Customers" the Easy Way.
Marketing Science, 24(2), 275-284.
Fader, P. S., & Hardie, B. G. S. (2013). The Gamma-Gamma Model of Monetary Value.
http://www.brucehardie.com/notes/025/
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from features.crm.rows import check_rfm
from features.errors import InvalidInput, LeadvalError
from training.clv.likelihood import BgNbdData, GammaGammaData, bgnbd_objective, gamma_gamma_objective

GAMMA_GAMMA_CORRELATION_LIMIT = 0.3
"""|corr(frequency, monetary_value)| among repeat buyers above which Gamma-Gamma's independence assumption is doubtful."""


class GammaGammaAssumptionWarning(UserWarning):
    """Frequency and order value are correlated among repeat buyers: Gamma-Gamma's CLV may be biased."""


class ModelDidNotConverge(LeadvalError):
    """The likelihood optimiser did not converge; the message says what to try."""


@dataclass(frozen=True)
class BgNbdParameters:
    """Fitted BG/NBD population parameters (``alpha`` in the model's time unit)."""

    r: float
    alpha: float
    a: float
    b: float
    penalizer: float
    log_likelihood: float
    n_customers: int


@dataclass(frozen=True)
class GammaGammaParameters:
    """Fitted Gamma-Gamma population parameters (``v`` is gamma in Fader & Hardie 2013)."""

    p: float
    q: float
    v: float
    penalizer: float
    n_customers: int


def _rows(frame: pd.DataFrame, mask: np.ndarray) -> str:
    ids = frame["customer_id"] if "customer_id" in frame.columns else pd.Series(frame.index)
    shown = ids[mask].head(5).astype(str).tolist()
    more = f" and {int(mask.sum()) - len(shown)} more" if mask.sum() > len(shown) else ""
    return f"customer(s) {', '.join(shown)}{more}"


def validate_rfm(rfm: pd.DataFrame, monetary: bool = False) -> None:
    """Raise ``InvalidInput`` naming the field and customers when the RFM summary cannot be fitted or scored.

    The RFM rules (``features.crm.rows.check_rfm``, shared with scoring): frequency, recency and T present,
    finite and >= 0, frequency whole, recency <= T and 0 when frequency is 0; with ``monetary``,
    monetary_value >= 0 for everyone. An empty summary cannot be fitted either.
    """
    check_rfm(rfm, "RFM summary", "nothing was fitted", monetary="monetary_value" if monetary else None)
    if len(rfm) == 0:
        raise InvalidInput("RFM summary: no customers; expected at least one row")


def unique_rows(rfm: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The distinct rows of ``columns`` (sorted) with a ``weight`` column counting the customers behind each."""
    key = np.zeros(len(rfm), dtype=np.int64)
    distinct_values = []
    for column in columns:
        values, codes = np.unique(rfm[column].to_numpy(), return_inverse=True)
        key = key * len(values) + codes
        distinct_values.append(values)
    keys, weight = np.unique(key, return_counts=True)
    out = {}
    for column, values in zip(reversed(list(columns)), reversed(distinct_values)):
        keys, code = np.divmod(keys, len(values))
        out[column] = values[code]
    return pd.DataFrame({c: out[c] for c in columns} | {"weight": weight})


def _minimise(objective, data: object, penalizer: float, n_params: int, failure: str) -> np.ndarray:
    """lifetimes' optimisation (BFGS from log-parameters 0.1, ``tol=1e-7``) of ``objective(theta, data, penalizer)``.

    On large data BFGS can end with "precision loss" once the mean log-likelihood stops improving in
    floating point; lifetimes calls that a ConvergenceError, here it counts as converged when the
    gradient is ~0 (every component <= 1e-5). Either way a parameter that ran off towards 0 or infinity
    (a log-parameter beyond +-15) means there is no finite optimum: not converged.
    """
    with np.errstate(all="ignore"):
        output = minimize(objective, jac=True, method="BFGS", tol=1e-7, x0=0.1 * np.ones(n_params),
                          args=(data, penalizer))
    at_rest = output.status == 2 and np.max(np.abs(output.jac)) <= 1e-5
    bounded = bool(np.all(np.isfinite(output.x)) and np.max(np.abs(output.x)) <= 15)
    if not (output.success or at_rest) or not bounded:
        raise ModelDidNotConverge(failure)
    return output.x


def _convergence_help(model: str, penalizer: float, time_unit: str, n_customers: int) -> str:
    unit = {"D": "days", "W": "weeks"}.get(time_unit, time_unit)
    return (
        f"{model} did not converge (penalizer {penalizer}, time in {unit}, {n_customers:,} customers). "
        "Try: a larger penalizer (e.g. 0.001-0.1), the other time unit (--time-unit W or D), a longer "
        "calibration period or more customers with repeat purchases"
    )


def fit_bgnbd(rfm: pd.DataFrame, penalizer: float = 0.0, time_unit: str = "D") -> BgNbdParameters:
    """BG/NBD fitted on the weighted unique (frequency, recency, T) rows of ``rfm``.

    ``log_likelihood`` is the unpenalised log-likelihood in the data's own time unit (comparable with
    Fader, Hardie & Lee 2005's -9582.4 on CDNOW in weeks).
    """
    validate_rfm(rfm)
    rows = unique_rows(rfm, ["frequency", "recency", "T"])
    frequency = rows["frequency"].to_numpy().astype(int)
    recency = rows["recency"].to_numpy(dtype="float64")
    age = rows["T"].to_numpy(dtype="float64")
    weights = rows["weight"].to_numpy()
    scale = 1.0 / age.max()
    scaled = BgNbdData.from_rows(frequency, recency * scale, age * scale, weights)
    log_params = _minimise(bgnbd_objective, scaled, penalizer, 4,
                           _convergence_help("BG/NBD", penalizer, time_unit, len(rfm)))
    params = pd.Series(np.exp(log_params), index=["r", "alpha", "a", "b"])
    params["alpha"] /= scale
    # The likelihood in scaled time differs from the one in the data's unit by scale ** x per customer
    # (the density of its x purchase times), so the unit's log-likelihood needs no second pass.
    mean_nll_scaled, _ = bgnbd_objective(log_params, scaled, 0.0)
    log_likelihood = -mean_nll_scaled * weights.sum() + float((weights * frequency).sum()) * np.log(scale)
    return BgNbdParameters(
        r=float(params["r"]),
        alpha=float(params["alpha"]),
        a=float(params["a"]),
        b=float(params["b"]),
        penalizer=float(penalizer),
        log_likelihood=float(log_likelihood),
        n_customers=int(len(rfm)),
    )


def repeat_buyers(rfm: pd.DataFrame) -> pd.DataFrame:
    """Customers with at least one repeat purchase: the ones Gamma-Gamma learns from."""
    return rfm[rfm["frequency"] > 0]


def fit_gamma_gamma(rfm: pd.DataFrame, penalizer: float = 0.0) -> GammaGammaParameters:
    """Gamma-Gamma fitted on the repeat buyers of ``rfm`` (weighted unique (frequency, monetary_value) rows).

    Raises ``InvalidInput`` when a repeat buyer's mean order value is not positive, or when there are
    fewer than two repeat buyers.
    """
    validate_rfm(rfm, monetary=True)
    buyers = repeat_buyers(rfm)
    if len(buyers) < 2:
        raise InvalidInput(
            f"monetary_value: Gamma-Gamma needs repeat buyers; found {len(buyers)} customer(s) with frequency > 0"
        )
    not_positive = buyers["monetary_value"].to_numpy(dtype="float64") <= 0
    if not_positive.any():
        raise InvalidInput(
            f"monetary_value: {_rows(buyers, not_positive)} have repeat purchases worth 0 in total; "
            "Gamma-Gamma needs positive order values (drop zero-value orders before training)"
        )
    rows = unique_rows(buyers, ["frequency", "monetary_value"])
    log_params = _minimise(
        gamma_gamma_objective,
        GammaGammaData.from_rows(rows["frequency"].to_numpy(), rows["monetary_value"].to_numpy(),
                                 rows["weight"].to_numpy()),
        penalizer,
        3,
        f"Gamma-Gamma did not converge (penalizer {penalizer}, {len(buyers):,} repeat buyers). Try a larger "
        "penalizer (e.g. 0.001-0.1), or check order values for outliers and currency mix-ups",
    )
    params = pd.Series(np.exp(log_params), index=["p", "q", "v"])
    return GammaGammaParameters(
        p=float(params["p"]),
        q=float(params["q"]),
        v=float(params["v"]),
        penalizer=float(penalizer),
        n_customers=int(len(buyers)),
    )


def frequency_monetary_correlation(rfm: pd.DataFrame) -> float:
    """Pearson correlation of frequency and monetary value among repeat buyers (Gamma-Gamma assumes ~0).

    NaN when there are fewer than two repeat buyers or no variation.
    """
    buyers = repeat_buyers(rfm)
    if len(buyers) < 2:
        return float("nan")
    x = buyers["frequency"].to_numpy(dtype="float64")
    m = buyers["monetary_value"].to_numpy(dtype="float64")
    if x.std() == 0 or m.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, m)[0, 1])


def gamma_gamma_assumption_holds(correlation: float) -> bool:
    """Whether |corr(frequency, monetary_value)| is within the tolerated limit (NaN counts as holding)."""
    return not abs(correlation) > GAMMA_GAMMA_CORRELATION_LIMIT


def check_gamma_gamma_assumption(rfm: pd.DataFrame) -> float:
    """The frequency-monetary correlation of repeat buyers, with a ``GammaGammaAssumptionWarning`` when too strong."""
    correlation = frequency_monetary_correlation(rfm)
    if not gamma_gamma_assumption_holds(correlation):
        warnings.warn(GammaGammaAssumptionWarning(
            f"frequency and monetary value correlate (r = {correlation:.2f}, |r| > {GAMMA_GAMMA_CORRELATION_LIMIT}) "
            "among repeat buyers: Gamma-Gamma assumes they are independent, so order values and CLV may be biased"
        ), stacklevel=2)
    return correlation
