"""Request and response bodies of the scoring API: strict about what comes in, explicit about what goes out.

Every field is typed strictly (a number sent as a string is a wrong type, not a guess) and checked
where it enters: NaN and Infinity are refused, counts and amounts must be >= 0 and within sane upper bounds
(:data:`MAX_FREQUENCY` purchases, :data:`MAX_DAYS` days, :data:`MAX_AMOUNT` of money,
:data:`MAX_DURATION_SECONDS` per activity: a number the models cannot hold is a 400, never a 500), recency cannot
exceed age, lists cannot be empty or longer than :data:`MAX_BATCH`. A bad request gets a 400 whose
``detail`` gives, per problem, its location (``["leads", 3, "created_at"]``: field and item index)
and a message. Profile categories (channels, industries, ...) are free text: values the model has not
seen are scored, not refused. ``activity_type`` is one of the CRM's activity types
(:data:`features.crm.schema.ACTIVITY_TYPES`, as the import requires); like the activity times, the types
are checked all at once when the request is scored (:func:`serving.api.service.request_features`), where
one pass costs microseconds and a per-value validator here milliseconds. Times are ISO 8601 strings
(``2024-05-01`` or ``2024-05-01T09:30:00Z``); offsets are converted to UTC and times without one are taken
as UTC.

Unknown fields (a misspelt ``industy``) are a 400 naming where they are and the fields expected there,
unless the request says ``"lenient": true``: then they are ignored and listed in the response's
``warnings`` (:mod:`serving.api.unknown_fields`; ``lenient`` stays each request's first field).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import repeat
from operator import itemgetter
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    PrivateAttr,
    model_validator,
    with_config,
)
from pydantic_core import PydanticCustomError, core_schema
from typing_extensions import Required, TypedDict

from serving.api.unknown_fields import (
    LenientFlag,
    end_of_request,
    ignored_fields_warnings,
    is_lenient,
    unknown_field,
)

MAX_BATCH = 10_000
"""Most leads or customers in one request."""
MAX_ACTIVITIES_PER_LEAD = 10_000
MAX_ORDERS_PER_CUSTOMER = 10_000
MAX_HORIZON_DAYS = 3_650
MAX_FREQUENCY = 1_000_000
"""Most repeat purchases (``frequency``) a customer may have: beyond any real customer, far below where the
CLV model's arithmetic overflows (a 64-bit integer from 2**63, nonsense such as ``-0.0`` purchases long before)."""
MAX_DAYS = 36_500
"""Longest span in days (``recency_days``, ``age_days``): 100 years."""
MAX_AMOUNT = 1e9
"""Largest amount of money (``amount``, ``monetary_value``): the import's default, kept equal by a test."""
MAX_DURATION_SECONDS = 604_800
"""Longest engagement time of one activity (``duration_seconds``): a week."""
EARLIEST = datetime(1970, 1, 1)
LATEST = datetime(2200, 1, 1)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([Tt ].*)?")
TIME_EXPECTED = "an ISO 8601 date or date-time between 1970-01-01 and 2200-01-01, such as 2024-05-01T09:30:00Z"

STRICT = ConfigDict(strict=True, allow_inf_nan=False, hide_input_in_errors=True, extra="allow",
                    json_schema_extra={"additionalProperties": False})
"""No type coercion, no NaN/Infinity, and request values never copied into error messages or logs (except an
unknown activity type, an event name the client needs to see: see :mod:`serving.api.service`). Unknown
fields go to each object's ``extra_items`` / ``__pydantic_extra__`` validator (:func:`unknown_field`), which
refuses them unless the request is lenient; their names are in the error's location, as pydantic reports them."""

LEAD_FIELDS: tuple[str, ...] = ("lead_id", "created_at", "source_channel", "campaign", "country", "industry",
                                "company_size", "job_seniority", "email_domain_type", "activities")
