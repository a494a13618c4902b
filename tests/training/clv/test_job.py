"""The CLV training job end to end: CRM or file -> fit -> validate -> MLflow -> registry, and its command."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from features.crm.schema import customers, orders
from features.crm.store import connect, create_schema, insert_frame
from features.crm.transactions import read_transactions
from features.errors import InvalidInput
from features.rfm import default_dates, rfm_summary
from serving.cli.train import train_clv
from tests.mlflow_stores import empty_tracking_uri
from tests.training.clv.test_fit import simulated_transactions
from training.clv.job import CLVTrainingResult, train_from_crm, train_from_file
from training.clv.predict import SEGMENTS, predict_clv, rfm_in_days
from training.registry import champion_uri, file_model_name, load_registered

END = "2024-12-31"
CHANNELS = ("email", "paid_search")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One MLflow SQLite store and one simulated CRM (1,200 customers) for the module; a transactions file of 400 of
    them (the file tests check the command's options and outputs, and fits cost about linearly in customers)."""
    root = tmp_path_factory.mktemp("clv_mlflow")
    tx = simulated_transactions(1200, seed=5, end=END, channels=CHANNELS)
    crm_url = f"sqlite:///{root / 'crm.db'}"
    engine = connect(crm_url)
    create_schema(engine)
    first = tx.groupby("customer_id", as_index=False).agg(created_at=("ordered_at", "min"),
                                                         acquisition_channel=("acquisition_channel", "first"))
    with engine.begin() as conn:
        insert_frame(conn, customers, first)
        insert_frame(conn, orders, tx.assign(order_id=[f"o{i}" for i in range(len(tx))]))
    engine.dispose()
    file = root / "orders.csv"
    in_file = tx[tx["customer_id"].isin(np.sort(tx["customer_id"].unique())[:400])]
    in_file.rename(columns={"customer_id": "buyer", "ordered_at": "day", "amount": "value"}).to_csv(file, index=False)
    yield {"tracking_uri": empty_tracking_uri(root), "artifact_root": str(root / "artifacts"),
           "crm_url": crm_url, "file": str(file)}


@pytest.fixture(scope="module")
def first_run(store: dict[str, str]) -> CLVTrainingResult:
    return train_from_crm(store["crm_url"], store["tracking_uri"], store["artifact_root"])


def _cli(store: dict[str, str], *args: str) -> tuple[int, str, BaseException | None]:
    """``leadval train clv ARGS`` with the store's artifact root (never the repository's models/)."""
    app = typer.Typer()
    app.command()(train_clv)
    result = CliRunner().invoke(app, list(args), env={"LEADVAL_ARTIFACT_ROOT": store["artifact_root"]})
    return result.exit_code, result.stdout, result.exception


def test_crm_run_is_logged_and_becomes_champion(first_run: CLVTrainingResult, store: dict[str, str]) -> None:
    out = first_run.as_dict()
    assert out["model_version"] == "1" and out["champion"] is True and out["model_name"] == "clv"
    assert out["observation_end"] == END
    assert pd.Timestamp(out["calibration_end"]) < pd.Timestamp(END)
    assert out["model"] in ("bgnbd", "mbgnbd", "pnbd") and out["model_reason"]
    assert set(out["params"]) == {*first_run.params.purchases.names, "p", "q", "v"}
    assert [c["model"] for c in out["candidates"]] == ["bgnbd", "mbgnbd", "pnbd"]
    assert all(c["converged"] and c["holdout"]["mae"] > 0 for c in out["candidates"])
    assert out["holdout"]["mae"] == min(c["holdout"]["mae"] for c in out["candidates"]) or "within 1%" in out[
        "model_reason"]
    assert out["warnings"] == [] and out["segments_by"] == "p_alive"
    assert out["holdout"]["mae"] > 0 and out["holdout"]["correlation"] > 0.3
    assert out["holdout"]["predicted_purchases"] == pytest.approx(out["holdout"]["actual_purchases"], rel=0.25)
    assert sum(out["segments"].values()) == len(rfm_summary(
        simulated_transactions(1200, seed=5, end=END), END))
    run = MlflowClient().get_run(first_run.run_id)
    assert run.data.metrics["holdout_mae"] == out["holdout"]["mae"]
    assert run.data.tags["gamma_gamma_assumption"] == "holds"
    assert run.data.tags["clv_model"] == out["model"] and json.loads(run.data.tags["warnings"]) == []
    for kind, name in (("bgnbd", "a"), ("mbgnbd", "b"), ("pnbd", "s")):  # every candidate is logged
        assert f"{kind}_{name}" in run.data.metrics and f"{kind}_holdout_mae" in run.data.metrics
    artifacts = {a.path for a in MlflowClient().list_artifacts(first_run.run_id, "validation")}
    assert {"validation/tracking.png", "validation/holdout_by_frequency.csv", "validation/p_alive_calibration.png",
            "validation/holdout_by_frequency.png", "validation/p_alive_calibration.csv"} <= artifacts


def test_registered_model_predicts_exactly_what_the_in_memory_one_did(first_run: CLVTrainingResult) -> None:
    current = rfm_summary(simulated_transactions(1200, seed=5, end=END), END)
    customers_in_days = rfm_in_days(current, first_run.params.time_unit)
    loaded = load_registered(champion_uri("clv"))
    pd.testing.assert_frame_equal(loaded.predict(customers_in_days).reset_index(drop=True),
                                  predict_clv(first_run.params, customers_in_days).reset_index(drop=True))
    short = loaded.predict(customers_in_days, params={"horizon_days": 90.0, "discount_rate": 0.0})
    np.testing.assert_array_equal(short["clv"],
                                  predict_clv(first_run.params, customers_in_days, 90, 0.0)["clv"])
    assert set(short["segment"]) <= set(SEGMENTS)


