"""Fitting the purchase models (BG/NBD, MBG/NBD, Pareto/NBD) and Gamma-Gamma (order value) on an RFM summary.

Each purchase model is fitted on the unique ``(frequency, recency, T)`` rows with their counts as weights:
lifetimes' likelihood is a weighted mean over rows and its time scale is the largest ``T``, both
unchanged by the compression, so the parameters are those of the raw fit (how much it saves depends
on how many customers share a history: much with day-level times over a short period, little over
years). Gamma-Gamma is fitted on the repeat buyers' own rows: its per-row term is one log, cheaper than
finding the few repeated (frequency, monetary_value) pairs. The objectives are lifetimes' own, with analytic
gradients and per-distinct-value terms (``training.clv.likelihood``, ``training.clv.pareto_nbd``), optimised
as lifetimes does for BG/NBD (BFGS in log-parameters from 0.1, ``tol=1e-7``, time scaled so the largest T
is 1) but without the Hessian it adds for standard errors: the parameters equal lifetimes' to optimiser
precision (tests: 1e-6 relative; CDNOW's published values to every published digit). On more than
``SAMPLED_ABOVE`` rows BFGS starts from a fit on a sample instead (:func:`_minimise_large`): a few
evaluations on all rows instead of ~25, to the same optimum. lifetimes fits Pareto/NBD by Nelder-Mead on the raw
parameters with ``tol=1e-4`` and divides its penalty by the mean weight instead of the total; here it is
fitted like the others (same optimum without a penalizer). Inputs are checked first, because lifetimes
answers NaN, recency > T or non-positive order values with a misleading ``ConvergenceError``.

A fit whose log-parameter (in scaled time) ends beyond +-``LOG_BOUND`` has run towards 0 or infinity: the
likelihood kept improving towards the edge of the parameter space (e.g. no dropout at all: a -> 0), and
it is recorded in ``at_bound`` (``"a->0"``, ``"b->inf"``). Beyond +-15 there is no finite optimum: not converged,
unless it is a dropout parameter running towards no dropout (a -> 0, b -> infinity, s -> 0, beta -> infinity),
whose limit is a proper model: kept, at its bound, with a warning.

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

import contextlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.crm.rows import check_rfm
from features.errors import InvalidInput, LeadvalError
from training.clv.likelihood import BgNbdData, GammaGammaData, bgnbd_objective, gamma_gamma_objective, mbgnbd_objective
from training.clv.pareto_nbd import ParetoNbdData, pareto_nbd_objective
from training.clv.purchases import MODEL_LABELS, PARAMETER_TYPES, BgNbdParameters, PurchaseParameters

LOG_BOUND = 10.0
"""A fitted log-parameter (time scaled so the largest T is 1) beyond +-10 (a factor 22,026) is at its bound."""
GAMMA_GAMMA_CORRELATION_LIMIT = 0.3
"""|corr(frequency, monetary_value)| among repeat buyers above which Gamma-Gamma's independence assumption is
doubtful."""


class GammaGammaAssumptionWarning(UserWarning):
    """Frequency and order value are correlated among repeat buyers: Gamma-Gamma's CLV may be biased."""


class ModelDidNotConverge(LeadvalError):
    """The likelihood optimiser did not converge; the message says what to try."""


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


Columns = list[tuple[np.ndarray, np.ndarray]]
"""Per column (e.g. frequency, recency, T) its sorted distinct values and the index of each distinct row's value."""


def _distinct_rows(rfm: pd.DataFrame, columns: Sequence[str]) -> tuple[Columns, np.ndarray]:
    """Per column its sorted distinct values and each distinct row's index into them (rows sorted), and the
    number of customers behind each distinct row."""
    key = np.zeros(len(rfm), dtype=np.int64)
    distinct_values = []
    for column in columns:
        codes, values = pd.factorize(rfm[column].to_numpy(), sort=True)
        key = key * len(values) + codes
        distinct_values.append(values)
    keys, weight = np.unique(key, return_counts=True)
    indices = []
    for values in reversed(distinct_values):
        keys, code = np.divmod(keys, len(values))
        indices.append(code)
    return list(zip(distinct_values, reversed(indices))), weight


