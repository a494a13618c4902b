"""A database password never reaches the terminal: every command that takes ``--db`` (or ``LEADVAL_DB``), with
URLs that parse, that do not (typos), that parse wrongly (an unencoded ``@``), on a real PostgreSQL and not.

Each command runs in this process as ``leadval`` runs it (:func:`tests.leadval_cli.run_leadval`), so stdout and
stderr are what a person or a log would see.
"""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from features.crm import schema
from features.crm.store import connect, read_frame
from tests.leadval_cli import Ran, last_json, run_leadval
from tests.serving.conftest import free_port

PASSWORD = "S3cretPw"

MALFORMED = {  # URL -> fragments of the password none of which may be printed
    "one slash after the scheme": (f"postgresql+psycopg:/postgres:{PASSWORD}@127.0.0.1:1/crm", [PASSWORD]),
    "no colon after the scheme": (f"postgresql+psycopg//postgres:{PASSWORD}@127.0.0.1:1/crm", [PASSWORD]),
    "no slashes after the scheme": (f"postgresql+psycopg:postgres:{PASSWORD}@127.0.0.1:1/crm", [PASSWORD]),
    "unencoded @ in the password": ("postgresql+psycopg://postgres:S3cr@tPw-tail@127.0.0.1:1/crm",
                                    ["S3cr", "tPw-tail"]),
    "unencoded @ and / in the password": ("postgresql+psycopg://postgres:S3cr@t/Pw@127.0.0.1:1/crm",
                                          ["S3cr", "t/Pw"]),
    "bad % escape in the password": ("postgresql+psycopg://postgres:S3c%ZZretPw@127.0.0.1:1/crm", ["S3c", "retPw"]),
    "% escape in an unparseable URL": ("postgresql+psycopg:/postgres:S3c%40retPw@127.0.0.1:1/crm", ["S3c", "retPw"]),
    "unknown driver": (f"foodb://postgres:{PASSWORD}@127.0.0.1:1/crm", [PASSWORD]),
    "port that is no number": (f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:port/crm", [PASSWORD]),
    "no @host after the password": (f"postgresql+psycopg://postgres:{PASSWORD}", [PASSWORD]),
    "password in the query": (f"postgresql+psycopg://postgres@127.0.0.1:1/crm?password={PASSWORD}", [PASSWORD]),
}

COMMANDS = {  # every command that takes --db, with what else it needs to get as far as the database
    "generate": ["generate", "--leads", "10", "--customers", "5"],
    "import": ["import", "--table", "customers", "{file}"],
    "train leads": ["train", "leads"],
    "train clv": ["train", "clv"],
    "score leads": ["score", "leads"],
    "score customers": ["score", "customers"],
    "backtest leads": ["backtest", "leads"],
    "report": ["report", "--out", "{tmp}/report.html"],
    "segments": ["segments", "--out", "{tmp}/segments.csv"],
    "leads top": ["leads", "top"],
    "abtest": ["abtest"],
    "monitor": ["monitor"],
    "retrain leads": ["retrain", "leads"],
    "retrain clv": ["retrain", "clv"],
}


@pytest.fixture
def workdir(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """A working folder of the test's own with a small customers file; MLflow's store in it too."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "customers.csv").write_text("customer_id,created_at\nC1,2025-01-01T00:00:00\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def _args(command: str, workdir) -> list[str]:
    return [arg.format(file=workdir / "customers.csv", tmp=workdir) for arg in COMMANDS[command]]


def _printed(ran: Ran) -> str:
    return ran.stdout + ran.stderr


def test_every_command_that_takes_db_is_covered() -> None:
    from typer.main import get_command

    from serving.cli.app import app

    def commands(group, path=()):
        for name, command in getattr(group, "commands", {}).items():
            yield from commands(command, (*path, name))
        if not getattr(group, "commands", None) and any(p.name == "db" for p in group.params):
            yield " ".join(path)

    assert set(commands(get_command(app))) == set(COMMANDS)


@pytest.mark.parametrize("case", list(MALFORMED))
def test_no_command_prints_the_password_of_a_malformed_url(case: str, workdir) -> None:
    url, secrets = MALFORMED[case]
    for command in COMMANDS:
        for ran in (run_leadval(*_args(command, workdir), "--db", url, check=False),
                    run_leadval(*_args(command, workdir), "--db", url, "--json", check=False),
                    run_leadval(*_args(command, workdir), env={"LEADVAL_DB": url}, check=False)):
            assert ran.returncode == 1, (command, ran.stderr)
            assert ran.stderr.startswith("error: ") and ran.stdout == "", (command, ran.stderr)
            leaked = [secret for secret in secrets if secret in _printed(ran)]
            assert not leaked, f"leadval {command} printed {leaked}: {ran.stderr}"
            assert "***" in ran.stderr or "://postgres@" in ran.stderr, (command, ran.stderr)


def test_an_unparseable_url_is_named_with_its_password_masked(workdir) -> None:
    ran = run_leadval("leads", "top", "--db", f"postgresql+psycopg:/postgres:{PASSWORD}@db.example/crm", check=False)
    assert ran.stderr == ("error: cannot parse database URL 'postgresql+psycopg:/postgres:***@db.example/crm'; "
                          "expected e.g. sqlite:///data/crm.db or postgresql+psycopg://user:password@host:5432/dbname\n")
    ran = run_leadval("leads", "top", "--db", "postgresql+psycopg://postgres:S3cr@tPw@db.example/crm", check=False)
    assert ran.stderr == ("error: cannot use database URL 'postgresql+psycopg://postgres:***@db.example/crm': it holds "
                          "more than one '@'; write an '@' in the user name, password or query as %40\n")


def test_a_working_url_with_a_password_is_shown_masked(pg_url: str, workdir) -> None:
    """On the real PostgreSQL (which lets the tests' user in without checking the password)."""
    url = make_url(pg_url).set(password=PASSWORD).render_as_string(hide_password=False)
    assert PASSWORD in url
    imported = run_leadval("import", "--db", url, "--table", "customers", str(workdir / "customers.csv"), "--json")
    assert PASSWORD not in _printed(imported)
    assert last_json(imported)["inserted"] == 1 and "(postgresql+psycopg://postgres:***@" in imported.stdout
    generated = run_leadval("generate", "--leads", "30", "--customers", "10", "--replace", "--json",
                            env={"LEADVAL_DB": url})
    assert PASSWORD not in _printed(generated)
    assert last_json(generated)["db"].startswith("postgresql+psycopg://postgres:***@127.0.0.1")
    for args in (["leads", "top"], ["segments", "--out", str(workdir / "s.csv")]):  # no scores yet: named, masked
        ran = run_leadval(*args, "--db", url, "--json", check=False)
        assert ran.returncode == 1 and "postgres:***@" in ran.stderr and PASSWORD not in _printed(ran)
    engine = connect(url)
    assert len(read_frame(engine, schema.leads)) == 30
    engine.dispose()


def test_the_mlflow_tracking_uri_is_shown_masked(sqlite_url: str, workdir) -> None:
    import mlflow

    from features.crm.store import create_schema

    engine = connect(sqlite_url)  # an existing CRM: score reads it before the registry
    create_schema(engine)
    engine.dispose()
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        ran = run_leadval("score", "leads", "--db", sqlite_url, "--tracking-uri",
                          f"http://mlflow:{PASSWORD}@127.0.0.1:{free_port()}", "--json",
                          env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}, check=False)
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])
    assert ran.returncode == 1 and PASSWORD not in _printed(ran)
    assert "cannot reach the MLflow tracking server at http://mlflow:***@127.0.0.1:" in ran.stderr