ACTIVITY_FIELDS: tuple[str, ...] = ("activity_type", "occurred_at", "channel", "content_id", "duration_seconds")
ORDER_FIELDS: tuple[str, ...] = ("ordered_at", "amount")
CUSTOMER_FIELDS: tuple[str, ...] = ("customer_id", "frequency", "recency_days", "age_days", "monetary_value", "orders")
SCORE_LEADS_FIELDS: tuple[str, ...] = ("lenient", "leads", "as_of")
PREDICT_CLV_FIELDS: tuple[str, ...] = ("lenient", "customers", "horizon_days", "discount_rate", "as_of")
ScoreLeadsExtra = unknown_field("the request", SCORE_LEADS_FIELDS)
PredictCLVExtra = unknown_field("the request", PREDICT_CLV_FIELDS)
CustomerExtra = unknown_field("a customer", CUSTOMER_FIELDS)
OrderExtra = unknown_field("an order", ORDER_FIELDS)


def _iso_text(value: Any) -> Any:
    if not isinstance(value, str) or not _ISO_DATE.match(value.strip()):
        raise PydanticCustomError("iso_datetime", "expected " + TIME_EXPECTED)
    return value.strip()


def _naive_utc(value: datetime) -> datetime:
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    if not EARLIEST <= value < LATEST:
        raise PydanticCustomError("datetime_range", "must be between 1970-01-01 and 2200-01-01")
    return value


UtcTime = Annotated[datetime, Field(strict=False), BeforeValidator(_iso_text), AfterValidator(_naive_utc)]
"""A point in time sent as ISO 8601 text, held as naive UTC like every time in the CRM."""


def _with_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


UtcTimeOut = Annotated[datetime, AfterValidator(_with_utc)]
"""A time in a response: UTC, written with its ``Z`` (RFC 3339)."""
IsoTime = Annotated[str, Field(min_length=10, max_length=40, json_schema_extra={"format": "date-time"})]
"""ISO 8601 text, parsed many at once when the request is scored (:func:`serving.api.request_times.utc_times`: a
1,000-lead request carries ~40,000 activity times, and a per-value check here would cost more)."""
Id = Annotated[str, Field(min_length=1, max_length=64)]
Name = Annotated[str, Field(max_length=64)]
Amount = Annotated[float, Field(ge=0, le=MAX_AMOUNT)]
Days = Annotated[float, Field(ge=0, le=MAX_DAYS)]


def _first_repeat(ids: list[str]) -> tuple[int, int] | None:
    """Indexes (first, repeat) of the first id seen twice, or None."""
    seen: dict[str, int] = {}
    for index, value in enumerate(ids):
        if value in seen:
            return seen[value], index
        seen[value] = index
    return None


def _activity_types_enum(schema: dict[str, Any]) -> None:
    from features.crm.schema import ACTIVITY_TYPES  # sqlalchemy: not at import (BentoML's supervisor imports us)

    schema["enum"] = list(ACTIVITY_TYPES)


@with_config(STRICT)
class Activity(TypedDict, total=False, extra_items=unknown_field("an activity", ACTIVITY_FIELDS)):
    """One behaviour event of a lead, as in the CRM's ``activities`` table."""

    activity_type: Required[Annotated[str, Field(min_length=1, max_length=32, json_schema_extra=_activity_types_enum,
                                                 description="One of the CRM's activity types, e.g. page_view, "
                                                             "email_click, demo_request.")]]
    occurred_at: Required[IsoTime]
    channel: Name | None
    content_id: Annotated[str, Field(max_length=128)] | None
    duration_seconds: Annotated[float, Field(ge=0, le=MAX_DURATION_SECONDS)] | None


