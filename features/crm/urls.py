"""Database URLs as messages show them and files as SQLite opens them: passwords masked, local files found.

Kept apart from :mod:`features.crm.store` (which imports pandas and NumPy) so that a command which only checks a
URL, such as ``leadval serve`` before it starts the server, does not wait for those imports.
"""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

_SCHEME = re.compile(r"[^:/@]*:/+")
_QUERY_PASSWORD = re.compile(r"(?i)([?&](?:password|passwd|pwd)=)[^&]*")


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages and logs, whether it parses or not.

    A URL that does not parse, or holds more than one ``@`` (an unencoded ``@`` in a password makes the parser
    take the password's tail for the host), is masked as text: what lies between the scheme's ``:/`` or ``://``
    and the last ``@`` is taken for credentials and shown as ``user:***``. A ``password=`` in the query is masked
    too.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is no number
        parsed = None
    shown = _masked_text(url) if parsed is None or url.count("@") > 1 else parsed.render_as_string(hide_password=True)
    return _QUERY_PASSWORD.sub(r"\1***", shown)


def _masked_text(url: str) -> str:
    """``url`` as text with ``user:password`` before its last ``@`` (or a non-numeric port, without one) masked."""
    scheme = _SCHEME.match(url)
    start = scheme.end() if scheme else 0
    end = url.rfind("@")
    if end < start:  # no credentials: a host:port whose port is no number may be a password missing its @host
        end = start + len(re.split(r"[/?#]", url[start:], maxsplit=1)[0])
    user, colon, secret = url[start:end].partition(":")
    if not colon or secret.isdigit():
        return url
    return f"{url[:start]}{user}:***{url[end:]}"


def sqlite_file(url: str) -> Path | None:
    """The file a local SQLite ``url`` names (relative to the working directory, as SQLite opens it), or None for
    other databases, in-memory SQLite and URLs that do not parse."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.database.startswith("file:"):  # an SQLite URI filename (?uri=true): its path part
        return Path(parsed.database.removeprefix("file:").split("?", 1)[0])
    return Path(parsed.database)
