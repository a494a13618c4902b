"""One log line per bad request: BentoML logs every refused request with its full traceback.

BentoML's endpoint wrapper (``_bentoml_impl.server.app``) answers a request that fails validation with a 400,
and logs it first through ``bentoml._internal.server.http_app.log_exception``: ``logger.error(..., exc_info=True)``,
~2 KB of traceback for a 2-byte bad body. :class:`ConciseClientErrors`, a filter on that logger, turns the
records of client errors (a pydantic ``ValidationError``, a ``BentoMLException`` with a 4xx code) into one
WARNING line: status, method, path and the first problem (its location and message; request values are never
in it, see :data:`serving.api.unknown_fields.STRICT`). Everything else (5xx) keeps its traceback.
"""

from __future__ import annotations

import logging

BENTOML_ERROR_LOGGER = "bentoml._internal.server.http_app"
"""The logger BentoML's ``log_exception`` writes to."""
MAX_DETAIL_CHARS = 300


def client_error(exc: BaseException | None) -> tuple[int, str] | None:
    """(status, first problem) when ``exc`` is a client's mistake (4xx), else None."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        if not errors:
            return 400, exc.title
        first = errors[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        message = f"{first.get('msg', '')}{more}"
        return 400, f"{where}: {message}" if where else message
    from bentoml.exceptions import BentoMLException

    if isinstance(exc, BentoMLException):
        status = int(exc.error_code)
        if 400 <= status < 500:
            return status, str(exc) or type(exc).__name__
    return None


class ConciseClientErrors(logging.Filter):
    """Rewrites a client error's record to one line without traceback; other records pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if isinstance(record.exc_info, tuple) else None
        found = client_error(exc)
        if found is None:
            return True
        status, detail = found
        args = record.args if isinstance(record.args, tuple) else ()
        path, method = (args + ("?", "?"))[:2]
        detail = " ".join(detail.split())[:MAX_DETAIL_CHARS]
        record.msg, record.args = "%d %s %s: %s", (status, method, path, detail)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


def install() -> None:
    """Put :class:`ConciseClientErrors` on BentoML's error logger (once; call it in each worker)."""
    logger = logging.getLogger(BENTOML_ERROR_LOGGER)
    if not any(isinstance(f, ConciseClientErrors) for f in logger.filters):
        logger.addFilter(ConciseClientErrors())
