"""Options several commands share, defined once: the same flag has the same name, type and help everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from training.registry import Promote

DAY_FORMATS = ["%Y-%m-%d"]
INSTANT_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]

DbOption = Annotated[
    str | None, typer.Option("--db", help="CRM database URL [env LEADVAL_DB; default sqlite:///data/crm.db]."),
]
TrackingOption = Annotated[
    str | None,
    typer.Option("--tracking-uri", help="MLflow tracking/registry URI [env MLFLOW_TRACKING_URI; default "
                                        "sqlite:///models/mlflow.db]."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON object as the last line.")]
PromoteOption = Annotated[
    Promote,
    typer.Option("--promote", help="auto: become @champion if at least as good as the current champion on the "
                                   "same holdout; always; never."),
]
AsOfOption = Annotated[
    str | None, typer.Option("--as-of", help="Compute features as of this date/time (UTC) [default: now].")
]
OutFileOption = Annotated[Path | None, typer.Option("--out", help="With --table: where to write the scores "
                                                                  "(.csv or .parquet).")]
