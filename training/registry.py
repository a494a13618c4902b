"""The model registry: the models' names, the ``@champion`` alias, promotion, and loading registered models.

Every name here is defined once: training registers under these names, the batch jobs and the service load
these champions. MLflow is imported inside the functions, so that commands' ``--help`` stays fast.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from features.errors import InvalidInput, LeadvalError
from training.registry_store import check_store, store_failure

if TYPE_CHECKING:
    import mlflow.pyfunc
    from mlflow.tracking import MlflowClient

LEAD_MODEL_NAME = "lead-scoring"
CLV_MODEL_NAME = "clv"
CHAMPION_ALIAS = "champion"


def champion_uri(model_name: str) -> str:
    """The URI of ``model_name``'s current champion, ``models:/<name>@champion``."""
    return f"models:/{model_name}@{CHAMPION_ALIAS}"


LEAD_MODEL_URI = champion_uri(LEAD_MODEL_NAME)
CLV_MODEL_URI = champion_uri(CLV_MODEL_NAME)
FILE_SUFFIXES = frozenset({".gz", ".bz2", ".xz", ".zip", ".zst", ".csv", ".tsv", ".txt", ".parquet", ".pq"})
TAG_LIMIT = 5_000
"""MLflow's limit on a tag value's length."""


def file_model_name(path: str | Path, base: str = LEAD_MODEL_NAME) -> str:
    """The default registered name of a model trained on a flat file: ``<base>-<file stem>``, e.g.
    ``lead-scoring-bank-additional-full`` for ``bank-additional-full.csv.gz``; never ``base`` itself, the name
    of the CRM model that ``leadval serve`` and the nightly jobs load."""
    name = Path(path).name
    while Path(name).suffix.lower() in FILE_SUFFIXES:
        name = name[: -len(Path(name).suffix)]
    stem = re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).strip("-._") or "file"
    return f"{base}-{stem}"


class Promote(str, Enum):
    """When a newly registered version becomes ``@champion``: ``auto`` if at least as good as the current
    champion on the same holdout (or there is none), ``always``, or ``never``."""

    auto = "auto"
    always = "always"
    never = "never"

    @classmethod
    def parse(cls, value: str | Promote) -> Promote:
        """``value`` as a policy; anything else is an ``InvalidInput`` naming the choices."""
        try:
            return cls(value)
        except ValueError:
            raise InvalidInput(f"--promote: expected auto, always or never, got {value!r}") from None


class ModelNotFound(LeadvalError):
    """A model URI that names no registered model, version or alias."""


def missing_store(tracking_uri: str) -> str | None:
    """Why the local SQLite MLflow store at ``tracking_uri`` cannot hold any model (its file does not exist), as
    one line naming the file and what to do; None when it exists or is no local SQLite file. Reading a model
    never creates the store: MLflow would create an empty one (and fail only later, or not at all)."""
    from features.crm.urls import safe_url, sqlite_file

    path = sqlite_file(tracking_uri) if tracking_uri.startswith("sqlite:") else None
    if path is None or path.exists():
        return None
    return (f"no MLflow store at {path.absolute()} ({safe_url(tracking_uri)}); train a model first with leadval "
            "train leads or leadval train clv, or pass --tracking-uri (env MLFLOW_TRACKING_URI) naming the store")


def _require_store(model_uri: str) -> None:
    """Raise ``ModelNotFound`` when ``model_uri`` needs the registry or tracking store and that is a missing
    local SQLite file (checked before MLflow would create it), ``TrackingStoreUnavailable`` when it is damaged, no
    MLflow store or does not answer (:func:`training.registry_store.check_store`)."""
    import mlflow

    if not model_uri.startswith(("models:/", "runs:/")):
        return
    uri = mlflow.get_registry_uri() if model_uri.startswith("models:/") else mlflow.get_tracking_uri()
    check_store(uri)
    problem = missing_store(uri)
    if problem is not None:
        raise ModelNotFound(f"cannot load model {model_uri!r}: {problem}")


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