def unique_rows(rfm: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The distinct rows of ``columns`` (sorted) with a ``weight`` column counting the customers behind each."""
    distinct, weight = _distinct_rows(rfm, columns)
    return pd.DataFrame({c: values[index] for c, (values, index) in zip(columns, distinct)} | {"weight": weight})


_GIVE_UP = 20.0
"""An iterate with a log-parameter beyond +-20 is running off for good: BFGS stops there (not converged)."""


def _minimise(objective, data: object, penalizer: float, n_params: int, failure: str,
              start: np.ndarray | None = None, no_dropout: np.ndarray | None = None,
              curvature: np.ndarray | None = None, tol: float = 1e-7) -> tuple[np.ndarray, np.ndarray | None]:
    """lifetimes' optimisation (BFGS from log-parameters 0.1, ``tol=1e-7``) of ``objective(theta, data, penalizer)``;
    ``start`` (log-parameters) to begin elsewhere, e.g. at the fit for a smaller penalizer, ``curvature`` to
    begin with that inverse Hessian instead of the identity, ``tol`` for a tighter stop. Returns the
    log-parameters and BFGS's final inverse Hessian estimate (None when it is not positive definite).

    On large data BFGS can end with "precision loss" once the mean log-likelihood stops improving in
    floating point; lifetimes calls that a ConvergenceError, here it counts as converged when the
    gradient is ~0 (every component <= 1e-5). Either way a parameter that ran off towards 0 or infinity
    (a log-parameter beyond +-15) means there is no finite optimum: not converged. The exception is a
    dropout parameter running towards "no dropout" (``no_dropout``: per log-parameter, the sign of that
    direction, 0 for the others): the likelihood then tends to a proper model (customers who never leave,
    NBD purchases) and the fit is kept, at its bound (see ``training.clv.diagnostics``), wherever BFGS stopped.
    """
    from scipy.optimize import minimize  # here, not at import: the API's workers predict and never fit

    towards = np.zeros(n_params) if no_dropout is None else np.asarray(no_dropout, dtype="float64")

    def off(x: np.ndarray, limit: float) -> bool:
        return not bool(np.all(np.isfinite(x)) and np.all((np.abs(x) <= limit) | (np.sign(x) == towards)))

    def diverging(xk: np.ndarray) -> None:
        if off(xk, _GIVE_UP):  # far past the cut-off: no point in iterating on
            raise StopIteration

    with np.errstate(all="ignore"):
        x0 = 0.1 * np.ones(n_params) if start is None else np.asarray(start, dtype="float64")
        output = minimize(objective, jac=True, method="BFGS", tol=tol, x0=x0, args=(data, penalizer),
                          callback=diverging, options={"hess_inv0": curvature})
    at_rest = output.status == 2 and np.max(np.abs(output.jac)) <= 1e-5
    if not (output.success or at_rest) or off(output.x, 15.0):
        raise ModelDidNotConverge(failure)
    hess_inv = (output.hess_inv + output.hess_inv.T) / 2
    definite = bool(np.all(np.isfinite(hess_inv)) and np.all(np.linalg.eigvalsh(hess_inv) > 0))
    return output.x, hess_inv if definite else None


SAMPLED_ABOVE = 200_000
"""Fits on more rows than this start from a fit on a sample of ``SAMPLE_ROWS`` of them (see :func:`_minimise_large`)."""
SAMPLE_ROWS = 50_000
_POLISH_TOL = 1e-8
"""From the sample's fit BFGS reaches a 10x smaller gradient than lifetimes' tol in one or two more evaluations: the
fit then sits at the optimum itself, not anywhere in lifetimes' tolerance region around it."""


def _minimise_large(objective, data: object, sample: Callable[[int], object], n_rows: int, penalizer: float,
                    n_params: int, failure: str, start: np.ndarray | None = None,
                    no_dropout: np.ndarray | None = None) -> np.ndarray:
    """:func:`_minimise`; on more than ``SAMPLED_ABOVE`` rows and without ``start``, from the fit on every k-th row
    (``sample(k)``, ~``SAMPLE_ROWS`` rows) with its inverse Hessian, which leaves 4-6 evaluations on all rows
    instead of ~25-30, to ``_POLISH_TOL``.

    The objective is the same, so is its optimum: on 1M customers the fits are within 2e-8 relative of it (the
    gradient's root, found by Newton steps), lifetimes' own stop at ``tol=1e-7`` 3e-7 (BG/NBD) to 1.3e-6
    (Gamma-Gamma's flat p-v direction). A sample fit that fails or ends at a bound, or a fit from it that ends at
    one, gives way to the fit from lifetimes' start, so degenerate fits end where they always did."""
    if start is None and n_rows > SAMPLED_ABOVE:
        with contextlib.suppress(ModelDidNotConverge):
            rough, curvature = _minimise(objective, sample(n_rows // SAMPLE_ROWS), penalizer, n_params, failure,
                                         None, no_dropout)
            if np.all(np.abs(rough) < LOG_BOUND):
                polished, _ = _minimise(objective, data, penalizer, n_params, failure, rough, no_dropout, curvature,
                                        _POLISH_TOL)
                if np.all(np.abs(polished) < LOG_BOUND):
                    return polished
    return _minimise(objective, data, penalizer, n_params, failure, start, no_dropout)[0]


def _convergence_help(model: str, penalizer: float, time_unit: str, n_customers: int) -> str:
    unit = {"D": "days", "W": "weeks"}.get(time_unit, time_unit)
    return (
        f"{model} did not converge (penalizer {penalizer}, time in {unit}, {n_customers:,} customers). "
        "Try: a larger penalizer (e.g. 0.001-0.1), the other time unit (--time-unit W or D), a longer "
        "calibration period or more customers with repeat purchases"
    )


TIME_SCALES = {"alpha", "beta"}
"""The parameters in time units (the scales of the purchase and dropout rates); the others are unit-free."""


def _bgnbd_data(columns: Columns, weight: np.ndarray, scale: float) -> BgNbdData:
    """BG/NBD's and MBG/NBD's data straight from the distinct values and indices, times scaled."""
    (x, x_index), (recency, recency_index), (age, age_index) = columns
    return BgNbdData.from_codes(x.astype("float64"), x_index, recency * scale, recency_index, age * scale, age_index,
                                weight)


def _pnbd_data(columns: Columns, weight: np.ndarray, scale: float) -> ParetoNbdData:
    """Pareto/NBD's data from the distinct rows' values, times scaled."""
    (x, x_index), (recency, recency_index), (age, age_index) = columns
    return ParetoNbdData.from_rows(x[x_index].astype(int), recency[recency_index] * scale, age[age_index] * scale,
                                   weight)


_FITS = {  # kind: (objective, data builder, direction of "no dropout" per log-parameter)
    "bgnbd": (bgnbd_objective, _bgnbd_data, (0, 0, -1, 1)),      # a -> 0 or b -> infinity
    "mbgnbd": (mbgnbd_objective, _bgnbd_data, (0, 0, -1, 1)),
    "pnbd": (pareto_nbd_objective, _pnbd_data, (0, 0, -1, 1)),  # s -> 0 or beta -> infinity
}


def fit_purchases(kind: str, rfm: pd.DataFrame, penalizer: float = 0.0, time_unit: str = "D",
                  start: PurchaseParameters | None = None) -> PurchaseParameters:
    """A purchase model (``bgnbd``, ``mbgnbd`` or ``pnbd``) fitted on the weighted unique (frequency, recency, T)
    rows of ``rfm``, from lifetimes' starting point or from ``start`` (a fit of the same model on the same data,
    e.g. with a smaller penalizer: far fewer iterations).

    ``log_likelihood`` is the unpenalised log-likelihood in the data's own time unit (comparable with
    Fader, Hardie & Lee 2005's -9582.4 for BG/NBD on CDNOW in weeks), so the models' can be compared.
    """
    validate_rfm(rfm)
    objective, build, no_dropout = _FITS[kind]
    columns, weights = _distinct_rows(rfm, ["frequency", "recency", "T"])
    scale = 1.0 / float(columns[2][0].max())
    scaled = build(columns, weights, scale)
    names = PARAMETER_TYPES[kind].names
    begin = None if start is None else np.log([getattr(start, n) * (scale if n in TIME_SCALES else 1.0) for n in names])

    def sample(step: int) -> object:
        return build([(values, index[::step]) for values, index in columns], weights[::step], scale)

    log_params = _minimise_large(objective, scaled, sample, len(weights), penalizer, 4,
                                 _convergence_help(MODEL_LABELS[kind], penalizer, time_unit, len(rfm)), begin,
                                 no_dropout)
    params = dict(zip(names, np.exp(log_params)))
    for name in TIME_SCALES & set(names):
        params[name] /= scale
    # The likelihood in scaled time differs from the one in the data's unit by scale ** x per customer
    # (the density of its x purchase times), so the unit's log-likelihood needs no second pass.
    mean_nll_scaled, _ = objective(log_params, scaled, 0.0)
    frequency = columns[0][0][columns[0][1]]
    log_likelihood = -mean_nll_scaled * weights.sum() + float((weights * frequency).sum()) * np.log(scale)
    return PARAMETER_TYPES[kind](
        **{name: float(value) for name, value in params.items()},
        penalizer=float(penalizer),
        log_likelihood=float(log_likelihood),
        n_customers=int(len(rfm)),
        at_bound=tuple(f"{name}->{'inf' if value > 0 else '0'}" for name, value in zip(names, log_params)
                       if abs(value) >= LOG_BOUND),
    )


def fit_bgnbd(rfm: pd.DataFrame, penalizer: float = 0.0, time_unit: str = "D") -> BgNbdParameters:
    """BG/NBD fitted on the weighted unique (frequency, recency, T) rows of ``rfm`` (see :func:`fit_purchases`)."""
    return fit_purchases("bgnbd", rfm, penalizer, time_unit)


def repeat_buyers(rfm: pd.DataFrame) -> pd.DataFrame:
    """Customers with at least one repeat purchase: the ones Gamma-Gamma learns from."""
    return rfm[rfm["frequency"] > 0]


def fit_gamma_gamma(rfm: pd.DataFrame, penalizer: float = 0.0) -> GammaGammaParameters:
    """Gamma-Gamma fitted on the repeat buyers of ``rfm``, one row each.

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
    frequency, monetary = buyers["frequency"].to_numpy(), buyers["monetary_value"].to_numpy()

    def sample(step: int) -> GammaGammaData:
        return GammaGammaData.from_rows(frequency[::step], monetary[::step], np.ones(len(frequency[::step])))

    log_params = _minimise_large(
        gamma_gamma_objective, GammaGammaData.from_rows(frequency, monetary, np.ones(len(frequency))), sample,
        len(frequency), penalizer, 3,
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
