"""Benchmark CLV at scale (~10M orders -> ~1M customers): RFM build, fit and predict, each against lifetimes.

Orders come from the simulator's true BG/NBD + Gamma-Gamma process (string customer ids). Each case runs
in a process of its own on data read from a temporary Parquet file; the peak is the growth of RSS during
the step alone (``/proc/self/clear_refs`` resets the high-water mark after loading). Cases:

- rfm: ``features.rfm.rfm_summary`` vs ``lifetimes.utils.summary_data_from_transaction_data``, on orders grouped
  by customer (as the simulator writes them) and, ``rfm-time``, in time order (as a CRM export comes);
- fit: BG/NBD (weighted unique rows) + Gamma-Gamma with analytic gradients, from a fit on a sample
  (``training.clv.fit``) vs lifetimes on raw rows from its own start (which may raise ConvergenceError at this
  size: BFGS precision loss); both stop at lifetimes' tolerance, so they differ within it (~1e-6 relative);
- predict: all per-customer outputs (``training.clv.predict.predict_clv``, 360-day CLV) vs lifetimes'
  ``customer_lifetime_value(time=12, freq="D")`` alone, checked equal.

BLAS runs on one thread (``OPENBLAS_NUM_THREADS=1``). Figures are noisy: the machine has 2 cores
shared with other work, so CPU seconds (all threads of the process) are printed beside wall seconds;
on a busy machine they are the steadier figure.

    .venv/bin/python benchmarks/bench_clv.py [--customers 1000000]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

END = "2024-12-31"


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> float:
    Path("/proc/self/clear_refs").write_text("5")
    return _rss_mb("VmRSS")


def _timed(step) -> tuple[object, float, float, float]:
    """The step's result, wall seconds, peak RSS growth in MB, and CPU seconds of the process (all threads)."""
    before = _reset_peak()
    started, cpu = time.perf_counter(), time.process_time()
    result = step()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    return result, seconds, _rss_mb("VmHWM") - before, cpu_seconds


def generate(customers: int, folder: Path) -> Path:
    """~10 orders per customer from the true BG/NBD + Gamma-Gamma process, as Parquet."""
    from features.simulate.config import OrderValue, PurchaseProcess
    from features.simulate.orders import simulate_orders

    rng = np.random.default_rng(7)
    age = rng.integers(200, 1100, customers)
    orders, _ = simulate_orders(age + 1, PurchaseProcess(r=1.5, alpha=60.0, a=0.6, b=8.0), OrderValue(), rng)
    starts = pd.Timestamp(END) - pd.to_timedelta(age, unit="D")
    owner = orders["customer"].to_numpy()
    frame = pd.DataFrame({
        "customer_id": pd.array(np.char.add("c", np.char.zfill(owner.astype(str), 7)), dtype="str"),
        "ordered_at": (starts[owner] + pd.to_timedelta(orders["day"].to_numpy(), unit="D")).astype("datetime64[us]"),
        "amount": orders["amount"].to_numpy(),
    })
    path = folder / "orders.parquet"
    frame.to_parquet(path)
    from features.rfm import rfm_summary

    rfm_summary(frame, END).to_parquet(folder / "rfm.parquet")
    return path


def case_rfm(folder: Path, ours: bool, by_time: bool = False) -> dict:
    tx = pd.read_parquet(folder / "orders.parquet")
    if by_time:  # as a CRM export comes: in the order the orders were placed
        tx = tx.sort_values("ordered_at", kind="stable", ignore_index=True)
    if ours:
        from features.rfm import rfm_summary

        out, seconds, peak, cpu = _timed(lambda: rfm_summary(tx, END))
    else:
        from lifetimes.utils import summary_data_from_transaction_data

        out, seconds, peak, cpu = _timed(lambda: summary_data_from_transaction_data(
            tx, "customer_id", "ordered_at", "amount", observation_period_end=END))
    return {"orders": len(tx), "customers": len(out), "seconds": seconds, "cpu_seconds": cpu, "peak_mb": peak}