@dataclass(frozen=True, slots=True)
class LeadActivities:
    """A lead's activities as parallel lists, in the order sent: type, time text, duration (None: not sent).

    Sent as a list of :class:`Activity` objects and validated item by item as such; each lead's list is
    then turned into columns at once, while its objects are still in the CPU's cache. A 1,000-lead
    request carries ~45,000 activities: each later pass over their mappings cost 5-8 ms, most of it cache
    misses, and freeing them at the end of the request another ~3 ms. ``channel`` and ``content_id`` are
    checked but not kept: the lead features do not use them (nor does the batch job). ``ignored`` lists
    the (position, field) of unknown fields a lenient request sent (always empty otherwise: they are a 400).
    """

    activity_type: list[str]
    occurred_at: list[str]
    duration_seconds: list[float | None]
    ignored: tuple[tuple[int, str], ...] = ()

    def __len__(self) -> int:
        return len(self.occurred_at)

    @classmethod
    def from_mappings(cls, activities: list[Activity]) -> LeadActivities:
        """Columns of validated activity mappings."""
        ignored = ()
        if is_lenient():
            known = frozenset(ACTIVITY_FIELDS)
            ignored = tuple((position, name) for position, activity in enumerate(activities)
                            for name in activity.keys() - known)
        return cls(list(map(itemgetter("activity_type"), activities)),
                   list(map(itemgetter("occurred_at"), activities)),
                   list(map(dict.get, activities, repeat("duration_seconds"))), ignored)

    def mappings(self) -> list[dict[str, Any]]:
        """The activities as mappings of the fields kept (how a request is written back out)."""
        return [{"activity_type": kind, "occurred_at": at, "duration_seconds": duration}
                for kind, at, duration in zip(self.activity_type, self.occurred_at, self.duration_seconds,
                                              strict=True)]

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        items = handler.generate_schema(Annotated[list[Activity], Field(max_length=MAX_ACTIVITIES_PER_LEAD)])
        return core_schema.no_info_after_validator_function(
            cls.from_mappings, items, serialization=core_schema.plain_serializer_function_ser_schema(cls.mappings))


NO_ACTIVITIES = LeadActivities([], [], [])


@with_config(STRICT)
class Lead(TypedDict, total=False, extra_items=unknown_field("a lead", LEAD_FIELDS)):
    """A lead as the CRM holds it (the ``leads`` columns a model may use) with its activities."""

    lead_id: Required[Id]
    created_at: Required[IsoTime]
    source_channel: Required[Annotated[str, Field(min_length=1, max_length=64)]]
    campaign: Annotated[str, Field(max_length=128)] | None
    country: Name | None
    industry: Name | None
    company_size: Annotated[str, Field(max_length=32)] | None
    job_seniority: Annotated[str, Field(max_length=32)] | None
    email_domain_type: Annotated[str, Field(max_length=32)] | None
    activities: LeadActivities


class ScoreLeadsRequest(BaseModel):
    """Leads to score as of ``as_of`` (default: when the request arrives); activities after it are ignored.

    Leads are plain mappings (validated, not turned into objects) and each lead's activities become
    :class:`LeadActivities` columns: a 1,000-lead request carries tens of thousands of activities.
    Their times and types are checked for syntax here and parsed or looked up, all at once, when the
    request is scored (see :data:`IsoTime`). ``lenient`` must stay the first field
    (:mod:`serving.api.unknown_fields`).
    """

    model_config = STRICT

    lenient: LenientFlag = False
    leads: Annotated[list[Lead], Field(min_length=1, max_length=MAX_BATCH)]
    as_of: UtcTime | None = None
    __pydantic_extra__: dict[str, ScoreLeadsExtra]
    _ignored: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> ScoreLeadsRequest:
        end_of_request()
        repeated = _first_repeat([lead["lead_id"] for lead in self.leads])
        if repeated is not None:
            raise PydanticCustomError("duplicate_id", "leads[{second}].lead_id repeats leads[{first}].lead_id; "
                                      "send each lead once", {"first": repeated[0], "second": repeated[1]})
        if self.as_of is None:
            self.as_of = datetime.now(timezone.utc).replace(tzinfo=None)
        if self.lenient:
            self._ignored = ignored_fields_warnings(self._drop_unknown_fields())
        return self

    def _drop_unknown_fields(self) -> list[tuple[str, str, str]]:
        """Remove the unknown fields a lenient request sent; returns them as (kind, path, name)."""
        found = [("request", "", name) for name in self.__pydantic_extra__ or {}]
        self.__pydantic_extra__ = {}
        known = frozenset(LEAD_FIELDS)
        for index, lead in enumerate(self.leads):
            for name in lead.keys() - known:
                del lead[name]
                found.append(("lead", f"leads[{index}]", name))
            activities = lead.get("activities")
            for position, name in activities.ignored if activities is not None else ():
                found.append(("activity", f"leads[{index}].activities[{position}]", name))
        return found

    @property
    def ignored_fields(self) -> list[str]:
        """Warnings naming the unknown fields a lenient request sent (ignored); empty otherwise."""
        return self._ignored