def champion_version(model_name: str) -> str | None:
    """The version currently aliased ``@champion``, or None when the model or its alias does not exist.

    Any other registry error (an unreachable store, say) propagates, so it can never pass for "no champion".
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, CHAMPION_ALIAS).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        failure = store_failure(exc, mlflow.get_registry_uri())
        if failure is not None:
            raise failure from None
        raise


def register_and_gate(
    model_uri: str,
    model_name: str,
    metric_name: str,
    candidate_metric: float,
    champion_metric: Callable[[str], float],
    higher_is_better: bool,
    promote: Promote = Promote.auto,
    tags: dict[str, str] | None = None,
    champion_caveat: Callable[[str], str | None] | None = None,
) -> Promotion:
    """Register ``model_uri`` as a new version of ``model_name`` and decide whether it becomes champion.

    ``champion_metric(uri)`` must score the model at ``uri`` on the SAME holdout as ``candidate_metric``, and
    give the worst figure there is (-inf, or +inf when lower is better) for a champion that cannot score it,
    which then cannot block the candidate. ``champion_caveat(uri)``, when given, says why the champion's figure
    does not count (e.g. it used columns now flagged as leaky), or None when it does: with a caveat the
    candidate is promoted (``auto``) and the reason says why. ``tags`` go on the new version.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    promote = Promote.parse(promote)
    version = str(mlflow.register_model(model_uri, model_name).version)
    client = MlflowClient()
    client.set_model_version_tag(model_name, version, metric_name, f"{candidate_metric:.6g}")
    for key, value in (tags or {}).items():
        client.set_model_version_tag(model_name, version, key, str(value)[:TAG_LIMIT])
    previous = champion_version(model_name)
    current: float | None = None
    if promote is Promote.never:
        chosen, reason = False, "--promote never: registered without promotion"
    elif promote is Promote.always:
        chosen, reason = True, "--promote always"
    elif previous is None:
        chosen, reason = True, "no champion yet"
    else:
        champion = f"models:/{model_name}/{previous}"
        worst = -math.inf if higher_is_better else math.inf
        try:
            current, unreadable = float(champion_metric(champion)), False
        except ModelUnreadable:  # a damaged champion must not block its replacement
            current, unreadable = worst, True
        caveat = champion_caveat(champion) if champion_caveat and not unreadable else None
        if unreadable:
            chosen = True
            reason = (f"champion v{previous} cannot be loaded (its files are damaged or incompatible), so it cannot "
                      f"block this candidate's {metric_name} {candidate_metric:.4f}")
        elif caveat:
            chosen = True
            figure = f"its {metric_name} {current:.4f}" if math.isfinite(current) else f"its {metric_name}"
            reason = (f"champion v{previous} {caveat}: {figure} on the same holdout does not block this "
                      f"candidate's {candidate_metric:.4f}")
        elif current == worst:
            chosen = True
            reason = (f"champion v{previous} cannot score this holdout (it was trained on other columns or data), "
                      f"so it cannot block this candidate's {metric_name} {candidate_metric:.4f}")
        else:
            chosen = candidate_metric >= current if higher_is_better else candidate_metric <= current
            verb = "at least as good as" if chosen else "worse than"
            reason = (f"{metric_name} {candidate_metric:.4f} is {verb} champion v{previous}'s "
                      f"{current:.4f} on the same holdout")
    client.set_model_version_tag(model_name, version, "promotion_reason", reason[:TAG_LIMIT])
    if chosen:
        record_champion(client, model_name, version, "promotion", reason, previous)
    return Promotion(model_name, str(version), chosen, reason, previous, candidate_metric, current)


HISTORY_TAG = "champion_history"
"""Registered-model tag: JSON list of ``{"version", "at", "how", "from"}``, oldest first."""


def now_utc() -> str:
    """The current instant as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def champion_history(client: MlflowClient, name: str) -> list[dict[str, str | None]]:
    """The recorded changes of ``name``'s champion, oldest first (empty when none were recorded)."""
    raw = client.get_registered_model(name).tags.get(HISTORY_TAG)
    try:
        history = json.loads(raw) if raw else []
    except json.JSONDecodeError:
        return []
    return [entry for entry in history if isinstance(entry, dict) and entry.get("version")]


def record_champion(client: MlflowClient, name: str, version: str, how: str, reason: str,
                    previous: str | None) -> None:
    """Make ``version`` the champion of ``name`` and record it: the history tag, and on the version the tags
    ``champion_since`` and ``champion_reason``. ``how`` is ``promotion`` or ``rollback``."""
    at = now_utc()
    client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    client.set_model_version_tag(name, version, "champion_since", at)
    client.set_model_version_tag(name, version, "champion_reason", reason[:TAG_LIMIT])
    history = [*champion_history(client, name), {"version": version, "at": at, "how": how, "from": previous}]
    text = json.dumps(history)
    while len(text) > TAG_LIMIT and len(history) > 1:  # the oldest changes go first
        history = history[1:]
        text = json.dumps(history)
    client.set_registered_model_tag(name, HISTORY_TAG, text)