def case_fit(folder: Path, ours: bool) -> dict:
    rfm = pd.read_parquet(folder / "rfm.parquet")
    buyers = rfm[rfm["frequency"] > 0]
    if ours:
        import scipy.optimize  # noqa: F401 - the fit imports it on first use: loaded before the clock, as lifetimes is

        from training.clv.fit import fit_bgnbd, fit_gamma_gamma

        def fit() -> list[float]:
            bg, gg = fit_bgnbd(rfm), fit_gamma_gamma(rfm)
            return [bg.r, bg.alpha, bg.a, bg.b, gg.p, gg.q, gg.v]
    else:
        from lifetimes import BetaGeoFitter, GammaGammaFitter

        def fit() -> list[float] | str:
            try:
                with contextlib.redirect_stdout(sys.stderr):
                    bg = BetaGeoFitter().fit(rfm["frequency"], rfm["recency"], rfm["T"]).params_
                    gg = GammaGammaFitter().fit(buyers["frequency"], buyers["monetary_value"]).params_
            except ConvergenceError:
                return "lifetimes raised ConvergenceError (BFGS precision loss at a ~0 gradient)"
            return [float(v) for v in [*bg.to_numpy(), *gg.to_numpy()]]
        from lifetimes.utils import ConvergenceError
    params, seconds, peak, cpu = _timed(fit)
    return {"customers": len(rfm), "unique_rows": len(rfm.groupby(["frequency", "recency", "T"]).size()),
            "seconds": seconds, "cpu_seconds": cpu, "peak_mb": peak, "params": params}


def case_predict(folder: Path, ours: bool) -> dict:
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    from training.clv.fit import fit_bgnbd, fit_gamma_gamma
    from training.clv.predict import CLVParameters, predict_clv, rfm_in_days

    rfm = pd.read_parquet(folder / "rfm.parquet")
    params = CLVParameters("D", fit_bgnbd(rfm), fit_gamma_gamma(rfm), horizon_days=360,
                           discount_rate=(1.01 ** (365 / 30)) - 1)
    if ours:
        customers = rfm_in_days(rfm, "D")
        out, seconds, peak, cpu = _timed(lambda: predict_clv(params, customers))
        clv = out["clv"].to_numpy()
    else:
        bgf, ggf = BetaGeoFitter(), GammaGammaFitter()
        bg, gg = params.purchases, params.gamma_gamma
        bgf.params_ = pd.Series({"r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b})
        bgf.predict = bgf.conditional_expected_number_of_purchases_up_to_time
        ggf.params_ = pd.Series({"p": gg.p, "q": gg.q, "v": gg.v})
        out, seconds, peak, cpu = _timed(lambda: ggf.customer_lifetime_value(
            bgf, rfm["frequency"], rfm["recency"], rfm["T"], rfm["monetary_value"], time=12, discount_rate=0.01,
            freq="D"))
        clv = out.to_numpy()
    sample = np.random.default_rng(0).choice(len(clv), 20_000, replace=False)
    return {"customers": len(rfm), "seconds": seconds, "cpu_seconds": cpu, "peak_mb": peak,
            "clv_sample": clv[sample].tolist()}


CASES = {"rfm": case_rfm, "rfm-time": lambda folder, ours: case_rfm(folder, ours, by_time=True), "fit": case_fit,
         "predict": case_predict}


def _run(case: str, who: str, folder: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--case", case, "--who", who, "--folder", str(folder)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--case", choices=list(CASES))
    parser.add_argument("--who", choices=["ours", "lifetimes"])
    parser.add_argument("--folder", type=Path)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(CASES[args.case](args.folder, args.who == "ours")))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        generate(args.customers, folder)
        print(f"generated {args.customers:,} customers' orders in {time.perf_counter() - started:.0f} s "
              "(2 shared cores: figures are noisy)")
        for case in CASES:
            ours, theirs = _run(case, "ours", folder), _run(case, "lifetimes", folder)
            size = f"{ours.get('orders', ours['customers']):,} {'orders' if 'orders' in ours else 'customers'}"
            print(f"{case:8s} {size}: ours {ours['seconds']:.2f} s ({ours['cpu_seconds']:.2f} s CPU), peak "
                  f"+{ours['peak_mb']:.0f} MB | lifetimes {theirs['seconds']:.2f} s "
                  f"({theirs['cpu_seconds']:.2f} s CPU), peak +{theirs['peak_mb']:.0f} MB | speed-up "
                  f"{theirs['seconds'] / ours['seconds']:.1f}x wall, "
                  f"{theirs['cpu_seconds'] / ours['cpu_seconds']:.1f}x CPU")
            if case == "fit":
                print(f"         {ours['unique_rows']:,} unique (frequency, recency, T) rows; parameters (r, alpha, "
                      f"a, b, p, q, v) ours {np.round(ours['params'], 4).tolist()}")
                if isinstance(theirs["params"], str):
                    print(f"         {theirs['params']}")
                else:
                    worst = np.max(np.abs(np.array(ours["params"]) / np.array(theirs["params"]) - 1))
                    print(f"         largest relative difference to lifetimes' raw fit {worst:.1e}")
            if case == "predict":
                worst = np.max(np.abs(np.array(ours["clv_sample"]) / np.array(theirs["clv_sample"]) - 1))
                print(f"         ours includes expected purchases, P(alive), order value and segments; "
                      f"CLV largest relative difference on 20,000 customers {worst:.1e}")


if __name__ == "__main__":
    main()
