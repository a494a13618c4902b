"""A dataset with no dropout: every model's dropout collapses, and it is said (stderr, --json, MLflow, the model), and
segments go by value and recency; the words for each way a fit can run to a bound."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from serving.cli.train import train_clv
from tests.mlflow_stores import empty_tracking_uri
from training.clv.diagnostics import bound_warning
from training.clv.job import CLVConfig, FittedCLV, fit_clv
from training.clv.predict import days_since_last_purchase, predict_clv, rfm_in_days
from training.clv.purchases import BgNbdParameters, MbgNbdParameters, ParetoNbdParameters, PurchaseParameters
from training.registry import load_registered

END = "2024-12-31"
CALIBRATION_END = "2024-09-30"


def no_dropout_transactions(n: int, seed: int, days: int = 365) -> pd.DataFrame:
    """Customers who never leave: each buys as a Poisson process at its own Gamma(2, 1/60) daily rate (one purchase
    every 30 days on average) from a first purchase in the year to its end; order values Gamma(6, 10)."""
    rng = np.random.default_rng(seed)
    rate = rng.gamma(2.0, 1 / 60.0, n)
    first = rng.uniform(0, days, n)
    repeats = rng.poisson(rate * (days - first))
    owner = np.repeat(np.arange(n), repeats + 1)   # a Poisson process's times, given their count, are uniform
    is_first = np.r_[True, owner[1:] != owner[:-1]]
    day = first[owner] + np.where(is_first, 0.0, rng.uniform(0, 1, len(owner)) * (days - first[owner]))
    start = pd.Timestamp(END) - pd.Timedelta(days=days)
    return pd.DataFrame({
        "customer_id": np.char.add("c", np.char.zfill(owner.astype(str), 5)).astype(object),
        "ordered_at": start + pd.to_timedelta(np.floor(day), unit="D"),
        "amount": rng.gamma(6.0, 10.0, len(owner)).round(2),
    })


@pytest.fixture(scope="module")
def transactions_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,500 customers who never leave, as a transactions file named like a shop's export."""
    file = tmp_path_factory.mktemp("no_dropout") / "retail.csv"
    no_dropout_transactions(1500, seed=0).to_csv(file, index=False)
    return file


@pytest.fixture(scope="module")
def fitted() -> FittedCLV:
    return fit_clv(no_dropout_transactions(1500, seed=0), CLVConfig(CALIBRATION_END, END))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One MLflow store for the module's runs, artifacts next to it (never under the repository's models/)."""
    folder = tmp_path_factory.mktemp("no_dropout_mlflow")
    return {"MLFLOW_TRACKING_URI": empty_tracking_uri(folder), "LEADVAL_ARTIFACT_ROOT": str(folder / "artifacts")}


def test_every_model_collapses_and_says_so(fitted: FittedCLV) -> None:
    for candidate in fitted.choice.candidates:
        assert candidate.converged and candidate.degenerate, candidate.kind
        assert candidate.p_alive_range[0] > 0.999
        assert {"a->0", "s->0"} & set(candidate.purchases.at_bound), candidate.purchases.at_bound
    own = fitted.params.warnings
    label = fitted.params.purchases.label
    assert own[0].startswith(f"{label} fit at a bound: ") and "the model sees customers who never leave" in own[0]
    assert own[1].startswith(f"{label}: P(alive) is 1.000 to 1.000 for 98% of customers (a dropout that collapsed)")
    # with a penalizer the dropout runs off to a corner (a and b both -> 0): no finite optimum, and it is said
    assert own[2].startswith(f"{label}: no usable fit with penalizer 0.001, 0.01") and own[2].endswith(
        " (did not converge); kept penalizer 0, the lowest holdout MAE of the others")
    assert own[3].startswith("segments by value and recency, not P(alive)") and len(own) == 4
    assert any(w.startswith("every CLV model is degenerate on this data (BG/NBD, MBG/NBD, Pareto/NBD)")
               for w in fitted.warnings)
    assert sum(w.endswith("not chosen") or " not chosen: " in w for w in fitted.warnings) == 2


def test_segments_go_by_value_and_recency(fitted: FittedCLV) -> None:
    """at_risk from the 60th percentile of days since the last purchase, lost from the 80th; P(alive) plays no part;
    one-time buyers are never loyal or champions."""
    rule = fitted.params.segment_rule
    customers = rfm_in_days(fitted.current, "D")
    silence = days_since_last_purchase(customers)
    assert rule.basis == "recency"
    assert (rule.recency_at_risk_days, rule.recency_lost_days) == tuple(np.quantile(silence, [0.6, 0.8]))
    scores = predict_clv(fitted.params, customers)
    assert scores["p_alive"].min() > 0.999
    segment = scores["segment"].to_numpy()
    assert set(segment) == {"champions", "loyal", "promising", "at_risk", "lost"}
    assert (silence[segment == "lost"] >= rule.recency_lost_days).all()
    assert ((silence[segment == "at_risk"] >= rule.recency_at_risk_days)
            & (silence[segment == "at_risk"] < rule.recency_lost_days)).all()
    assert (silence[~np.isin(segment, ["lost", "at_risk"])] < rule.recency_at_risk_days).all()
    assert np.median(silence[segment == "lost"]) > np.median(silence[segment == "at_risk"]) > np.median(
        silence[np.isin(segment, ["champions", "loyal", "promising"])])
    assert not np.isin(segment[customers["frequency"].to_numpy() == 0], ["loyal", "champions"]).any()
    assert 0.15 < (segment == "lost").mean() < 0.25


def _cli(store: dict[str, str], *args: str) -> tuple[int, str, str, BaseException | None]:
    """``leadval train clv ARGS`` with the store's tracking URI and artifact root from the environment."""
    app = typer.Typer()
    app.command()(train_clv)
    result = CliRunner().invoke(app, list(args), env=store)
    return result.exit_code, result.stdout, result.stderr, result.exception


