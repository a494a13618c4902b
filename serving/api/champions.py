"""The models the service serves: each registered model's ``@champion``, loaded with the facts behind it.

The service needs ``models:/lead-scoring@champion`` and ``models:/clv@champion``. With both loaded it
serves everything; with one missing it serves the other and says what is missing; with none it
refuses to start (:class:`NothingToServe`, naming both and why). A champion the service cannot serve
counts as missing, with the reason: a lead model trained on a flat file (``train leads --table``) scores
that file's columns, not CRM leads (:func:`lead_model_problem`), and so does one whose files are damaged. Nothing
here creates an MLflow store: a local SQLite store that does not exist counts as "no models", not as a new empty
store; a damaged or foreign one, or a tracking server that does not answer, stops the start at once with one line
(:class:`training.registry_store.TrackingStoreUnavailable`).

Start-up failures: ``leadval serve`` names a file in :data:`STARTUP_FAILURE_ENV`; a worker that cannot
start writes its one-line reason there (:func:`report_startup_failure`), and ``leadval serve`` stops the
server with it instead of letting BentoML restart the worker again and again.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from features.errors import LeadvalError
from training.registry import CHAMPION_ALIAS, CLV_MODEL_NAME, LEAD_MODEL_NAME, champion_uri, unreadable_model
from training.registry_store import check_store, store_failure

SERVED_MODEL_NAMES: tuple[str, ...] = (LEAD_MODEL_NAME, CLV_MODEL_NAME)
CRM_ID_COLUMN = "lead_id"
STARTUP_FAILURE_ENV = "LEADVAL_STARTUP_FAILURE_FILE"
"""Where a worker that cannot start writes why (set by ``leadval serve``)."""


class NothingToServe(LeadvalError):
    """Neither served model could be found in the registry."""


@dataclass(frozen=True)
class LoadedModel:
    """A champion model ready to score, with the registry and run facts ``GET /models`` reports.

    ``model`` is what scores, without MLflow around it: the lead-scoring champion's
    :class:`training.leads.scorer.LeadScorer`, the CLV champion's :class:`training.clv.predict.CLVParameters`.
    ``data_end`` is the end of the data the model was trained on (naive UTC), when the model or its run
    records it (models trained before it was recorded do not): the service warns when a request's as-of
    is long after it.
    """

    name: str
    uri: str
    version: str
    run_id: str | None
    trained_at: datetime | None
    metrics: dict[str, float]
    model: Any = field(repr=False)
    data_end: datetime | None = None


@dataclass(frozen=True)
class ServedModels:
    """The loaded champions by name, and the missing ones with the reason (``{name: reason}``)."""

    loaded: dict[str, LoadedModel]
    missing: dict[str, str]

    def get(self, name: str) -> LoadedModel | None:
        """The loaded model called ``name``, or None."""
        return self.loaded.get(name)


def lead_model_problem(id_column: str | None, source: str | None = None,
                       features: Sequence[str] | None = None) -> str | None:
    """Why a lead model cannot score the API's CRM leads, or None when it can: it must have been trained on
    CRM leads (id column ``lead_id``, not a flat file) on CRM lead features."""
    from features.lead_features import BEHAVIOUR_FEATURES, PROFILE_FEATURES

    if source == "table" or id_column != CRM_ID_COLUMN:
        return ("it was trained on a flat file (train leads --table), not on CRM leads, so it cannot score the "
                "API's leads; make a CRM-trained version champion (leadval train leads --db URL) and register file "
                "models under a name of their own")
    if features is not None:
        foreign = [f for f in features if f not in PROFILE_FEATURES and f not in BEHAVIOUR_FEATURES]
        if foreign:
            return (f"it uses columns that are not CRM lead features ({', '.join(foreign[:5])}), so it cannot score "
                    "the API's leads")
    return None


def served_model_problem(name: str, python_model: Any) -> str | None:
    """Why a loaded champion cannot be served, or None."""
    if name == LEAD_MODEL_NAME:
        spec = getattr(getattr(python_model, "scorer", None), "spec", None)
        if spec is None:
            return f"it is not a lead-scoring model ({type(python_model).__name__})"
        return lead_model_problem(spec.id_column, features=spec.features)
    if name == CLV_MODEL_NAME and getattr(python_model, "params", None) is None:
        return f"it is not a CLV model ({type(python_model).__name__})"
    return None


def report_startup_failure(exc: BaseException) -> None:
    """Write why the service could not start, one line, where ``leadval serve`` looks for it (if it does)."""
    where = os.environ.get(STARTUP_FAILURE_ENV)
    if not where:
        return
    text = " ".join(str(exc).split()) or type(exc).__name__
    target = Path(where)
    partial = target.with_name(f"{target.name}.{os.getpid()}")
    try:  # written whole, then renamed: the watcher never reads half a line
        partial.write_text(text if isinstance(exc, LeadvalError) else f"{type(exc).__name__}: {text}")
        os.replace(partial, target)
    except OSError:
        pass


def _missing_store(tracking_uri: str) -> str | None:
    """Why a local SQLite tracking store cannot hold any model (it does not exist), else None."""
    from features.crm.urls import sqlite_file

    database = sqlite_file(tracking_uri)
    if database is not None and not database.exists():
        return f"no MLflow store at {database} (train the models first, or pass --tracking-uri)"
    return None


def _client(tracking_uri: str) -> Any:
    """A client of the store at ``tracking_uri``, once :func:`check_store` found it readable and answering."""
    from mlflow.tracking import MlflowClient

    check_store(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _champion_version(client: Any, name: str) -> tuple[Any | None, str | None]:
    """The champion's model version, or None and why not; a damaged store raises (it is no missing model)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION_ALIAS), None
    except MlflowException as exc:
        failure = store_failure(exc, client.tracking_uri)
        if failure is not None:
            raise failure from None
        return None, exc.message.splitlines()[0]


