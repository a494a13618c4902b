"""``leadval monitor``: the table, warnings on stderr, ``--json`` and the exit codes a scheduler acts on."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.monitoring.checks import CheckResult
from tests.leadval_cli import last_json, run_leadval
from tests.serving.batch.conftest import batch_crm
from tests.serving.conftest import TrainedStore
from tests.serving.monitoring.test_accuracy import TARGETS, monitor_env, stub_drift

__all__ = ["stub_drift"]


@pytest.fixture(scope="module")
def crm(trained_store: TrainedStore, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An unscored CRM (no run whose horizon has passed) and its environment."""
    folder = tmp_path_factory.mktemp("monitor_cli")
    url = f"sqlite:///{folder / 'crm.db'}"
    batch_crm(url)
    return monitor_env(trained_store, folder, url)


def _targets(tmp_path: Path, *names: str) -> str:
    """A targets file holding only the targets of :data:`TARGETS` called ``names``."""
    blocks = [b for b in TARGETS.split("[[targets]]") if any(f'name = "{n}"' in b for n in names)]
    path = tmp_path / "targets.toml"
    path.write_text("".join(f"[[targets]]{b}" for b in blocks))
    return str(path)


@pytest.mark.parametrize(("names", "code", "status"), [
    ((), 0, "ok"),
    (("met easily",), 0, "ok"),
    (("met easily", "never reached"), 3, "warn"),
    (("never reached", "deadline passed"), 4, "alert"),
])
def test_exit_code_is_the_worst_status(crm: dict[str, str], stub_drift: list[CheckResult], tmp_path: Path,
                                       names: tuple[str, ...], code: int, status: str) -> None:
    args = ["monitor", "--as-of", "2025-12-31", "--json"] + (["--targets", _targets(tmp_path, *names)] if names else [])
    ran = run_leadval(*args, env=crm, check=False)
    assert ran.returncode == code, ran.stderr
    result = last_json(ran)
    assert result["status"] == status and result["as_of"].startswith("2025-12-31")
    assert {"check", "model", "value", "warn", "alert", "status", "detail"} <= set(result["checks"][0])
    assert len(result["warnings"]) == sum(c["status"] in ("warn", "alert") for c in result["checks"]
                                          if c["check"] != "overall")
    for warning in result["warnings"]:
        assert f"warning: {warning}" in ran.stderr


def test_table_names_each_check_and_says_why_there_is_no_data(crm: dict[str, str],
                                                              stub_drift: list[CheckResult]) -> None:
    ran = run_leadval("monitor", "--as-of", "2025-12-31", env=crm)
    header, *rows = ran.stdout.splitlines()
    assert header.split()[:7] == ["check", "model", "value", "warn", "alert", "status", "detail"]
    auc = next(r for r in rows if r.startswith("realized_auc"))
    assert "no_data" in auc and "no scoring run of v" in auc
    assert rows[-1].startswith("Monitoring as of 2025-12-31 00:00: ok (exit 0)")


def test_table_sums_up_the_feature_checks_that_are_ok_unless_all(crm: dict[str, str],
                                                                  stub_drift: list[CheckResult]) -> None:
    stub_drift += [CheckResult("input_drift:country", "lead-scoring", 0.01, 0.1, 0.25, "ok", "country: PSI 0.010"),
                   CheckResult("missing_rate:country", "lead-scoring", 0.0, 0.1, 0.25, "ok", "country: +0.0 points"),
                   CheckResult("input_drift:campaign", "lead-scoring", 0.3, 0.1, 0.25, "alert", "campaign: PSI 0.300")]
    rows = run_leadval("monitor", "--as-of", "2025-12-31", env=crm, check=False).stdout.splitlines()
    assert [r.split()[0] for r in rows if r.startswith(("input_drift", "missing_rate"))] == ["input_drift:campaign"]
    assert "(and 2 input checks ok over 1 feature: input drift, new categories and missing rates; --all lists " \
           "them)" in rows
    every = run_leadval("monitor", "--as-of", "2025-12-31", "--all", env=crm, check=False).stdout.splitlines()
    assert [r.split()[0] for r in every if r.startswith(("input_drift", "missing_rate"))] == [
        "input_drift:country", "missing_rate:country", "input_drift:campaign"]
    assert not any(r.startswith("(and") for r in every)