def test_train_clv_warns_on_stderr_in_json_in_mlflow_and_with_the_model(
        transactions_file: Path, fitted: FittedCLV, store: dict[str, str], tmp_path: Path) -> None:
    code, stdout, stderr, exc = _cli(store, "--transactions", str(transactions_file), "--customer-col",
                                     "customer_id", "--date-col", "ordered_at", "--amount-col", "amount",
                                     "--calibration-end", CALIBRATION_END, "--observation-end", END, "--json")
    assert code == 0, exc
    out = json.loads(stdout.strip().splitlines()[-1])
    assert out["model_name"] == "clv-retail" and out["segments_by"] == "recency"
    assert [c["model"] for c in out["candidates"]] == ["bgnbd", "mbgnbd", "pnbd"]
    assert all(c["degenerate"] and c["warnings"] for c in out["candidates"])
    assert out["warnings"] == list(fitted.warnings)  # the command says exactly what the fit found
    said = [line for line in stderr.splitlines() if line.startswith("warning: ")]
    assert said == [f"warning: {w}" for w in out["warnings"]]
    assert "segments by value and recency" in stdout.splitlines()[0]
    assert sum(out["segments"].values()) == len(fitted.current) and min(out["segments"].values()) > 0
    tracking = store["MLFLOW_TRACKING_URI"]

    run = MlflowClient(tracking_uri=tracking).get_run(out["run_id"])
    assert json.loads(run.data.tags["warnings"]) == out["warnings"]
    assert run.data.tags["segments_by"] == "recency" and run.data.tags["clv_model"] == out["model"]
    recorded = json.loads(Path(MlflowClient(tracking_uri=tracking).download_artifacts(
        out["run_id"], "warnings.json", str(tmp_path))).read_text())
    assert recorded["warnings"] == out["warnings"]
    model = load_registered(f"models:/clv-retail/{out['model_version']}")
    own = list(model.unwrap_python_model().params.warnings)
    assert own == list(fitted.params.warnings)
    assert model.metadata.metadata["warnings"] == own and model.metadata.metadata["segments_by"] == "recency"
    assert json.loads(run.data.tags["model_warnings"]) == own


def test_model_and_model_name_options(tmp_path: Path, store: dict[str, str]) -> None:
    file = tmp_path / "retail.csv"
    no_dropout_transactions(600, seed=2).to_csv(file, index=False)
    code, stdout, _, exc = _cli(store, "--transactions", str(file), "--customer-col", "customer_id", "--date-col",
                                "ordered_at", "--calibration-end", CALIBRATION_END, "--observation-end", END,
                                "--model", "pnbd", "--model-name", "shop-clv", "--json")
    assert code == 0, exc
    out = json.loads(stdout.strip().splitlines()[-1])
    assert out["model"] == "pnbd" and out["model_reason"] == "--model pnbd" and out["model_name"] == "shop-clv"
    assert set(out["params"]) == {"r", "alpha", "s", "beta", "p", "q", "v"} and out["params"]["p"] is None
    assert out["params"]["s"] == next(c for c in out["candidates"] if c["model"] == "pnbd")["params"]["s"]
    code, _, _, exc = _cli(store, "--transactions", str(file), "--customer-col", "customer_id", "--date-col",
                           "ordered_at", "--calibration-end", CALIBRATION_END, "--observation-end", END,
                           "--model", "gamma")
    assert code != 0 and "--model: expected one of auto, bgnbd, mbgnbd, pnbd, got 'gamma'" in str(exc)


@pytest.mark.parametrize(("model", "meaning"), [
    (BgNbdParameters(0.5, 60.0, 4e-7, 2e4, 0.0, -1.0, 100, ("a->0",)),
     "the dropout probability collapsed to ~0 (mean a/(a+b) = 2e-11 per purchase): the model sees customers who "
     "never leave"),
    (ParetoNbdParameters(0.5, 60.0, 6e-11, 1.2e-4, 0.0, -1.0, 100, ("s->0", "beta->0")),
     "the dropout rate collapsed to ~0 (mean s/beta = 5e-07 per time unit): the model sees customers who never leave"),
    # both dropout parameters to infinity: every customer drops out at the same rate, which is no "never leave"
    (ParetoNbdParameters(0.5, 60.0, 6.26e5, 3.09e8, 0.0, -1.0, 100, ("s->inf", "beta->inf")),
     "dropout rates look alike for every customer (mean s/beta = 0.002 per time unit; their spread collapsed)"),
    (MbgNbdParameters(0.5, 60.0, 3e4, 1.2e5, 0.0, -1.0, 100, ("a->inf", "b->inf")),
     "dropout probabilities look alike for every customer (mean a/(a+b) = 0.2 per purchase; their spread collapsed)"),
    (BgNbdParameters(3e4, 9e5, 0.8, 2.4, 0.0, -1.0, 100, ("r->inf", "alpha->inf")),
     "purchase rates look alike for every customer (their Gamma spread collapsed)"),
])
def test_bound_warnings_say_which_way_the_fit_ran(model: PurchaseParameters, meaning: str) -> None:
    said = bound_warning(model)
    assert said.startswith(f"{model.label} fit at a bound: ") and said.endswith(f"; {meaning}"), said