def missing_champions(tracking_uri: str) -> dict[str, str]:
    """``{name: reason}`` for every served model without a champion in the registry at ``tracking_uri``.

    Asks the registry only (no model is loaded), so it is a quick start-up check.
    """
    store_problem = _missing_store(tracking_uri)
    if store_problem is not None:
        return {name: store_problem for name in SERVED_MODEL_NAMES}
    client = _client(tracking_uri)
    missing = {}
    for name in SERVED_MODEL_NAMES:
        _, reason = _champion_version(client, name)
        if reason is not None:
            missing[name] = reason
    return missing


def unservable_champions(tracking_uri: str, skip: Sequence[str] = ()) -> dict[str, str]:
    """``{name: reason}`` for every served model whose champion exists but cannot be served, judged from its
    MLmodel metadata only (no model is loaded): a quick start-up check. Models in ``skip`` are not looked at."""
    from mlflow.exceptions import MlflowException

    if _missing_store(tracking_uri) is not None:
        return {}
    client = _client(tracking_uri)
    problems = {}
    for name in SERVED_MODEL_NAMES:
        if name in skip:
            continue
        version, _ = _champion_version(client, name)
        if version is None:
            continue
        try:
            metadata = _model_metadata(client.get_model_version_download_uri(name, version.version), tracking_uri)
        except (MlflowException, OSError, ValueError):  # ValueError: an MLmodel file that is no YAML or UTF-8
            continue  # the service's own loading says what is wrong
        problem = metadata_problem(name, metadata)
        if problem:
            problems[name] = f"version {version.version} cannot be served: {problem}"
    return problems


def metadata_problem(name: str, metadata: dict[str, Any]) -> str | None:
    """Why the model whose MLmodel metadata this is cannot be served as ``name``, or None when it may be (the
    pyfuncs record ``id_column`` and ``source`` for lead models, the purchase model's kind and ``time_unit`` for CLV
    models; models too old to record them are judged when they are loaded)."""
    from training.clv.pyfunc import MODEL_KEY

    lead = "id_column" in metadata or "source" in metadata
    clv = MODEL_KEY in metadata or "time_unit" in metadata
    if name == LEAD_MODEL_NAME:
        if clv and not lead:
            return "it is a CLV model, not a lead-scoring model"
        return lead_model_problem(metadata.get("id_column"), metadata.get("source")) if lead else None
    return "it is a lead-scoring model, not a CLV model" if lead and not clv else None


