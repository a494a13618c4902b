"""Shared fixtures: a fresh SQLite CRM per test and a fresh schema on the real PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

# One BLAS thread, as `make test` runs the suite (the Makefile exports OPENBLAS_NUM_THREADS ?= 1), also when pytest
# is run by hand: set before numpy loads, it reaches this process and the ones the tests start (servers, kernels,
# `leadval`). With a thread per core, OpenBLAS threads spin-wait for each other: on a 2-core machine a lead model
# training (its logistic baseline above all) takes ~20% longer when the machine is quiet, ~80% when it is busy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest  # noqa: E402
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEST_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of an empty SQLite CRM file in the test's own folder."""
    return f"sqlite:///{tmp_path / 'crm.db'}"


@pytest.fixture(scope="session")
def pg_base_url() -> str:
    """The test PostgreSQL (LEADVAL_TEST_PG_URL); unreachable is a failure, never a skip."""
    url = os.environ.get("LEADVAL_TEST_PG_URL", DEFAULT_TEST_PG_URL)
    engine = create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL for tests is not reachable at LEADVAL_TEST_PG_URL={url}: {exc}")
    finally:
        engine.dispose()
    return url


@pytest.fixture
def pg_url(pg_base_url: str) -> Iterator[str]:
    """URL of an empty PostgreSQL schema of the test's own, dropped afterwards."""
    schema = f"lv_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_base_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(pg_base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs on SQLite and on the real PostgreSQL."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
