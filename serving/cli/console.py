"""How commands talk to people and machines: a summary on stdout, JSON as the last line, bars on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from tqdm import tqdm


def _default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def report(result: Mapping[str, Any], summary: str, as_json: bool) -> None:
    """Print ``summary`` for people; with ``as_json`` also print ``result`` as one JSON line, last."""
    print(summary)
    if as_json:
        print(json.dumps(dict(result), default=_default, sort_keys=True))


def progress_bar(total: int | None, desc: str, unit: str = "rows") -> tqdm:
    """A progress bar on stderr that stays quiet when stderr is not a terminal and output is piped."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None, dynamic_ncols=True)
