"""MLflow at the edges of training: where runs go, what every run records, and champion promotion.

Both models (lead scoring and CLV) use these so their runs carry the same facts: the full config, the
git commit, a fingerprint of the training data, and a registry version that only becomes ``@champion``
when it is at least as good as the current champion on the same holdout.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from importlib import metadata
from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, Literal

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.engine import make_url

from features.errors import LeadvalError

CHAMPION_ALIAS = "champion"
PromotePolicy = Literal["auto", "always", "never"]


class ModelNotFound(LeadvalError):
    """A model URI that names no registered model, version or alias."""


def use_tracking(tracking_uri: str) -> None:
    """Point MLflow at ``tracking_uri``; a local SQLite store gets its folder created first."""
    if tracking_uri.startswith("sqlite:"):
        database = make_url(tracking_uri).database
        if database:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
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


MODEL_RUNTIME_PACKAGES = ("mlflow", "pandas", "numpy", "scikit-learn", "lightgbm", "lifetimes", "scipy")


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


@dataclass(frozen=True)
class Promotion:
    """What happened in the registry: the new version and whether it became ``@champion``, and why."""

    model_name: str
    version: str
    champion: bool
    reason: str
    previous_champion: str | None
    candidate_metric: float
    champion_metric: float | None


def champion_uri(model_name: str) -> str:
    """The URI of ``model_name``'s current champion."""
    return f"models:/{model_name}@{CHAMPION_ALIAS}"


def champion_version(model_name: str) -> str | None:
    """The version currently aliased ``@champion``, or None when the model or its alias does not exist.

    Any other registry error (an unreachable store, say) propagates, so it can never pass for "no champion".
    """
    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, CHAMPION_ALIAS).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def register_and_gate(
    model_uri: str,
    model_name: str,
    metric_name: str,
    candidate_metric: float,
    champion_metric: Callable[[str], float],
    higher_is_better: bool,
    promote: PromotePolicy = "auto",
) -> Promotion:
    """Register ``model_uri`` as a new version of ``model_name`` and decide whether it becomes champion.

    ``champion_metric(uri)`` must score the model at ``uri`` on the SAME holdout as ``candidate_metric``.
    auto: promote when at least as good as the current champion (or when there is none); always/never as named.
    """
    if promote not in ("auto", "always", "never"):
        raise LeadvalError(f"--promote must be auto, always or never, not {promote!r}")
    version = str(mlflow.register_model(model_uri, model_name).version)
    client = MlflowClient()
    client.set_model_version_tag(model_name, version, metric_name, f"{candidate_metric:.6g}")
    previous = champion_version(model_name)
    current: float | None = None
    if promote == "never":
        chosen, reason = False, "--promote never: registered without promotion"
    elif promote == "always":
        chosen, reason = True, "--promote always"
    elif previous is None:
        chosen, reason = True, "no champion yet"
    else:
        current = float(champion_metric(f"models:/{model_name}/{previous}"))
        better_or_equal = candidate_metric >= current if higher_is_better else candidate_metric <= current
        chosen = better_or_equal
        verb = "at least as good as" if chosen else "worse than"
        reason = (f"{metric_name} {candidate_metric:.4f} is {verb} champion v{previous}'s "
                  f"{current:.4f} on the same holdout")
    if chosen:
        client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version)
    return Promotion(model_name, str(version), chosen, reason, previous, candidate_metric, current)


def load_registered(model_uri: str) -> mlflow.pyfunc.PyFuncModel:
    """Load a pyfunc model, turning an unknown name/version/alias into a clear ``ModelNotFound``."""
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        raise ModelNotFound(f"cannot load model {model_uri!r} from {mlflow.get_tracking_uri()}: "
                            f"{exc.message.splitlines()[0]}") from None


def registered_identity(model_uri: str) -> tuple[str, str | None, str | None]:
    """(name, version, training run id) of a ``models:/name@alias`` or ``models:/name/version`` URI.

    Other URIs (runs:/, files) have no registry entry: their name is the URI and version and run are None.
    """
    if not model_uri.startswith("models:/"):
        return model_uri, None, None
    ref = model_uri.removeprefix("models:/")
    client = MlflowClient()
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            found = client.get_model_version_by_alias(name, alias)
        else:
            name, version = ref.split("/", 1)
            found = client.get_model_version(name, version)
    except (MlflowException, ValueError):
        raise ModelNotFound(f"cannot find model {model_uri!r} in the registry at {mlflow.get_tracking_uri()}") from None
    return name, str(found.version), found.run_id
