"""How commands talk to people and machines: a summary on stdout, JSON as the last line, bars on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from tqdm import tqdm


def report(result: Mapping[str, Any], summary: str, as_json: bool) -> None:
    """Print ``summary`` for people; with ``as_json`` also print ``result`` as one JSON line, last.

    Missing and non-finite numbers become null, so the line is strict JSON.
    """
    print(summary)
    if as_json:
        from features.json_ready import json_ready  # numpy and pandas: loaded by the command by now, not by --help

        print(json.dumps(json_ready(dict(result)), default=str, sort_keys=True))


def progress_bar(total: int | None, desc: str, unit: str = "rows") -> tqdm:
    """A progress bar on stderr that stays quiet when stderr is not a terminal and output is piped."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None, dynamic_ncols=True)
