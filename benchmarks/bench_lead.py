"""Benchmark lead scoring at scale: feature build, training, and scoring against LightGBM alone.

A simulated CRM of ``--leads`` leads (default 100,000, ``--activity-rate`` 1.4 gives ~5M activities) is
generated in memory by the simulator's own lead model (no database: loading is the batch job's
benchmark). Steps, each timed in wall and CPU seconds (CPU = all threads of this process; on a busy
machine it is the steadier figure):

- features: ``lead_features`` as of the CRM's end for every lead (leads/s and activities/s);
- snapshots + training: the stacked training set, then ``fit_lead_model`` (LightGBM + calibration,
  one thread) and the logistic-regression baseline, with their test ROC/PR AUC;
- batch scoring of the open leads, features included: scores only (``reasons=False``) and with reason
  codes, against LightGBM's ``predict`` alone on the prepared matrix (same booster, same thread count);
- single-lead latency of ``score_leads`` (one lead with its activities, features included): p50/p99.

The machine has 2 cores shared with other work: figures are noisy, ratios steadier.

    .venv/bin/python benchmarks/bench_lead.py [--leads 100000] [--activity-rate 1.4]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import replace  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from features.lead_features import BEHAVIOUR_FEATURES, PROFILE_FEATURES, lead_features  # noqa: E402
from features.lead_labels import open_leads, snapshot_plan, training_snapshots  # noqa: E402
from features.simulate.config import SimulationConfig  # noqa: E402
from features.simulate.content import content_catalog  # noqa: E402
from features.simulate.leads import simulate_leads  # noqa: E402
from features.simulate.marketing import plan_leads  # noqa: E402
from training.leads.evaluation import lead_metrics  # noqa: E402
from training.leads.fit import LeadModelConfig, fit_baseline, fit_lead_model  # noqa: E402
from training.leads.pyfunc import score_leads  # noqa: E402
from training.leads.reasons import crm_wording  # noqa: E402
from training.leads.spec import FeatureSpec  # noqa: E402


@contextmanager
def timed(label: str, results: dict):
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    results[label] = (time.perf_counter() - wall, time.process_time() - cpu)
    print(f"  {label:<44} {results[label][0]:8.2f} s wall {results[label][1]:8.2f} s cpu", flush=True)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def simulated_crm(n_leads: int, activity_rate: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Leads and activities from the simulator's lead model, in memory, chunk by chunk."""
    config = SimulationConfig(n_leads=n_leads, n_customers=0, seed=seed, activity_rate=activity_rate)
    rng = np.random.default_rng(seed)
    plan, catalog = plan_leads(config, rng), content_catalog(config)
    leads, activities, done = [], [], 0
    for first in range(0, n_leads, config.chunk_leads):
        batch = simulate_leads(config, plan, catalog, first, min(first + config.chunk_leads, n_leads), done, rng)
        leads.append(batch.leads)
        activities.append(batch.activities[["lead_id", "occurred_at", "activity_type", "duration_seconds"]])
        done += len(batch.activities)
    return pd.concat(leads, ignore_index=True), pd.concat(activities, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--activity-rate", type=float, default=1.4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--single-repeats", type=int, default=300)
    args = parser.parse_args()
    results: dict[str, tuple[float, float]] = {}

    print(f"Simulating {args.leads:,} leads ...", flush=True)
    leads, activities = simulated_crm(args.leads, args.activity_rate, args.seed)
    activities["activity_type"] = activities["activity_type"].astype("str")
    end = max(leads["created_at"].max(), activities["occurred_at"].max())
    print(f"  {len(leads):,} leads, {len(activities):,} activities, up to {end}; peak {peak_mb():,.0f} MB")

    print("Features (every lead, as of the CRM's end)")
    with timed("lead_features", results):
        features = lead_features(leads, activities, end)
    wall = results["lead_features"][0]
    print(f"  -> {len(features) / wall:,.0f} leads/s, {len(activities) / wall:,.0f} activities/s; "
          f"peak {peak_mb():,.0f} MB")

    print("Training")
    plan = snapshot_plan(leads["created_at"].min(), end, test_snapshots=2)
    with timed(f"stacked snapshots ({len(plan.train) + len(plan.valid) + len(plan.test)} dates)", results):
        parts = {name: training_snapshots(leads, activities, getattr(plan, name)) for name in ("train", "valid", "test")}
    print("  rows: " + ", ".join(f"{k} {len(v):,} ({v['converted'].mean():.2%} converted)" for k, v in parts.items()))
    spec = FeatureSpec.learn(parts["train"], "lead_id", PROFILE_FEATURES, BEHAVIOUR_FEATURES)
    config = LeadModelConfig()
    with timed("fit_lead_model (LightGBM + calibration, 1 thread)", results):
        scorer = fit_lead_model(parts["train"], parts["valid"], spec, crm_wording(spec.features), config, "converted",
                                90)
    with timed("logistic baseline", results):
        baseline = fit_baseline(parts["train"], spec, "converted")
    test = parts["test"]
    model_metrics = lead_metrics(test["converted"], scorer.probability(test))
    baseline_metrics = lead_metrics(test["converted"], baseline.predict_proba(spec.matrix(test))[:, 1])
    print(f"  {scorer.info['best_iteration']} trees; test ROC AUC {model_metrics['roc_auc']:.4f} vs baseline "
          f"{baseline_metrics['roc_auc']:.4f}, PR AUC {model_metrics['pr_auc']:.4f} vs {baseline_metrics['pr_auc']:.4f}, "
          f"ECE {model_metrics['ece']:.4f}; peak {peak_mb():,.0f} MB")

    print("Batch scoring of the open leads, features included")
    open_now = open_leads(leads, end)
    n = len(open_now)
    with timed("score_leads, scores only", results):
        scores = score_leads(scorer, open_now, activities, end, reasons=False)
    with timed("score_leads, with reason codes", results):
        explained = score_leads(scorer, open_now, activities, end)
    matrix = spec.matrix(lead_features(open_now, activities, end))
    for threads in (1, 2):
        with timed(f"LightGBM predict alone ({threads} thread{'s' * (threads > 1)})", results):
            scorer.booster.predict(matrix, num_threads=threads)
    two = replace(scorer, num_threads=2)
    with timed("score_leads, scores only (2 threads)", results):
        score_leads(two, open_now, activities, end, reasons=False)
    assert (scores["probability"].to_numpy() == explained["probability"].to_numpy()).all()
    alone = results["LightGBM predict alone (1 thread)"][0]
    for label in ("score_leads, scores only", "score_leads, with reason codes"):
        print(f"  {label}: {n / results[label][0]:,.0f} leads/s, {results[label][0] / alone:.1f}x LightGBM alone")
    print(f"  LightGBM alone: {n / alone:,.0f} rows/s (1 thread), "
          f"{n / results['LightGBM predict alone (2 threads)'][0]:,.0f} rows/s (2 threads)")

    print("Single-lead latency (one lead with its activities, features and reasons included)")
    by_lead = activities.groupby("lead_id", sort=False)
    sample = open_now.sample(min(args.single_repeats, n), random_state=0)
    timings = []
    for lead_id in sample["lead_id"]:
        one = sample[sample["lead_id"] == lead_id]
        events = by_lead.get_group(lead_id) if lead_id in by_lead.groups else activities.iloc[:0]
        started = time.perf_counter()
        score_leads(scorer, one, events, end)
        timings.append((time.perf_counter() - started) * 1e3)
    print(f"  p50 {np.percentile(timings, 50):.2f} ms, p99 {np.percentile(timings, 99):.2f} ms over "
          f"{len(timings)} leads; peak {peak_mb():,.0f} MB")


if __name__ == "__main__":
    main()
