"""A lead's activities in a request: sent as a list of objects (``activities``) or as columns (``activity_columns``),
held as columns (:class:`LeadActivities`) either way.

The columnar shape, ``{"activity_type": [...], "occurred_at": [...], "duration_seconds": [...]}``, carries the same
values under the same rules, one list per field with one value per activity. It is optional and meant for large
requests: a 1,000-lead request with ~45,000 activities is half the bytes and validates ~2.5x faster (~15 ms against
~39 ms here), as no object is built per activity (merely parsing the object shape, ``json.loads``, takes ~25 ms).
Columns of different lengths are a 400 naming them; a bad value is located by column and position
(``["leads", 3, "activity_columns", "occurred_at", 7]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Annotated, Any

from pydantic import AfterValidator, Field, GetCoreSchemaHandler, with_config
from pydantic_core import PydanticCustomError, core_schema
from typing_extensions import Required, TypedDict

from serving.api.unknown_fields import STRICT, is_lenient, unknown_field

MAX_ACTIVITIES_PER_LEAD = 10_000
MAX_DURATION_SECONDS = 604_800
"""Longest engagement time of one activity (``duration_seconds``): a week."""
ACTIVITY_FIELDS: tuple[str, ...] = ("activity_type", "occurred_at", "channel", "content_id", "duration_seconds")
COLUMNS = "activity_columns"
"""The lead field of the columnar shape."""

IsoTime = Annotated[str, Field(min_length=10, max_length=40, json_schema_extra={"format": "date-time"})]
"""ISO 8601 text, parsed many at once when the request is scored (:func:`serving.api.request_times.utc_times`: a
1,000-lead request carries ~40,000 activity times, and a per-value check here would cost more)."""
Name = Annotated[str, Field(max_length=64)]
ContentId = Annotated[str, Field(max_length=128)]
Duration = Annotated[float, Field(ge=0, le=MAX_DURATION_SECONDS)]


def _activity_types_enum(schema: dict[str, Any]) -> None:
    from features.crm.schema import ACTIVITY_TYPES  # sqlalchemy: not at import (BentoML's supervisor imports us)

    schema["enum"] = list(ACTIVITY_TYPES)


ActivityType = Annotated[str, Field(min_length=1, max_length=32, json_schema_extra=_activity_types_enum,
                                    description="One of the CRM's activity types, e.g. page_view, email_click, "
                                                "demo_request.")]


AtMost = Field(max_length=MAX_ACTIVITIES_PER_LEAD)
"""A column's length limit (as for a lead's list of activity objects)."""


@with_config(STRICT)
class Activity(TypedDict, total=False, extra_items=unknown_field("an activity", ACTIVITY_FIELDS)):
    """One behaviour event of a lead, as in the CRM's ``activities`` table."""

    activity_type: Required[ActivityType]
    occurred_at: Required[IsoTime]
    channel: Name | None
    content_id: ContentId | None
    duration_seconds: Duration | None


@with_config(STRICT)
class ActivityColumns(TypedDict, total=False, extra_items=unknown_field("activity_columns", ACTIVITY_FIELDS)):
    """A lead's activities as columns: one list per field of :class:`Activity`, all of the same length."""

    activity_type: Required[Annotated[list[ActivityType], AtMost]]
    occurred_at: Required[Annotated[list[IsoTime], AtMost]]
    channel: Annotated[list[Name | None], AtMost]
    content_id: Annotated[list[ContentId | None], AtMost]
    duration_seconds: Annotated[list[Duration | None], AtMost]


@dataclass(frozen=True, slots=True)
class LeadActivities:
    """A lead's activities as parallel lists, in the order sent: type, time text, duration (None: not sent).

    Sent as a list of :class:`Activity` objects and validated item by item as such; each lead's list is
    then turned into columns at once, while its objects are still in the CPU's cache. A 1,000-lead
    request carries ~45,000 activities: each later pass over their mappings cost 5-8 ms, most of it cache
    misses, and freeing them at the end of the request another ~3 ms. Sent as :class:`ActivityColumns`
    (``columns``), the lists are taken as they are. ``channel`` and ``content_id`` are checked but not kept: the
    lead features do not use them (nor does the batch job). ``ignored`` lists the (place in the lead, field) of
    unknown fields a lenient request sent (always empty otherwise: they are a 400).
    """

    activity_type: list[str]
    occurred_at: list[str]
    duration_seconds: list[float | None]
    ignored: tuple[tuple[str, str], ...] = ()
    columns: bool = False

    def __len__(self) -> int:
        return len(self.occurred_at)

    @classmethod
    def from_mappings(cls, activities: list[Activity]) -> LeadActivities:
        """Columns of validated activity mappings."""
        ignored = ()
        if is_lenient():
            known = frozenset(ACTIVITY_FIELDS)
            ignored = tuple((f"activities[{position}]", name) for position, activity in enumerate(activities)
                            for name in activity.keys() - known)
        return cls(list(map(itemgetter("activity_type"), activities)),
                   list(map(itemgetter("occurred_at"), activities)),
                   list(map(dict.get, activities, repeat("duration_seconds"))), ignored)

    @classmethod
    def from_columns(cls, columns: ActivityColumns) -> LeadActivities:
        """The validated columns, once they are found to be of one length (else a 400 naming two that differ)."""
        count = len(columns["activity_type"])
        for name in ACTIVITY_FIELDS:
            values = columns.get(name)
            if values is not None and len(values) != count:
                raise PydanticCustomError(
                    "column_lengths", "{name} has {values} values but activity_type has {count}: every column needs "
                    "one value per activity", {"name": name, "values": len(values), "count": count})
        ignored = tuple((COLUMNS, name) for name in columns.keys() - frozenset(ACTIVITY_FIELDS)) if is_lenient() else ()
        duration = columns.get("duration_seconds")
        return cls(columns["activity_type"], columns["occurred_at"], [None] * count if duration is None else duration,
                   ignored, columns=True)

    def mappings(self) -> list[dict[str, Any]]:
        """The activities as mappings of the fields kept (how a request is written back out)."""
        return [{"activity_type": kind, "occurred_at": at, "duration_seconds": duration}
                for kind, at, duration in zip(self.activity_type, self.occurred_at, self.duration_seconds,
                                              strict=True)]

    def location(self, lead_index: int, position: int, name: str) -> tuple[str | int, ...]:
        """Where the ``position``-th activity's field ``name`` was sent in the request, for a 400."""
        if self.columns:
            return ("leads", lead_index, COLUMNS, name, position)
        return ("leads", lead_index, "activities", position, name)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        items = handler.generate_schema(Annotated[list[Activity], AtMost])
        return core_schema.no_info_after_validator_function(
            cls.from_mappings, items, serialization=core_schema.plain_serializer_function_ser_schema(cls.mappings))


NO_ACTIVITIES = LeadActivities([], [], [])

ColumnarActivities = Annotated[ActivityColumns, AfterValidator(LeadActivities.from_columns), Field(description=(
    "The lead's activities as columns, instead of activities (send one of the two): faster for large requests."))]
"""The ``activity_columns`` of a lead: validated as columns, held as :class:`LeadActivities` (the request moves them
to the lead's ``activities``)."""
