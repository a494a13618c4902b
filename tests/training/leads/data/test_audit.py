"""The column audit of flat lead files: ids, one-value columns and suspected leakage, each rule on its own, then
through `leadval train leads --table --json`, and the promotion gate with a leaky champion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from features.errors import InvalidInput
from serving.cli.train import train_leads
from tests.mlflow_stores import empty_tracking_uri
from training.leads.data.audit import audit_features, audit_table, id_like_reason, own_auc, structural_drops
from training.leads.data.splits import TableTrainingConfig, read_lead_table, table_splits
from training.leads.fit import LeadModelConfig
from training.leads.job import train_and_register
from training.registry import LEAD_MODEL_NAME, champion_version, file_model_name, version_tags


def planted_table(n: int = 1_500, seed: int = 0) -> pd.DataFrame:
    """Leads with two honest features, an integer id, a text id, a one-value column and two leaky columns:
    a score written after the call (near-perfect) and status tags filled in by sales for converters."""
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "pro", "enterprise"], n)
    visits = rng.poisson(3, n).astype(float)
    won = (rng.random(n) < 1 / (1 + np.exp(-(-1.5 + 0.35 * visits + (plan == "enterprise"))))).astype(int)
    status = np.where(won == 1, rng.choice(["closed-won", "contract sent"], n), None)
    status[(won == 0) & (rng.random(n) < 0.03)] = "lost"
    return pd.DataFrame({
        "customer_id": 660_000 + np.arange(n) * 7,
        "lead_code": [f"X{rng.integers(10**9)}-{i}" for i in range(n)],
        "plan": plan,
        "visits": visits,
        "score_after_call": np.where(won == 1, rng.normal(0.9, 0.05, n), rng.normal(0.3, 0.1, n)).round(3),
        "status_tag": status,
        "country": "PT",
        "converted": won,
    })


def _all_rows(frame: pd.DataFrame) -> np.ndarray:
    return np.arange(len(frame))


def test_integer_and_text_ids_are_dropped_but_floats_and_repeating_numbers_are_not() -> None:
    n = 1_000
    rng = np.random.default_rng(1)
    almost_unique = np.arange(n) * 2
    almost_unique[::40] = almost_unique[1::40]  # 97.5% distinct, still in row order
    shuffled = rng.permutation(n)
    shuffled[::40] = shuffled[1::40]  # 97.5% distinct, not in order
    frame = pd.DataFrame({
        "row_number": np.arange(n, dtype="int64"),
        "ref": [f"L-{i:05d}" for i in range(n)],
        "ordered": almost_unique,
        "AccountNumber": shuffled,
        "shuffled_code": shuffled,
        "revenue": rng.normal(1_000, 300, n),  # floats are never ids, unique as they are
        "amount": np.arange(n) * 3.0,  # not even whole-valued ones in row order
        "amount_paid": rng.permutation(n) * 5,  # an integer, all distinct, but its name is no id's
        "visits": rng.poisson(3, n).astype(float),
        "flag": True,
        "empty": np.full(n, np.nan),
    })
    dropped = structural_drops(frame, frame.columns)
    assert dropped["row_number"] == "id-like: integer, a different value on every row"
    assert dropped["ref"] == "id-like: text, a different value on every row"
    assert dropped["ordered"] == "id-like: integer, 97.5% distinct and in row order"
    assert dropped["AccountNumber"] == "id-like: integer named like an id or number, 97.5% distinct"
    assert dropped["flag"] == "one value: every row is 'True'" and dropped["empty"] == "one value: every row is empty"
    assert set(dropped) == {"row_number", "ref", "ordered", "AccountNumber", "flag", "empty", "amount_paid"}
    assert dropped["amount_paid"] == "id-like: integer, a different value on every row"
    paid = rng.permutation(n) * 5
    paid[::40] = paid[1::40]
    assert id_like_reason("amount_paid", pd.Series(paid)) is None  # 97.5% distinct, named *paid, not *id
    assert id_like_reason("LeadID", pd.Series(paid)).startswith("id-like: integer named like an id")
    assert id_like_reason("Prospect Number", pd.Series(paid)).startswith("id-like: integer named like an id")
    assert id_like_reason("shuffled_code", frame["shuffled_code"]) is None
    assert id_like_reason("paid", pd.Series([0, 1] * 500)) is None  # named like *id, but two values


def test_leaky_columns_are_flagged_with_their_evidence_and_kept_only_when_asked() -> None:
    frame = planted_table()
    outcome = frame["converted"].to_numpy()
    columns = [c for c in frame.columns if c != "converted"]
    report = audit_table(frame, _all_rows(frame), outcome, columns)
    assert report.features == ("plan", "visits")
    assert set(report.leaky) == {"score_after_call", "status_tag"}
    assert "ROC AUC 0.99" in report.leaky["score_after_call"] or "ROC AUC 1.000" in report.leaky["score_after_call"]
    assert "filled for 100% of converters and 3% of the others" in report.leaky["status_tag"]
    assert report.dropped["status_tag"].startswith("suspected leakage: ")
    assert report.dropped["customer_id"].startswith("id-like: integer")
    assert any("--keep status_tag" in w for w in report.warnings)
    assert 0.55 < report.column_auc["visits"] < 0.85
    kept = audit_table(frame, _all_rows(frame), outcome, columns, keep=("status_tag",))
    assert "status_tag" in kept.features and "status_tag" not in kept.dropped and kept.kept == ("status_tag",)
    assert any("kept, as --keep asked" in w for w in kept.warnings)


def test_leakage_rules_alone_above_the_rest_and_filled_for_one_class() -> None:
    rng = np.random.default_rng(3)
    n = 4_000
    y = (rng.random(n) < 0.3).astype(int)
    signal = y + rng.normal(0, 0.55, n)  # alone about 0.9, far above the others: leak by the second rule
    weak = y * 0.3 + rng.normal(0, 1, n)
    noise = rng.normal(0, 1, n)
    frame = pd.DataFrame({"signal": signal, "weak": weak, "noise": noise})
    report = audit_table(frame, _all_rows(frame), y, list(frame.columns))
    assert 0.85 <= report.column_auc["signal"] < 0.95
    assert "above the next best column (weak:" in report.leaky["signal"]
    assert set(report.leaky) == {"signal"}
    two_strong = frame.assign(weak=y + rng.normal(0, 0.6, n))  # another strong honest column: no margin, no flag
    assert "signal" not in audit_table(two_strong, _all_rows(frame), y, list(frame.columns)).leaky
    filled = frame.assign(close_reason=np.where((y == 1) & (rng.random(n) < 0.6), "budget", None))
    found = audit_table(filled, _all_rows(filled), y, ["weak", "noise", "close_reason"])
    assert "filled for 6" in found.leaky["close_reason"] and "of the others" in found.leaky["close_reason"]
    assert np.isnan(own_auc(pd.Series([1.0, 2.0, 3.0]), np.array([0, 1, 0])))


def test_leakage_is_judged_on_the_training_rows_only(tmp_path: Path) -> None:
    frame = planted_table(1_000)
    config = TableTrainingConfig(str(tmp_path / "leads.csv"), "converted", holdout="latest")
    splits = table_splits(frame, config)
    train_ids = set(splits.train["customer_id"])
    test_ids = set(splits.test["customer_id"])
    assert not train_ids & test_ids
    # the holdout's outcomes turned upside down change nothing the audit says: it never sees them
    flipped = frame.copy()
    last = flipped.index[-len(splits.test):]
    flipped.loc[last, "converted"] = 1 - flipped.loc[last, "converted"]
    again = table_splits(flipped, config)
    assert again.audit.column_auc == splits.audit.column_auc and again.audit.leaky == splits.audit.leaky


def test_crm_features_only_get_warnings() -> None:
    rng = np.random.default_rng(4)
    y = (rng.random(2_000) < 0.2).astype(int)
    train = pd.DataFrame({"days_since_last_activity": np.where(y == 1, 1.0, 200.0),
                          "email_opens_30d": rng.poisson(2, 2_000)})
    report = audit_features(train, y, list(train.columns))
    assert report.features == tuple(train.columns) and report.dropped == {}
    assert "days_since_last_activity" in report.leaky
    assert report.warnings and "stays" in report.warnings[0]


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(train_leads)
    return app


def _train(path: Path, tracking: str, root: Path, *extra: str) -> tuple[dict, str]:
    outcome = CliRunner(env={"LEADVAL_ARTIFACT_ROOT": str(root / "artifacts")}).invoke(
        _app(), ["--table", str(path), "--target", "converted", "--tracking-uri", tracking, "--json", *extra])
    assert outcome.exit_code == 0, outcome.output
    return json.loads(outcome.stdout.strip().splitlines()[-1]), outcome.stderr


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path, dict, dict, str]:
    """A planted file trained twice under its own name: v1 with the leaky columns kept (its registry tag then
    removed, as for a model registered before the audit existed), v2 without them."""
    root = tmp_path_factory.mktemp("planted")
    path = root / "crm_export.csv"
    planted_table().to_csv(path, index=False)
    tracking = empty_tracking_uri(root)
    leaky, _ = _train(path, tracking, root, "--keep", "status_tag", "--keep", "score_after_call")
    name = leaky["model_name"]
    assert version_tags(f"models:/{name}/1")["leaky_columns"] == "score_after_call,status_tag"
    MlflowClient(tracking, tracking).delete_model_version_tag(name, "1", "leaky_columns")
    honest, said = _train(path, tracking, root)
    return path, tracking, root, leaky, honest, said


def test_json_shows_what_was_dropped_and_why(planted_store) -> None:
    _, tracking, _, leaky, honest, said = planted_store
    assert json.loads(MlflowClient(tracking, tracking).get_run(honest["run_id"]).data.tags["warnings"]) == honest[
        "warnings"]
    assert honest["features_used"] == ["plan", "visits"]
    dropped = honest["dropped"]
    assert dropped["customer_id"] == "id-like: integer, a different value on every row"
    assert dropped["lead_code"] == "id-like: text, a different value on every row"
    assert dropped["country"] == "one value: every row is 'PT'"
    assert dropped["score_after_call"].startswith("suspected leakage: on its own it ranks converters with ROC AUC")
    assert "filled for 100% of converters" in dropped["status_tag"]
    leaks = [w for w in honest["warnings"] if "suspected leakage in column" in w]
    assert len(leaks) == 2
    # the planted outcome is a logistic function of plan and visits: the baseline's own ground, and it says so
    assert [w for w in honest["warnings"] if w not in leaks] == [
        w for w in honest["warnings"] if w.startswith("the model ranks the holdout worse than the logistic-regression")]
    assert "warning: suspected leakage in column 'status_tag'" in said
    assert "note: column 'customer_id' dropped: id-like" in said
    assert set(leaky["features_used"]) == {"plan", "visits", "score_after_call", "status_tag"}
    assert leaky["metrics"]["roc_auc"] > 0.97 and honest["metrics"]["roc_auc"] < 0.8


def test_a_leaky_champion_does_not_block_an_honest_model(planted_store) -> None:
    _, _, _, leaky, honest, _ = planted_store
    name = file_model_name("crm_export.csv")
    assert leaky["model_name"] == honest["model_name"] == name == "lead-scoring-crm_export"
    assert honest["champion"] and honest["model_version"] == "2"
    reason = honest["promotion_reason"]
    assert reason.startswith("champion v1 used columns flagged as leaky (score_after_call, status_tag): its roc_auc ")
    assert "does not block this candidate's" in reason
    assert version_tags(f"models:/{name}/2")["leaky_columns"] == ""
    assert version_tags(f"models:/{name}/2")["audit_flagged"] == "score_after_call,status_tag"


def test_two_honest_models_are_still_compared_on_the_same_holdout(planted_store) -> None:
    path, tracking, root, _, honest, _ = planted_store
    weak = TableTrainingConfig(str(path), "converted",
                               model=LeadModelConfig(max_rounds=1, num_leaves=2, max_depth=1, early_stopping_rounds=1))
    result = train_and_register(table_splits(read_lead_table(path), weak), weak, tracking, str(root / "artifacts"))
    assert result.model_name == honest["model_name"] and result.model_version == "3"
    assert not result.champion
    assert f"worse than champion v2's {honest['metrics']['roc_auc']:.4f}" in result.promotion_reason
    assert champion_version(result.model_name) == "2"


def test_a_file_model_never_takes_the_crm_models_name(planted_store) -> None:
    path, tracking, root, _, _, _ = planted_store
    outcome = CliRunner(env={"LEADVAL_ARTIFACT_ROOT": str(root / "artifacts")}).invoke(
        _app(), ["--table", str(path), "--target", "converted", "--tracking-uri", tracking,
                 "--model-name", LEAD_MODEL_NAME])
    assert isinstance(outcome.exception, InvalidInput)
    assert "--model-name lead-scoring: that is the CRM model" in str(outcome.exception)
    assert champion_version(LEAD_MODEL_NAME) is None
    assert file_model_name("exports/Leads 2024.CSV.gz") == "lead-scoring-leads-2024"
    assert file_model_name("bank-additional-full.csv.gz") == "lead-scoring-bank-additional-full"
