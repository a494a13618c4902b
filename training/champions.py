"""Who is ``@champion`` and who was: the champion history, rollback, and the registry's models with their figures.

Every change of champion (a promotion by :func:`training.registry.register_and_gate`, a rollback) goes through
:func:`record_champion`, which moves the alias and appends to the registered model's tag ``champion_history``
(JSON, oldest first). Replayed as a stack (a promotion pushes, a rollback pops back to its target), that history
defines "the previous champion": rolling back twice goes two champions back, not to and fro. A model whose
champion was set before the history existed (or by hand) falls back to its highest version below the champion.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from features.errors import InvalidInput
from training.registry import CHAMPION_ALIAS, champion_history, now_utc, record_champion

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

HEADLINE_METRICS = ("roc_auc", "pr_auc", "lift_top10", "ece", "baseline_roc_auc", "holdout_mae",
                    "holdout_actual_purchases", "holdout_predicted_purchases", "rows")
"""The run metrics ``leadval models list`` shows, when a version's run logged them (lead models, then CLV)."""
ROLLBACK_BY = "leadval models rollback"


def champion_stack(history: list[dict[str, str | None]]) -> list[str]:
    """The champions in order, the current last: a promotion pushes its version, a rollback pops back to its
    target (or pushes it when the target was never champion)."""
    stack: list[str] = []
    for entry in history:
        version = str(entry["version"])
        if entry.get("how") == "rollback" and version in stack:
            del stack[len(stack) - stack[::-1].index(version):]
        elif not stack or stack[-1] != version:
            stack.append(version)
    return stack


def previous_champion(history: list[dict[str, str | None]], current: str, versions: list[str]) -> str | None:
    """The champion before ``current`` per ``history`` (skipping versions no longer registered); without a usable
    history, the highest of ``versions`` below ``current``. None when there is none."""
    stack = champion_stack(history)
    if stack and stack[-1] == current:
        earlier = [v for v in reversed(stack[:-1]) if v in versions and v != current]
        if earlier:
            return earlier[0]
    below = sorted((int(v) for v in versions if int(v) < int(current)), reverse=True)
    return str(below[0]) if below else None


@dataclass(frozen=True)
class Rollback:
    """What ``leadval models rollback`` did: the model, the champion before and after, and the recorded reason."""

    model_name: str
    from_version: str | None
    to_version: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` result."""
        return {"model_name": self.model_name, "from_version": self.from_version, "champion_version": self.to_version,
                "reason": self.reason}


def model_names(client: MlflowClient) -> list[str]:
    """The names of every registered model, sorted."""
    names, token = [], None
    while True:
        page = client.search_registered_models(max_results=100, page_token=token)
        names.extend(model.name for model in page)
        token = page.token
        if not token:
            return sorted(names)


def _versions(client: MlflowClient, name: str) -> list[Any]:
    found, token = [], None
    quoted = name.replace("'", "\\'")
    while True:
        page = client.search_model_versions(f"name = '{quoted}'", max_results=1000, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return sorted(found, key=lambda version: int(version.version))


def _champion(client: MlflowClient, name: str) -> str | None:
    aliases = client.get_registered_model(name).aliases or {}
    version = aliases.get(CHAMPION_ALIAS)
    return str(version) if version is not None else None


def rollback(client: MlflowClient, name: str, to: str | None = None) -> Rollback:
    """Move ``name``'s ``@champion`` to version ``to`` (default: the previous champion, :func:`previous_champion`)
    and record why; an unknown name or version is an ``InvalidInput`` listing the known ones."""
    known = model_names(client)
    if name not in known:
        raise InvalidInput(f"no registered model {name!r}; known: {', '.join(known) or 'none (train one first)'}")
    versions = [str(v.version) for v in _versions(client, name)]
    current = _champion(client, name)
    if to is not None and to.removeprefix("v") not in versions:
        raise InvalidInput(f"{name} has no version {to!r}; known: {', '.join(versions)}")
    if to is None:
        if current is None:
            raise InvalidInput(f"{name} has no @champion to roll back from; give --to VERSION (known: "
                               f"{', '.join(versions)})")
        to = previous_champion(champion_history(client, name), current, versions)
        if to is None:
            raise InvalidInput(f"{name} has no champion before v{current} to roll back to (versions: "
                               f"{', '.join(versions)})")
    to = to.removeprefix("v")
    if to == current:
        raise InvalidInput(f"v{to} is already the @champion of {name}")
    at = now_utc()
    reason = (f"rolled back from v{current} at {at} by {ROLLBACK_BY}" if current
              else f"made champion at {at} by {ROLLBACK_BY} (there was none)")
    if current is not None:
        client.set_model_version_tag(name, current, "rolled_back", f"replaced by v{to} at {at} by {ROLLBACK_BY}")
    record_champion(client, name, to, "rollback", reason, current)
    return Rollback(name, current, to, reason)


def _time(millis: int | None) -> str | None:
    if millis is None:
        return None
    return datetime.fromtimestamp(millis / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _run_metrics(client: MlflowClient, run_id: str | None) -> dict[str, float]:
    from mlflow.exceptions import MlflowException

    if not run_id:
        return {}
    try:
        metrics = client.get_run(run_id).data.metrics
    except MlflowException:  # a deleted run: its version still lists, without figures
        return {}
    return {key: metrics[key] for key in HEADLINE_METRICS if key in metrics}


def list_models(client: MlflowClient) -> list[dict[str, Any]]:
    """Every registered model with its versions (oldest first): creation time, headline metrics of their runs,
    tags, and which is ``@champion``; with the champion history and the version a rollback would go back to."""
    listed = []
    for name in model_names(client):
        current = _champion(client, name)
        found = _versions(client, name)
        history = champion_history(client, name)
        versions = [str(v.version) for v in found]
        listed.append({
            "name": name,
            "champion_version": current,
            "rollback_to": previous_champion(history, current, versions) if current else None,
            "champion_history": history,
            "versions": [{"version": str(v.version), "created_at": _time(v.creation_timestamp),
                          "champion": str(v.version) == current, "run_id": v.run_id,
                          "metrics": _run_metrics(client, v.run_id), "tags": dict(v.tags)} for v in found],
        })
    return listed