def _model_metadata(artifact_uri: str, tracking_uri: str) -> dict[str, Any]:
    """The ``metadata`` of the MLmodel file at ``artifact_uri`` (only that file is fetched, without a progress bar)."""
    import tempfile

    import mlflow.artifacts
    from mlflow.models import Model

    previous = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = mlflow.artifacts.download_artifacts(artifact_uri=f"{artifact_uri.rstrip('/')}/MLmodel",
                                                       dst_path=folder, tracking_uri=tracking_uri)
            return Model.load(path).metadata or {}
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = previous


def _trained_at(run: Any) -> datetime | None:
    millis = run.info.end_time or run.info.start_time
    return datetime.fromtimestamp(millis / 1000, tz=timezone.utc).replace(tzinfo=None) if millis else None


def instant(value: Any) -> datetime | None:
    """An ISO 8601 instant (text or datetime) as naive UTC; None when missing or unreadable."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo is not None else value


def training_data_end(model: Any, tags: dict[str, str]) -> datetime | None:
    """When the model's training data ends: the lead scorer's ``info["data_end"]``, else the run's ``data_end``
    tag; None for models that record neither."""
    info = getattr(model, "info", None)
    recorded = info.get("data_end") if isinstance(info, dict) else None
    return instant(recorded) or instant(tags.get("data_end"))


def _load(client: Any, name: str, version: Any) -> LoadedModel | str:
    """The champion ``version`` of ``name`` with its run's facts, or why it cannot be served; files that cannot be
    read are a :class:`ModelUnreadable` naming them (a damaged model is then missing, not a crashed worker)."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    from training.registry import ModelUnreadable

    location = client.get_model_version_download_uri(name, version.version)
    try:
        pyfunc = mlflow.pyfunc.load_model(location, suppress_warnings=True)
    except (MlflowException, OSError, LeadvalError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - whatever reading the model's own files raised: named in the message
        raise ModelUnreadable(unreadable_model(champion_uri(name), exc, str(version.version), location)) from None
    python_model = pyfunc.unwrap_python_model()
    problem = served_model_problem(name, python_model)
    if problem:
        return f"version {version.version} cannot be served: {problem}"
    model = python_model.scorer if name == LEAD_MODEL_NAME else python_model.params
    run_id = version.run_id or None
    trained_at, metrics, tags = None, {}, {}
    if run_id:
        run = client.get_run(run_id)
        trained_at = _trained_at(run)
        metrics = {k: float(v) for k, v in sorted(run.data.metrics.items()) if math.isfinite(v)}
        tags = dict(run.data.tags)
    return LoadedModel(name=name, uri=champion_uri(name), version=str(version.version), run_id=run_id,
                       trained_at=trained_at, metrics=metrics, model=model, data_end=training_data_end(model, tags))


def load_champions(tracking_uri: str) -> ServedModels:
    """Load every served model's champion from ``tracking_uri``.

    Raises :class:`NothingToServe` (naming each model and why) when none can be loaded.
    """
    from mlflow.exceptions import MlflowException

    from training.registry import ModelUnreadable

    store_problem = _missing_store(tracking_uri)
    loaded: dict[str, LoadedModel] = {}
    missing: dict[str, str] = {}
    client = None if store_problem else _client(tracking_uri)
    for name in SERVED_MODEL_NAMES:
        if client is None:
            missing[name] = store_problem or ""
            continue
        version, reason = _champion_version(client, name)
        if version is None:
            missing[name] = reason or "no champion"
            continue
        try:
            model = _load(client, name, version)
        except ModelUnreadable as exc:
            missing[name] = str(exc)
            continue
        except (MlflowException, OSError) as exc:
            missing[name] = f"cannot load version {version.version}: {str(exc).splitlines()[0]}"
            continue
        if isinstance(model, str):
            missing[name] = model
        else:
            loaded[name] = model
    if not loaded:
        from features.crm.urls import safe_url

        details = "; ".join(f"{champion_uri(n)}: {r}" for n, r in missing.items())
        raise NothingToServe(f"no model to serve from {safe_url(tracking_uri)}: {details}")
    return ServedModels(loaded=loaded, missing=missing)