def test_new_customer_value_per_channel_is_served_by_the_model(first_run: CLVTrainingResult) -> None:
    loaded = load_registered(champion_uri("clv"))
    model = loaded.unwrap_python_model()
    values = model.new_customer_values()
    assert set(values["by_channel"]) == set(CHANNELS)
    assert model.new_customer_value("email") == values["by_channel"]["email"] > 0
    assert model.new_customer_value("unknown") == values["overall"] > 0
    assert loaded.metadata.metadata["new_customer_value"]["by_channel"] == values["by_channel"]


def test_champion_is_gated_on_the_same_holdout(first_run: CLVTrainingResult, store: dict[str, str]) -> None:
    code, stdout, exc = _cli(store, "--db", store["crm_url"], "--tracking-uri", store["tracking_uri"], "--json")
    assert code == 0, exc
    again = json.loads(stdout.strip().splitlines()[-1])
    assert again["champion"] is True
    assert "at least as good as champion v1" in again["promotion_reason"]
    code, stdout, exc = _cli(store, "--db", store["crm_url"], "--tracking-uri", store["tracking_uri"], "--promote",
                             "never", "--json")
    assert code == 0, exc
    never = json.loads(stdout.strip().splitlines()[-1])
    assert never["champion"] is False
    assert str(MlflowClient().get_model_version_by_alias("clv", "champion").version) == again["model_version"]


def test_transactions_file_command_prints_json_last(store: dict[str, str]) -> None:
    code, stdout, exc = _cli(
        store, "--transactions", store["file"], "--customer-col", "buyer", "--date-col", "day", "--amount-col",
        "value",
        "--time-unit", "W", "--observation-end", END,
        "--tracking-uri", store["tracking_uri"], "--promote", "never", "--json",
    )  # the calibration end defaults as for the CRM
    assert code == 0, exc
    out = json.loads(stdout.strip().splitlines()[-1])
    assert {"run_id", "model_version", "champion", "params", "holdout", "model", "candidates", "warnings"} <= set(out)
    assert out["model_name"] == "clv-orders" and out["champion"] is False
    assert len(out["candidates"]) == 3 and {"r", "alpha", "p", "q", "v"} <= set(out["params"])
    assert {"actual_purchases", "predicted_purchases", "mae", "correlation"} <= set(out["holdout"])
    orders = read_transactions(Path(store["file"]), "buyer", "day", "value", END)
    assert out["time_unit"] == "W" and (out["calibration_end"], out["observation_end"]) == default_dates(orders, 365,
                                                                                                        None, END)


def test_bad_transactions_file_names_rows(tmp_path: Path, store: dict[str, str]) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("buyer,day,value\nc1,2024-01-01,5\nc1,2024-02-01,-5\n")
    code, _, exc = _cli(store, "--transactions", str(path), "--customer-col", "buyer", "--date-col", "day",
                        "--amount-col", "value", "--calibration-end", "2024-01-15", "--observation-end", "2024-03-01",
                        "--tracking-uri", store["tracking_uri"])
    assert code != 0
    assert isinstance(exc, InvalidInput) and "  - value: expected a number >= 0; 1 row: line 3 '-5'" in str(exc)


def test_file_mode_needs_its_options(store: dict[str, str]) -> None:
    code, _, exc = _cli(store, "--transactions", store["file"], "--customer-col", "buyer", "--tracking-uri",
                        store["tracking_uri"])
    assert code != 0
    assert isinstance(exc, InvalidInput) and str(exc) == "--transactions needs --date-col"


def test_file_without_amounts_trains_a_purchases_only_model(store: dict[str, str]) -> None:
    code, stdout, exc = _cli(
        store, "--transactions", store["file"], "--customer-col", "buyer", "--date-col", "day",
        "--calibration-end", "2024-06-30", "--observation-end", END,
        "--tracking-uri", store["tracking_uri"], "--promote", "never", "--json",
    )
    assert code == 0, exc
    out = json.loads(stdout.strip().splitlines()[-1])
    assert out["params"]["p"] is None and out["params"]["r"] > 0
    assert out["new_customer_value"]["overall"] is None
    assert out["model_name"] == "clv-orders"
    model = load_registered(f"models:/clv-orders/{out['model_version']}")
    scored = model.predict(pd.DataFrame({"frequency": [0, 4], "recency_days": [0.0, 200.0], "age_days": [30.0, 300.0],
                                         "monetary_value": [0.0, 0.0]}))
    assert scored["clv"].isna().all() and scored["segment"].isin(SEGMENTS).all()


def test_a_file_model_never_gates_or_replaces_the_crm_model(first_run: CLVTrainingResult,
                                                             store: dict[str, str]) -> None:
    """train_from_file registers as clv-<file stem> by default: the CRM's clv champion is untouched."""
    before = str(MlflowClient().get_model_version_by_alias("clv", "champion").version)
    result = train_from_file(Path(store["file"]), "buyer", "day", "2024-06-30", END, store["tracking_uri"],
                             store["artifact_root"], amount_col="value", model="mbgnbd")
    assert result.promotion.model_name == "clv-orders" and result.params.model == "mbgnbd"
    assert str(MlflowClient().get_model_version_by_alias("clv", "champion").version) == before
    assert file_model_name(Path("/data/shop 2024.csv.gz"), "clv") == "clv-shop-2024"
    with pytest.raises(InvalidInput, match="--model-name clv: that is the CRM model"):
        train_from_file(Path(store["file"]), "buyer", "day", "2024-06-30", END, store["tracking_uri"],
                        store["artifact_root"], amount_col="value", model_name="clv")
