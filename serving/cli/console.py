"""How commands talk to people and machines: a summary on stdout, JSON as the last line, bars on stderr.

Text for people passes :func:`printable`: CRM values (ids, names, channels) are data, and an id holding
``\\x1b[2J`` must not clear the screen. JSON escapes such characters itself.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from typing import Any

from tqdm import tqdm

_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROLS_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def printable(text: str, keep_newlines: bool = False) -> str:
    """``text`` with every control character (C0, DEL, C1) shown as an escape such as ``\\x1b``.

    Nothing in it can then move the cursor, clear the terminal or ring its bell. With ``keep_newlines`` line
    feeds stay: for the lines of a message, never for one CRM value.
    """
    pattern = _CONTROLS_BUT_NEWLINE if keep_newlines else _CONTROLS
    return pattern.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


def tell(line: str) -> None:
    """Print a note, warning or error for people on stderr, control characters shown as escapes."""
    print(printable(line, keep_newlines=True), file=sys.stderr)


def report(result: Mapping[str, Any], summary: str, as_json: bool) -> None:
    """Print ``summary`` for people; with ``as_json`` also print ``result`` as one JSON line, last.

    Missing and non-finite numbers become null, so the line is strict JSON.
    """
    print(printable(summary, keep_newlines=True))
    if as_json:
        from features.json_ready import json_ready  # numpy and pandas: loaded by the command by now, not by --help

        print(json.dumps(json_ready(dict(result)), default=str, sort_keys=True))


def progress_bar(total: int | None, desc: str, unit: str = "rows") -> tqdm:
    """A progress bar on stderr that stays quiet when stderr is not a terminal and output is piped."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None, dynamic_ncols=True)
