"""MLflow at the edges of training: where runs go and what every run records.

Both models (lead scoring and CLV) use these so their runs carry the same facts: the full config, the
git commit, a fingerprint of the training data and the pinned requirements of the logged model; and
whoever reads what a run recorded later (the report) reads its tags here, without creating a store.
Registering and promoting is :mod:`training.registry`'s job.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import asdict, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from features.crm.urls import safe_url, sqlite_file
from features.errors import LeadvalError
from training.registry_store import TrackingStoreUnavailable, check_store, store_failure


class RunNotReadable(LeadvalError):
    """A training run's record cannot be read (no store, no such run, a store that does not answer)."""


def use_tracking(tracking_uri: str, create: bool = True) -> None:
    """Point MLflow at ``tracking_uri``; with ``create`` (training) a local SQLite store gets its folder created
    first. Without it (commands that only read models) nothing is created here, and loading a model from a
    missing local store is a one-line ``ModelNotFound`` (:func:`training.registry.load_registered`). A damaged or
    foreign SQLite file, or a server that does not answer, is a one-line ``TrackingStoreUnavailable`` first
    (:func:`training.registry_store.check_store`), before MLflow retries it or writes its tables into it."""
    check_store(tracking_uri, create=create)
    database = sqlite_file(tracking_uri) if create else None
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)


def use_experiment(name: str, artifact_root: str) -> str:
    """The id of experiment ``name``, created with artifacts under ``artifact_root`` if it is new."""
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        experiment_id = found.experiment_id
    else:
        location = artifact_root if "://" in artifact_root else Path(artifact_root).resolve().as_uri()
        experiment_id = mlflow.create_experiment(name, artifact_location=f"{location.rstrip('/')}/{name}")
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def git_commit(repo: Path | None = None) -> str | None:
    """The commit the code runs from (with ``-dirty`` if the tree has changes), or None outside git."""
    cwd = repo or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def dataset_fingerprint(frame: pd.DataFrame) -> str:
    """A short hash of the rows, columns and dtypes: same data, same fingerprint."""
    digest = hashlib.sha256()
    digest.update(json.dumps([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


MODEL_RUNTIME_PACKAGES = ("mlflow", "pandas", "numpy", "scipy", "scikit-learn", "lightgbm", "lifetimes", "polars")


def model_requirements() -> list[str]:
    """Pinned pip requirements of a leadval pyfunc, from the installed versions.

    Passing these to ``log_model`` skips MLflow's requirement inference, which loads the model in a
    subprocess and costs seconds per logged model.
    """
    pins = []
    for name in MODEL_RUNTIME_PACKAGES:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def log_run_facts(config: Any, training_data: pd.DataFrame) -> None:
    """Log the whole config (params and ``config.json``), the git commit and the data fingerprint."""
    values = asdict(config) if is_dataclass(config) else dict(config)
    mlflow.log_params({k: json.dumps(v, default=str) if isinstance(v, (dict, list, tuple)) else v
                       for k, v in values.items()})
    mlflow.log_dict(values, "config.json")
    mlflow.set_tags({
        "git_commit": git_commit() or "unknown",
        "dataset_fingerprint": dataset_fingerprint(training_data),
        "dataset_rows": str(len(training_data)),
    })


def read_run_tags(run_id: str, tracking_uri: str) -> dict[str, str]:
    """The tags of run ``run_id`` at ``tracking_uri``; raises :class:`RunNotReadable` saying why when it cannot be
    read. A local SQLite store that does not exist is never created (unlike :func:`use_tracking`)."""
    database = sqlite_file(tracking_uri)
    if database is not None and not database.exists():
        raise RunNotReadable(f"no MLflow store at {database} (pass --tracking-uri)")
    try:
        check_store(tracking_uri)
        return dict(MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.tags)
    except TrackingStoreUnavailable as exc:
        raise RunNotReadable(str(exc)) from None
    except (MlflowException, OSError) as exc:
        failure = store_failure(exc, tracking_uri)
        if failure is not None:
            raise RunNotReadable(str(failure)) from None
        raise RunNotReadable(f"run {run_id} not readable at {safe_url(tracking_uri)}: "
                             f"{str(exc).splitlines()[0]}") from None