class Reasons(BaseModel):
    """The top factors raising (``up``) and lowering (``down``) a score against the average lead, strongest first."""

    up: list[str]
    down: list[str]


class LeadScore(BaseModel):
    """The score of one lead; ``expected_value`` = probability x predicted value of a new customer from its channel."""

    lead_id: str
    score: int = Field(description="Likelihood to convert as a percentile, 1-99: the share of the model's reference "
                                   "leads less likely to convert (see the README, Lead scoring).")
    probability: float = Field(description="Calibrated probability of converting within the model's horizon.")
    band: str = Field(description="A (best) to D.")
    reasons: Reasons
    expected_value: float | None = Field(description="probability x the CLV model's value of a new customer from "
                                                     "the lead's source_channel (overall value for unknown channels); "
                                                     "null without a CLV model.")
    model_version: str


class ScoreLeadsResponse(BaseModel):
    """Scores in the order the leads were sent, and what may mislead about them."""

    as_of: UtcTimeOut
    scores: list[LeadScore]
    warnings: list[str] = Field(default_factory=list, description=(
        "What may make the scores mislead: an as_of long after the end of the model's training data, unknown "
        "fields ignored in a lenient request. Empty when there is nothing to say."))


class Order(BaseModel):
    """One order of a customer."""

    model_config = STRICT

    ordered_at: UtcTime
    amount: Amount
    __pydantic_extra__: dict[str, OrderExtra]


class Customer(BaseModel):
    """A customer as an RFM summary in days, or as the raw list of ``orders`` (then leave the summary out).

    ``frequency``: repeat purchase days; ``recency_days``: first to last purchase; ``age_days``:
    first purchase to now; ``monetary_value``: mean value of the repeat purchases.
    """

    model_config = STRICT

    customer_id: Id
    frequency: Annotated[int, Field(ge=0, le=MAX_FREQUENCY)] | None = None
    recency_days: Days | None = None
    age_days: Days | None = None
    monetary_value: Amount | None = None
    orders: Annotated[list[Order], Field(min_length=1, max_length=MAX_ORDERS_PER_CUSTOMER)] | None = None
    __pydantic_extra__: dict[str, CustomerExtra]

    @model_validator(mode="after")
    def _summary_or_orders(self) -> Customer:
        summary = {"frequency": self.frequency, "recency_days": self.recency_days, "age_days": self.age_days,
                   "monetary_value": self.monetary_value}
        given = [k for k, v in summary.items() if v is not None]
        if self.orders is not None:
            if given:
                raise PydanticCustomError("summary_and_orders", "give either orders or the RFM summary, not both "
                                          "(got orders and {given})", {"given": ", ".join(given)})
            return self
        if len(given) < len(summary):
            missing = [k for k in summary if k not in given]
            raise PydanticCustomError("missing_summary", "missing {missing}: give frequency, recency_days, "
                                      "age_days and monetary_value, or orders", {"missing": ", ".join(missing)})
        if self.recency_days > self.age_days:
            raise PydanticCustomError("recency_after_age", "recency_days must be <= age_days")
        if self.frequency == 0 and self.recency_days != 0:
            raise PydanticCustomError("recency_without_repeat", "recency_days must be 0 when frequency is 0")
        return self


