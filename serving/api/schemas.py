"""Request and response bodies of the scoring API: strict about what comes in, explicit about what goes out.

Every field is typed strictly (a number sent as a string is a wrong type, not a guess) and checked
where it enters: NaN and Infinity are refused, counts and amounts must be >= 0 and within sane upper bounds
(:data:`MAX_FREQUENCY` purchases, :data:`MAX_DAYS` days, :data:`MAX_AMOUNT` of money,
:data:`~serving.api.activities.MAX_DURATION_SECONDS` per activity: a number the models cannot hold is a 400, never
a 500), recency cannot exceed age, lists cannot be empty or longer than :data:`MAX_BATCH`. A bad request gets a
400 whose ``detail`` gives, per problem, its location (``["leads", 3, "created_at"]``: field and item index)
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
from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, PrivateAttr, model_validator, with_config
from pydantic_core import PydanticCustomError
from typing_extensions import Required, TypedDict

from serving.api.activities import COLUMNS, ColumnarActivities, IsoTime, LeadActivities, Name
from serving.api.unknown_fields import STRICT, LenientFlag, end_of_request, ignored_fields_warnings, unknown_field

MAX_BATCH = 10_000
"""Most leads or customers in one request."""
MAX_ORDERS_PER_CUSTOMER = 10_000
MAX_HORIZON_DAYS = 3_650
MAX_FREQUENCY = 1_000_000
"""Most repeat purchases (``frequency``) a customer may have: beyond any real customer, far below where the
CLV model's arithmetic overflows (a 64-bit integer from 2**63, nonsense such as ``-0.0`` purchases long before)."""
MAX_DAYS = 36_500
"""Longest span in days (``recency_days``, ``age_days``): 100 years."""
MAX_AMOUNT = 1e9
"""Largest amount of money (``amount``, ``monetary_value``): the import's default, kept equal by a test."""
EARLIEST = datetime(1970, 1, 1)
LATEST = datetime(2200, 1, 1)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([Tt ].*)?")
TIME_EXPECTED = "an ISO 8601 date or date-time between 1970-01-01 and 2200-01-01, such as 2024-05-01T09:30:00Z"

LEAD_FIELDS: tuple[str, ...] = ("lead_id", "created_at", "source_channel", "campaign", "country", "industry",
                                "company_size", "job_seniority", "email_domain_type", "activities", COLUMNS)
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
Id = Annotated[str, Field(min_length=1, max_length=64)]
Amount = Annotated[float, Field(ge=0, le=MAX_AMOUNT)]
Days = Annotated[float, Field(ge=0, le=MAX_DAYS)]


def first_repeat(ids: list[str]) -> tuple[int, int] | None:
    """Indexes (first, repeat) of the first id seen twice, or None."""
    seen: dict[str, int] = {}
    for index, value in enumerate(ids):
        if value in seen:
            return seen[value], index
        seen[value] = index
    return None


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
    activity_columns: ColumnarActivities


class ScoreLeadsRequest(BaseModel):
    """Leads to score as of ``as_of`` (default: when the request arrives); activities after it are ignored.

    Leads are plain mappings (validated, not turned into objects) and each lead's activities become
    :class:`LeadActivities` columns: a 1,000-lead request carries tens of thousands of activities. A lead may send
    them as columns instead (``activity_columns``, :mod:`serving.api.activities`): they are then its ``activities``.
    Their times and types are checked for syntax here and parsed or looked up, all at once, when the
    request is scored (see :data:`~serving.api.activities.IsoTime`). ``lenient`` must stay the first field
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
        repeated = first_repeat([lead["lead_id"] for lead in self.leads])
        if repeated is not None:
            raise PydanticCustomError("duplicate_id", "leads[{second}].lead_id repeats leads[{first}].lead_id; "
                                      "send each lead once", {"first": repeated[0], "second": repeated[1]})
        for index, lead in enumerate(self.leads):
            if COLUMNS in lead:
                if "activities" in lead:
                    raise PydanticCustomError("activities_and_columns", "leads[{index}] has both activities and "
                                              "activity_columns: send its activities one way", {"index": index})
                lead["activities"] = lead.pop(COLUMNS)
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
            kind = COLUMNS if activities is not None and activities.columns else "activity"
            for where, name in activities.ignored if activities is not None else ():
                found.append((kind, f"leads[{index}].{where}", name))
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
        repeat = first_repeat([customer.customer_id for customer in self.customers])
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