def version_tags(model_uri: str) -> dict[str, str]:
    """The tags of the registered version at ``models:/<name>/<version>`` (empty for other URIs or when the
    registry does not know it)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    ref = model_uri.removeprefix("models:/")
    if not model_uri.startswith("models:/") or "/" not in ref:
        return {}
    name, version = ref.split("/", 1)
    try:
        return dict(MlflowClient().get_model_version(name, version).tags)
    except MlflowException:
        return {}


def load_registered(model_uri: str) -> mlflow.pyfunc.PyFuncModel:
    """Load a pyfunc model: an unknown name/version/alias is a ``ModelNotFound``, a damaged store a
    ``TrackingStoreUnavailable`` and files that cannot be read (overwritten, cut short) a ``ModelUnreadable``, each
    one line naming the store or the files and what to do."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from features.crm.urls import safe_url

    _require_store(model_uri)
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        failure = store_failure(exc, mlflow.get_registry_uri())
        if failure is not None:
            raise failure from None
        raise ModelNotFound(f"cannot load model {model_uri!r} from {safe_url(mlflow.get_tracking_uri())}: "
                            f"{exc.message.splitlines()[0]}") from None
    except (LeadvalError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - whatever reading the model's own files raised: named in the message
        raise ModelUnreadable(unreadable_model(model_uri, exc)) from None


INCOMPATIBLE_FILE_ERRORS = ("ImportError", "AttributeError")
"""Errors that say a model's files were written by other code (a class or module that is not there), by class name;
anything else that reading them raises says they are damaged (overwritten, cut short)."""


class ModelUnreadable(LeadvalError):
    """A registered model whose files cannot be read: overwritten, cut short, or saved by an incompatible version."""


def unreadable_model(model_uri: str, exc: BaseException, version: str | None = None,
                     location: str | None = None) -> str:
    """One line for a model at ``model_uri`` whose files raised ``exc`` when loaded: which version, where its files
    are (asked of the registry unless given), what failed and what to do."""
    first = (str(exc).strip().splitlines() or [""])[0]
    failed = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    if version is None and location is None:
        version, location = model_files(model_uri)
    location = location.removeprefix("file://") if location else None
    which = f" (version {version})" if version and not model_uri.endswith(f"/{version}") else ""
    files = f"its files at {location}" if location else "its files"
    if {cls.__name__ for cls in type(exc).__mro__} & set(INCOMPATIBLE_FILE_ERRORS):
        what = f"{files} were saved by another version of leadval or of its packages ({failed})"
    else:
        what = f"{files} are damaged ({failed})"
    name = model_uri.removeprefix("models:/").split("@", 1)[0].split("/", 1)[0]
    train = {LEAD_MODEL_NAME: "leadval train leads", CLV_MODEL_NAME: "leadval train clv"}.get(name, "leadval train")
    return f"cannot load model {model_uri!r}{which}: {what}; restore them from a backup, or train a new version ({train})"


def model_files(model_uri: str) -> tuple[str | None, str | None]:
    """(version, where its files are) of the model at ``model_uri``, a local path when they are local; None for what
    the registry cannot say."""
    from mlflow.tracking import MlflowClient

    if not model_uri.startswith("models:/"):
        return None, model_uri.removeprefix("file://")
    ref = model_uri.removeprefix("models:/")
    try:
        client = MlflowClient()
        if "@" in ref:
            name, alias = ref.split("@", 1)
            version = str(client.get_model_version_by_alias(name, alias).version)
        else:
            name, version = ref.split("/", 1)
        return version, client.get_model_version_download_uri(name, version).removeprefix("file://")
    except Exception:  # noqa: BLE001 - only to name the files in a message
        return None, None


def registered_identity(model_uri: str) -> tuple[str, str | None, str | None]:
    """(name, version, training run id) of a ``models:/name@alias`` or ``models:/name/version`` URI.

    Other URIs (runs:/, files) have no registry entry: their name is the URI and version and run are None.
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from features.crm.urls import safe_url

    if not model_uri.startswith("models:/"):
        return model_uri, None, None
    ref = model_uri.removeprefix("models:/")
    _require_store(model_uri)
    client = MlflowClient()
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            found = client.get_model_version_by_alias(name, alias)
        else:
            name, version = ref.split("/", 1)
            found = client.get_model_version(name, version)
    except (MlflowException, ValueError) as exc:
        failure = store_failure(exc, mlflow.get_registry_uri())
        if failure is not None:
            raise failure from None
        raise ModelNotFound(f"cannot find model {model_uri!r} in the registry at "
                            f"{safe_url(mlflow.get_tracking_uri())}") from None
    return name, str(found.version), found.run_id