class PredictCLVRequest(BaseModel):
    """Customers to value over ``horizon_days`` at an annual ``discount_rate`` (both default to the model's).

    ``as_of`` is the observation end for customers sent as orders (default: when the request arrives).
    ``lenient`` must stay the first field (:mod:`serving.api.unknown_fields`).
    """

    model_config = STRICT

    lenient: LenientFlag = False
    customers: Annotated[list[Customer], Field(min_length=1, max_length=MAX_BATCH)]
    horizon_days: Annotated[float, Field(ge=1, le=MAX_HORIZON_DAYS)] | None = None
    discount_rate: Annotated[float, Field(ge=0, le=1, description="Annual rate, e.g. 0.1.")] | None = None
    as_of: UtcTime | None = None
    __pydantic_extra__: dict[str, PredictCLVExtra]
    _ignored: list[str] = PrivateAttr(default_factory=list)

    @property
    def ignored_fields(self) -> list[str]:
        """Warnings naming the unknown fields a lenient request sent (ignored); empty otherwise."""
        return self._ignored

    def _drop_unknown_fields(self) -> list[tuple[str, str, str]]:
        """Remove the unknown fields a lenient request sent; returns them as (kind, path, name)."""
        found = [("request", "", name) for name in self.__pydantic_extra__ or {}]
        self.__pydantic_extra__ = {}
        for index, customer in enumerate(self.customers):
            found += [("customer", f"customers[{index}]", name) for name in customer.__pydantic_extra__ or {}]
            customer.__pydantic_extra__ = {}
            for position, order in enumerate(customer.orders or ()):
                found += [("order", f"customers[{index}].orders[{position}]", name)
                          for name in order.__pydantic_extra__ or {}]
                order.__pydantic_extra__ = {}
        return found

    @model_validator(mode="after")
    def _consistent(self) -> PredictCLVRequest:
        end_of_request()
        if self.lenient:
            self._ignored = ignored_fields_warnings(self._drop_unknown_fields())
        repeat = _first_repeat([customer.customer_id for customer in self.customers])
        if repeat is not None:
            raise PydanticCustomError("duplicate_id", "customers[{second}].customer_id repeats "
                                      "customers[{first}].customer_id; send each customer once",
                                      {"first": repeat[0], "second": repeat[1]})
        as_of = self.as_of or datetime.now(timezone.utc).replace(tzinfo=None)
        for index, customer in enumerate(self.customers):
            for position, order in enumerate(customer.orders or ()):
                if order.ordered_at > as_of:
                    raise PydanticCustomError("order_after_as_of", "customers[{index}].orders[{position}].ordered_at "
                                              "is after as_of ({as_of})",
                                              {"index": index, "position": position, "as_of": as_of.isoformat()})
        self.as_of = as_of
        return self


class CustomerValue(BaseModel):
    """Predicted value of one customer over the horizon."""

    customer_id: str
    expected_purchases: float
    p_alive: float = Field(description="Probability the customer is still active.")
    expected_order_value: float | None = Field(description="Gamma-Gamma expected order value; null without one.")
    clv: float | None = Field(description="Discounted value over the horizon; null without order values.")
    segment: str
    model_version: str


class PredictCLVResponse(BaseModel):
    """Values in the order the customers were sent."""

    horizon_days: float
    discount_rate: float
    customers: list[CustomerValue]
    warnings: list[str] = Field(default_factory=list, description=(
        "Unknown fields ignored in a lenient request. Empty when there is nothing to say."))


class ModelFacts(BaseModel):
    """A loaded model: registry name and version, the run that trained it, when, and its headline metrics."""

    name: str
    uri: str
    version: str
    run_id: str | None
    trained_at: UtcTimeOut | None
    metrics: dict[str, float]


class MissingModel(BaseModel):
    """A model the service could not load, and why."""

    name: str
    uri: str
    reason: str


class ModelsResponse(BaseModel):
    """What the service serves, and what it could not load."""

    models: list[ModelFacts]
    missing: list[MissingModel]
