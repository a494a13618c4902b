"""Empty MLflow SQLite stores for tests, fast: the tables are created and migrated once per test session (several
seconds) and each store is a copy of that file, a real store like any other."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient


@functools.cache
def _migrated_store() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="leadval-mlflow-"))
    atexit.register(shutil.rmtree, folder, True)
    database = folder / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{database}").search_experiments()  # creates and migrates the tables
    return database


def empty_tracking_uri(folder: Path) -> str:
    """The URI of a new, empty MLflow SQLite store at ``folder / "mlflow.db"``."""
    database = Path(folder) / "mlflow.db"
    shutil.copyfile(_migrated_store(), database)
    return f"sqlite:///{database}"
