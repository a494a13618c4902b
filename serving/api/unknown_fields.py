"""Unknown fields in API requests: a 400 naming where they are and the fields expected there, or, in a request
that says ``"lenient": true``, ignored and listed in the response's ``warnings``.

Valid requests pay nothing for this: an object's unknown fields reach its own validator
(:func:`unknown_field`, the ``extra_items`` / ``__pydantic_extra__`` type of :mod:`serving.api.schemas`)
only when there are some. That validator must know whether the request is lenient while the request's
leads are validated, before the request object exists. So ``lenient`` is each request's first field
(:data:`LenientFlag`): pydantic validates a model's fields in their declared order, a default too with
``validate_default``, and the flag's validator leaves its value in a context variable for the fields after
it; the request's own last validator puts it back (:func:`end_of_request`). Checking for unknown fields at
all costs pydantic ~0.2 µs per object (10 ms for a 1,000-lead request's ~46,000 activities), whatever
mode refuses or keeps them.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, PlainValidator
from pydantic_core import PydanticCustomError

LENIENT_HINT = 'send "lenient": true to ignore unknown fields'
MAX_FIELD_NAME_SHOWN = 40
"""Longer unknown field names are cut in warnings (they are the client's text)."""
PLURALS = {"lead": "leads", "activity": "activities", "activity_columns": "activity_columns", "customer": "customers",
           "order": "orders"}
STRICT = ConfigDict(strict=True, allow_inf_nan=False, hide_input_in_errors=True, extra="allow",
                    json_schema_extra={"additionalProperties": False})
"""The request objects' configuration: no type coercion, no NaN/Infinity, and request values never copied into
error messages or logs (except an unknown activity type, an event name the client needs to see: see
:mod:`serving.api.service`). Unknown fields go to each object's ``extra_items`` / ``__pydantic_extra__`` validator
(:func:`unknown_field`), which refuses them unless the request is lenient; their names are in the error's location,
as pydantic reports them."""

_LENIENT: ContextVar[bool] = ContextVar("leadval_api_lenient", default=False)
"""Whether the request being validated is lenient (set by its ``lenient`` field, validated first)."""


def is_lenient() -> bool:
    """Whether the request being validated said ``"lenient": true``."""
    return _LENIENT.get()


def end_of_request() -> None:
    """Forget the request's leniency (its last validator calls this): what is validated next is strict."""
    _LENIENT.set(False)


def unknown_field(kind: str, fields: tuple[str, ...]) -> Any:
    """The type of a ``kind`` object's unknown fields: a 400 naming the ``fields`` it has, or, in a lenient
    request, None (the request drops the field and reports it in ``warnings``)."""
    expected = ", ".join(fields)

    def _unknown_field(_: Any) -> None:
        if not _LENIENT.get():
            raise PydanticCustomError("unknown_field", "unknown field; {kind} has the fields {expected} ({hint})",
                                      {"kind": kind, "expected": expected, "hint": LENIENT_HINT})
        return None

    return Annotated[Any, PlainValidator(_unknown_field, json_schema_input_type=Any)]


def _lenient_flag(value: bool) -> bool:
    _LENIENT.set(value)
    return value


LenientFlag = Annotated[bool, Field(validate_default=True, description=(
    "Ignore unknown fields (listed in the response's warnings) instead of answering 400.")),
    AfterValidator(_lenient_flag)]
"""A request's ``lenient`` flag: its first field, so it is validated before the objects whose unknown fields
it decides about."""


def _field_name(name: str) -> str:
    return repr(name if len(name) <= MAX_FIELD_NAME_SHOWN else name[: MAX_FIELD_NAME_SHOWN - 3] + "...")


def ignored_fields_warnings(found: Iterable[tuple[str, str, str]]) -> list[str]:
    """One warning per kind of object and unknown field name, from ``(kind, path, name)`` triples (kind
    ``request``, ``lead``, ``activity``, ``customer`` or ``order``): how many had it, and where the first was."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for kind, path, name in found:
        grouped.setdefault((kind, name), []).append(path)
    warnings = []
    for (kind, name), paths in grouped.items():
        if kind == "request":
            warnings.append(f"unknown field {_field_name(name)} of the request ignored")
            continue
        many = PLURALS[kind] if len(paths) != 1 else kind
        warnings.append(f"unknown field {_field_name(name)} ignored in {len(paths):,} {many} (first: {paths[0]})")
    return warnings
