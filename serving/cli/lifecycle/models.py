"""``leadval models list|rollback``: the registered models' versions with their figures, and moving ``@champion`` back.

A thin wrapper over :mod:`training.champions`. Read-only except rollback, which only moves the alias and tags:
a missing local MLflow store is a one-line error and nothing is created.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from features.errors import InvalidInput
from features.settings import load_settings
from serving.cli.console import report
from serving.cli.options import JsonOption, TrackingOption

app = typer.Typer(rich_markup_mode=None, help="List registered models' versions, or roll @champion back.",
                  no_args_is_help=True)
SHOWN_TAGS = ("champion_reason", "promotion_reason", "retrain_reason", "rolled_back")
"""Version tags the text listing shows (``--json`` has them all)."""


def _registry(tracking_uri: str | None) -> Any:
    """An MLflow client of the registry at ``tracking_uri`` (flag, env or default); a missing local store is an
    ``InvalidInput`` naming it, and is not created."""
    from mlflow.tracking import MlflowClient

    from training.registry import missing_store
    from training.tracking import use_tracking

    uri = load_settings(tracking_uri=tracking_uri).tracking_uri
    use_tracking(uri, create=False)
    problem = missing_store(uri)
    if problem is not None:
        raise InvalidInput(problem)
    return MlflowClient()


def _version_line(version: dict[str, Any]) -> str:
    """One version for people: number, creation time, headline metrics, @champion and why."""
    metrics = " ".join(f"{key} {value:.4g}" for key, value in version["metrics"].items())
    champion = "  @champion" if version["champion"] else ""
    reasons: dict[str, str] = {}
    for key in SHOWN_TAGS:  # each reason once: a promotion's champion_reason repeats its promotion_reason
        value = version["tags"].get(key)
        if value and value not in reasons.values():
            reasons[key] = value
    tags = "; ".join(f"{key}: {value}" for key, value in reasons.items())
    return f"  v{version['version']}  {version['created_at']}  {metrics or '(no metrics)'}{champion}" + (
        f"\n      {tags}" if tags else "")


@app.command("list")
def list_command(tracking_uri: TrackingOption = None, as_json: JsonOption = False) -> None:
    """Every registered model (lead-scoring, clv, file models) with its versions: when created, their runs' headline
    metrics, tags (why promoted, retrained or rolled back) and which is @champion."""
    from training.champions import list_models

    listed = list_models(_registry(tracking_uri))
    blocks = []
    for model in listed:
        champion = f"@champion v{model['champion_version']}" if model["champion_version"] else "no @champion"
        back = f", rollback goes to v{model['rollback_to']}" if model["rollback_to"] else ""
        blocks.append("\n".join([f"{model['name']}: {len(model['versions'])} version(s), {champion}{back}",
                                 *(_version_line(v) for v in model["versions"])]))
    summary = "\n".join(blocks) or "no registered models yet: train one with leadval train leads or leadval train clv"
    report({"models": listed}, summary, as_json)


@app.command("rollback")
def rollback_command(
    name: Annotated[str, typer.Argument(help="Registered model name (lead-scoring, clv, or a file model's).")],
    to: Annotated[str | None, typer.Option("--to", help="Version to make @champion [default: the previous "
                                                        "champion, from the recorded history].")] = None,
    tracking_uri: TrackingOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move NAME's @champion back to the previous champion (or --to VERSION) and record why on the version; the
    batch jobs and the service load models:/NAME@champion, so they use it from their next run or start."""
    from training.champions import rollback

    done = rollback(_registry(tracking_uri), name, to)
    was = f"v{done.from_version}" if done.from_version else "none"
    summary = (f"{done.model_name}: @champion is now v{done.to_version} (was {was}); recorded: {done.reason}. "
               "Restart leadval serve to load it; the next scoring run uses it.")
    report(done.as_dict(), summary, as_json)
