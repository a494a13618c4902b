"""``/score_leads`` bodies decoded by msgspec when they are valid as sent, else validated by pydantic as before.

pydantic takes ~40-45 ms to validate a 1,000-lead request with ~45,000 activities as objects (``json.loads`` alone
~23 ms); msgspec decodes the same body into structs with the same types and limits in ~15 ms, and the request's whole
path in the service falls from ~83 to ~59 ms. It is only a fast path: a body msgspec refuses for any
reason (a wrong type, a value out of range, an unknown field, a repeated key or lead id, ``"lenient": true``) is
validated again by pydantic (:class:`~serving.api.schemas.ScoreLeadsRequest`), which gives the 400 or the lenient
warnings word for word as without this module. The structs are built from pydantic's own types
(:func:`typed_dict_struct`), so a limit is written once; what msgspec takes, pydantic takes too, and both give the
same request (``tests/serving/api/test_fast_decoding.py`` holds them to it).
"""

from __future__ import annotations

import types
from datetime import UTC, datetime
from functools import cache
from operator import attrgetter
from typing import Annotated, Any, Required, Union, get_args, get_origin, get_type_hints

import annotated_types
import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType
from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from serving.api.activities import ACTIVITY_FIELDS, COLUMNS, Activity, ActivityColumns, AtMost, LeadActivities
from serving.api.schemas import Lead, ScoreLeadsRequest, UtcTime, first_repeat

LIMITS = {annotated_types.MinLen: "min_length", annotated_types.MaxLen: "max_length", annotated_types.Ge: "ge",
          annotated_types.Le: "le"}
"""pydantic's limits that msgspec checks alike (lengths in code points, closed ranges)."""


def msgspec_type(hint: Any, structs: dict[type, type[Struct]]) -> Any:
    """The msgspec type of a pydantic field type, with the same limits (``structs``: the struct for each TypedDict).

    Anything else pydantic would check (a validator, a constraint not in :data:`LIMITS`) raises ``TypeError``: the
    fast path must not take what pydantic refuses.
    """
    origin, args = get_origin(hint), get_args(hint)
    if hint in structs:
        return structs[hint]
    if origin is Required:
        return msgspec_type(args[0], structs)
    if origin is Union or origin is types.UnionType:
        return Union[tuple(msgspec_type(arg, structs) for arg in args)]
    if origin is list:
        return list[msgspec_type(args[0], structs)]
    if origin is Annotated:
        limits = {}
        for extra in args[1:]:
            for limit in extra.metadata if isinstance(extra, FieldInfo) else [extra]:
                if type(limit) not in LIMITS:
                    raise TypeError(f"no msgspec equivalent of {limit!r} in {hint!r}")
                limits[LIMITS[type(limit)]] = getattr(limit, LIMITS[type(limit)])
        return Annotated[msgspec_type(args[0], structs), Meta(**limits)]
    if hint in (str, float, bool, type(None)):
        return hint
    raise TypeError(f"no msgspec equivalent of {hint!r}")


def typed_dict_struct(typed_dict: type, default: Any, structs: dict[type, type[Struct]],
                      fields: dict[str, Any] | None = None) -> type[Struct]:
    """A struct with ``typed_dict``'s fields, types and limits, refusing unknown fields; ``default`` for the fields it
    may leave out (``UNSET``: told apart from null); ``fields`` gives some fields' pydantic types instead.

    Not tracked by the garbage collector: a request's ~45,000 activities would otherwise cost collections
    (~12 ms of a 1,000-lead request), and decoded JSON holds no reference cycle.
    """
    hints = get_type_hints(typed_dict, include_extras=True) | (fields or {})
    spec = []
    for name, hint in hints.items():
        kind = msgspec_type(hint, structs)
        if get_origin(hint) is Required:
            spec.append((name, kind))
        else:
            spec.append((name, kind | UnsetType if default is UNSET else kind, default))
    return msgspec.defstruct(f"Fast{typed_dict.__name__}", spec, forbid_unknown_fields=True, kw_only=True, gc=False)


_Activity = typed_dict_struct(Activity, None, {})
_ActivityColumns = typed_dict_struct(ActivityColumns, UNSET, {})
_Lead = typed_dict_struct(Lead, UNSET, {Activity: _Activity, ActivityColumns: _ActivityColumns},
                          {"activities": Annotated[list[Activity], AtMost], "activity_columns": ActivityColumns})


_LEADS = ScoreLeadsRequest.model_fields["leads"]
_ScoreLeads = msgspec.defstruct("FastScoreLeadsRequest", [
    ("lenient", bool, False),
    ("leads", msgspec_type(Annotated[_LEADS.annotation, *_LEADS.metadata], {Lead: _Lead})),
    ("as_of", str | None, None),  # then read by pydantic's UtcTime
], forbid_unknown_fields=True, kw_only=True, gc=False)


_DECODER = msgspec.json.Decoder(_ScoreLeads)
_ACTIVITY_COLUMNS = attrgetter(*ACTIVITY_FIELDS)
_LEAD_VALUES = attrgetter(*_Lead.__struct_fields__)


@cache
def _as_of_type() -> TypeAdapter:
    return TypeAdapter(UtcTime)


class NotDecoded(ValueError):
    """msgspec did not take the body as it is: pydantic validates it (and words the 400, if any)."""


def _activities(lead: _Lead) -> LeadActivities | None:
    """The lead's activities as columns, as :class:`LeadActivities` would hold them; None when it sent none."""
    if lead.activities is not UNSET:
        if lead.activity_columns is not UNSET:
            raise NotDecoded("both activities and activity_columns")
        objects = lead.activities
        return LeadActivities([activity.activity_type for activity in objects],
                              [activity.occurred_at for activity in objects],
                              [activity.duration_seconds for activity in objects])
    if lead.activity_columns is UNSET:
        return None
    columns = {name: values for name, values in zip(ACTIVITY_FIELDS, _ACTIVITY_COLUMNS(lead.activity_columns),
                                                    strict=True) if values is not UNSET}
    try:
        return LeadActivities.from_columns(columns)
    except PydanticCustomError:
        raise NotDecoded("columns of different lengths") from None


def _lead(lead: _Lead) -> dict:
    """The lead as the mapping pydantic's ``Lead`` gives: only the fields sent, activities as columns."""
    mapping = {name: value for name, value in zip(_Lead.__struct_fields__, _LEAD_VALUES(lead), strict=True)
               if value is not UNSET}
    mapping.pop(COLUMNS, None)
    activities = _activities(lead)
    if activities is not None:
        mapping["activities"] = activities
    return mapping


def decode_score_leads(body: bytes, request_type: type[ScoreLeadsRequest]) -> ScoreLeadsRequest:
    """The ``/score_leads`` request in ``body``, as ``request_type.model_validate_json(body)`` gives it.

    Raises :class:`NotDecoded` for anything msgspec does not take as is: the caller then validates by pydantic.
    """
    try:
        decoded = _DECODER.decode(body)
    except msgspec.DecodeError as exc:
        raise NotDecoded(str(exc)) from None
    if decoded.lenient or first_repeat([lead.lead_id for lead in decoded.leads]) is not None:
        raise NotDecoded("lenient, or a repeated lead id")
    try:
        as_of = None if decoded.as_of is None else _as_of_type().validate_python(decoded.as_of)
    except ValidationError:
        raise NotDecoded("as_of") from None
    leads = [_lead(lead) for lead in decoded.leads]
    return request_type.model_construct(
        lenient=False, leads=leads, as_of=as_of or datetime.now(UTC).replace(tzinfo=None))
