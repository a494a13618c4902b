"""The scoring API: one BentoML service for lead scores and customer value, served from the MLflow champions.

Endpoints
---------
``POST /score_leads``
    Leads as the CRM holds them, each with its activities. Features are computed by the same
    ``features`` code as in training, as of ``as_of`` (default: when the request arrives), and the
    leads are scored as the nightly batch job scores them (:func:`training.leads.value.lead_values`).
    Per lead: ``score`` (1-99), ``probability``, ``band``, ``reasons``, ``expected_value``,
    ``model_version``; per response, ``warnings`` (:func:`lead_scores`).
``POST /predict_clv``
    Customers as an RFM summary in days, or as their raw orders (summarised by
    :func:`features.rfm.rfm_summary` as of ``as_of``). Per customer: ``expected_purchases``,
    ``p_alive``, ``expected_order_value``, ``clv``, ``segment``, ``model_version``.
``GET /models``
    Name, version, run id, training time and headline metrics of each loaded model, and what is missing.
``GET /livez``, ``/readyz``, ``/metrics``
    BentoML's probes and Prometheus metrics; ``/readyz`` names any model that could not be loaded.

Value-weighted lead score
-------------------------
``expected_value = probability x V(source_channel)``: the calibrated probability that the lead
converts, times the CLV model's predicted value of a new customer acquired through the lead's
``source_channel``. ``V`` is fixed when the CLV model is trained: the mean CLV (over the model's own
horizon and discount rate) it predicts for the customers acquired through that channel; channels
with too few customers, and channels it has never seen, get the mean over all customers
(:func:`training.leads.value.expected_values`). Sales can then rank leads by the value they are likely
to bring, not only by their likelihood to convert. ``expected_value`` is null when no CLV model is
loaded.

Safety and load (:mod:`serving.api.limits`, :mod:`serving.api.large_requests`): 401 without ``Authorization:
Bearer $LEADVAL_API_KEY`` when that is set (probes excepted); 413 for bodies over ``LEADVAL_MAX_BODY_BYTES``
(before they are read) or requests over ``LEADVAL_MAX_REQUEST_ACTIVITIES`` / ``_ORDERS``; 503 with
``Retry-After`` for a large request (1 MiB or more) past ``LEADVAL_MAX_CONCURRENT_REQUESTS`` in flight; 408 for a
body slower than ``LEADVAL_BODY_TIMEOUT_S``; 400 naming field and item for bad input, logged in one line
(:mod:`serving.api.error_log`). The largest requests are validated and scored in a worker thread, so the probes
answer meanwhile. Bodies are never logged; the server binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import gc
import json
from itertools import chain, repeat
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any

import bentoml
from pydantic_core import PydanticCustomError, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from features.errors import InvalidInput
from serving.api import error_log
from serving.api.activities import NO_ACTIVITIES
from serving.api.champion_handover import worker_champions
from serving.api.champions import LoadedModel, NothingToServe, ServedModels, report_startup_failure
from serving.api.large_requests import (
    activity_count,
    off_the_loop,
    order_count,
    parse_request_bodies,
    too_many_activities,
    too_many_orders,
)
from serving.api.limits import LimitsConfig, RequestLimits, close_silent_connections
from serving.api.openapi_document import OpenAPIDocument
from serving.api.request_times import utc_times
from serving.api.schemas import (
    TIME_EXPECTED,
    CustomerValue,
    MissingModel,
    ModelFacts,
    ModelsResponse,
    PredictCLVRequest,
    PredictCLVResponse,
    ScoreLeadsRequest,
    ScoreLeadsResponse,
)
from training.registry import CLV_MODEL_NAME, LEAD_MODEL_NAME, champion_uri

if TYPE_CHECKING:
    from datetime import datetime

    import numpy as np
    import pandas as pd

    from features.lead_features import LeadFeatureArrays
    from serving.api.activities import LeadActivities

# pandas, numpy and the models' modules are imported where they are used: BentoML's supervisor process
# imports this module only to read the service definition, and every second of imports there delays
# start-up.

STALE_MODEL_DAYS = 90
"""A request whose as-of is more than this many days after the end of the model's training data gets a warning."""


def _problem(title: str, location: tuple[str | int, ...], message: str) -> ValidationError:
    """A 400 in the same shape as the request validation errors: location and message, no input value."""
    return ValidationError.from_exception_data(
        title, [{"type": PydanticCustomError("invalid_input", message), "loc": location, "input": None}],
        hide_input=True,
    )


def _unavailable(name: str, reason: str) -> JSONResponse:
    """503 for an endpoint whose model is not loaded, naming it and why."""
    return JSONResponse({"error": f"{champion_uri(name)} is not loaded: {reason}"}, status_code=503)


def customer_frame(request: PredictCLVRequest) -> pd.DataFrame:
    """The CLV model's input (RFM in days, ``INPUT_COLUMNS``) in request order.

    Customers sent as orders are summarised by :func:`features.rfm.rfm_summary` as of ``request.as_of``,
    exactly as the batch job summarises the CRM's orders.
    """
    import numpy as np
    import pandas as pd

    from features.rfm import rfm_summary
    from training.clv.predict import rfm_in_days

    rows = {c.customer_id: (c.frequency, c.recency_days, c.age_days, c.monetary_value)
            for c in request.customers if c.orders is None}
    with_orders = [c for c in request.customers if c.orders is not None]
    if with_orders:
        orders = pd.DataFrame({
            "customer_id": [c.customer_id for c in with_orders for _ in c.orders],
            "ordered_at": pd.to_datetime([o.ordered_at for c in with_orders for o in c.orders]),
            "amount": [o.amount for c in with_orders for o in c.orders],
        })
        rfm = rfm_in_days(rfm_summary(orders, request.as_of, time_unit="D"), "D")
        rows.update(zip(rfm["customer_id"], zip(rfm["frequency"], rfm["recency_days"], rfm["age_days"],
                                                rfm["monetary_value"], strict=True), strict=True))
    ids = [c.customer_id for c in request.customers]
    frequency, recency, age, monetary = zip(*(rows[i] for i in ids), strict=True)
    return pd.DataFrame({
        "customer_id": np.array(ids, dtype=object),
        "frequency": np.array(frequency, dtype=np.int64),
        "recency_days": np.array(recency, dtype=np.float64),
        "age_days": np.array(age, dtype=np.float64),
        "monetary_value": np.array(monetary, dtype=np.float64),
    })


def _activity_location(activities: list[LeadActivities], owner: np.ndarray, flat: int, name: str
                       ) -> tuple[str | int, ...]:
    """Where the request's ``flat``-th activity's field ``name`` was sent (``owner``: each activity's lead)."""
    import numpy as np

    lead_index = int(owner[flat])
    return activities[lead_index].location(lead_index, flat - int(np.searchsorted(owner, lead_index)), name)


def _unknown_activity_type(value: str) -> str:
    """The 400 message for an activity type the CRM does not know: the value, the allowed ones, a near match.

    The value is quoted (at most 32 characters, the schema's limit): an event name, which the client needs
    to see to find its typo; no other request value is ever quoted.
    """
    import difflib

    from features.crm.schema import ACTIVITY_TYPES

    near = difflib.get_close_matches(value.lower(), ACTIVITY_TYPES, n=1, cutoff=0.75)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return f"unknown activity type {value!r}{hint}; expected one of: {', '.join(ACTIVITY_TYPES)}"


def request_features(request: ScoreLeadsRequest) -> LeadFeatureArrays:
    """The request's leads' features as of ``request.as_of``, by the feature code the batch job uses.

    No DataFrame is built: times are parsed and activity types looked up in one go each, and the events
    go to :func:`features.lead_features.behaviour_features` as arrays. An unreadable time, an activity type
    the CRM does not know, or a lead created after ``as_of``, is a 400 naming the lead (and activity) index.
    """
    import numpy as np

    from features.lead_features import (
        PROFILE_FEATURES,
        LeadFeatureArrays,
        activity_type_positions,
        as_of_timestamp,
        behaviour_features,
    )

    leads = request.leads
    activities = list(map(dict.get, leads, repeat("activities"), repeat(NO_ACTIVITIES)))
    owner = np.repeat(np.arange(len(leads)), list(map(len, activities)))
    stamps, bad = utc_times(list(map(itemgetter("created_at"), leads))
                            + list(chain.from_iterable(map(attrgetter("occurred_at"), activities))))
    if bad is not None and bad < len(leads):
        raise _problem("score_leads", ("leads", bad, "created_at"), "expected " + TIME_EXPECTED)
    if bad is not None:
        raise _problem("score_leads", _activity_location(activities, owner, bad - len(leads), "occurred_at"),
                       "expected " + TIME_EXPECTED)
    types = list(chain.from_iterable(map(attrgetter("activity_type"), activities)))
    type_positions = activity_type_positions(types)
    if len(type_positions) and type_positions.min() < 0:
        flat = int(np.argmax(type_positions < 0))
        raise _problem("score_leads", _activity_location(activities, owner, flat, "activity_type"),
                       _unknown_activity_type(types[flat]))
    at = as_of_timestamp(request.as_of).value
    created = stamps[: len(leads)].view("int64")
    late = created > at
    if late.any():
        index = int(np.argmax(late))
        raise _problem("score_leads", ("leads", index, "created_at"),
                       f"leads[{index}].created_at is after as_of ({request.as_of.isoformat()}): "
                       "a lead cannot be scored before it exists")
    duration = np.array(list(chain.from_iterable(map(attrgetter("duration_seconds"), activities))),
                        dtype=np.float64)
    return LeadFeatureArrays(
        lead_ids=np.array([lead["lead_id"] for lead in leads], dtype=object),
        profile=np.array([[lead.get(column) for column in PROFILE_FEATURES] for lead in leads], dtype=object),
        behaviour=behaviour_features(at, created, owner, type_positions, stamps[len(leads):].view("int64"),
                                     duration),
    )


def stale_model_warnings(model: LoadedModel, as_of: datetime) -> list[str]:
    """A warning when ``as_of`` is more than :data:`STALE_MODEL_DAYS` after the end of the model's training data
    (none when the model does not record that end)."""
    from datetime import timedelta

    if model.data_end is None or as_of - model.data_end <= timedelta(days=STALE_MODEL_DAYS):
        return []
    days = (as_of - model.data_end).days
    return [f"stale model: as_of ({as_of:%Y-%m-%d %H:%M}) is {days:,} days after the end of the data "
            f"{model.name} v{model.version} was trained on ({model.data_end:%Y-%m-%d %H:%M}); leads and what "
            "makes them convert may have changed since, so read the scores with care and retrain the model "
            "(leadval train leads) on recent data"]


def lead_scores(served: ServedModels, request: ScoreLeadsRequest) -> ScoreLeadsResponse:
    """The scores of a validated request (the lead-scoring model must be loaded), with its ``warnings``: a
    stale model (:func:`stale_model_warnings`) and the unknown fields a lenient request sent.

    Scored by :func:`training.leads.value.lead_values`, as the nightly batch job scores.
    """
    from training.leads.value import lead_values

    model, clv = served.loaded[LEAD_MODEL_NAME], served.get(CLV_MODEL_NAME)
    features = request_features(request)
    try:
        scores, values = lead_values(model.model, clv.model if clv else None, features)
    except InvalidInput as exc:
        raise _problem("score_leads", ("leads",), str(exc)) from None
    rows = zip(features.lead_ids.tolist(), scores.score.tolist(), scores.probability.tolist(),
               scores.band.tolist(), scores.reasons.lists(), values, strict=True)
    warnings = stale_model_warnings(model, request.as_of) + request.ignored_fields
    return ScoreLeadsResponse.model_validate({"as_of": request.as_of, "scores": [
        {"lead_id": lead_id, "score": score, "probability": p, "band": band, "reasons": reasons,
         "expected_value": value, "model_version": model.version}
        for lead_id, score, p, band, reasons, value in rows
    ], "warnings": warnings})


def customer_values(served: ServedModels, request: PredictCLVRequest) -> PredictCLVResponse:
    """The values of a validated request (the CLV model must be loaded)."""
    from features.json_ready import json_ready  # pandas: not at import (BentoML's supervisor imports this module)
    from training.clv.predict import OUTPUT_COLUMNS, predict_clv

    model = served.loaded[CLV_MODEL_NAME]
    params = model.model
    horizon = params.horizon_days if request.horizon_days is None else request.horizon_days
    rate = params.discount_rate if request.discount_rate is None else request.discount_rate
    try:
        values = predict_clv(params, customer_frame(request), horizon, rate)
    except InvalidInput as exc:
        raise _problem("predict_clv", ("customers",), str(exc)) from None
    columns = zip(*(values[c].tolist() for c in ("customer_id", *OUTPUT_COLUMNS)), strict=True)
    return PredictCLVResponse(horizon_days=horizon, discount_rate=rate, customers=[
        CustomerValue(customer_id=cid, expected_purchases=purchases, p_alive=alive,
                      expected_order_value=json_ready(order_value), clv=json_ready(clv),
                      segment=segment, model_version=model.version)
        for cid, purchases, alive, order_value, clv, segment in columns
    ], warnings=request.ignored_fields)


WARM_UP_LEADS = {
    "leads": [{"lead_id": "warm-up", "created_at": "2024-01-01", "source_channel": "warm-up",
               "activities": [{"activity_type": kind, "occurred_at": "2024-01-02T10:00:00Z", "duration_seconds": 30.0}
                              for kind in ("page_view", "email_sent", "email_open", "demo_request")]}],
    "as_of": "2024-02-01",
}
WARM_UP_CUSTOMERS = {
    "customers": [{"customer_id": "summary", "frequency": 1, "recency_days": 5.0, "age_days": 9.0,
                   "monetary_value": 10.0},
                  {"customer_id": "orders", "orders": [{"ordered_at": "2024-01-01", "amount": 10.0}]}],
    "as_of": "2024-02-01",
}


async def _models_page(_: Request) -> Response:
    service = bentoml.get_current_service()
    return JSONResponse(service.models_report().model_dump(mode="json"))


models_routes = Starlette(routes=[Route("/models", _models_page, methods=["GET"])])


@bentoml.service(
    name="leadval",
    http={"host": "127.0.0.1", "port": 3000},
    workers=1,
    # BentoML arms a timer per request that holds the request's context until the timeout passes, even
    # when the answer left long ago: a 60 s timeout keeps ~60 s of requests alive and makes each full
    # garbage collection walk them (stalls of 100+ ms). Scoring is CPU-bound, so a timeout cannot cut it
    # short anyway; 15 s is ample for a 10,000-lead request.
    traffic={"timeout": 15},
    # No OpenTelemetry span per request (traces are not sampled unless configured, and each span adds
    # ~15 objects the timer above keeps alive). Re-enable with tracing.excluded_urls=[] in
    # BENTOML_CONFIG_OVERRIDES together with an exporter.
    tracing={"excluded_urls": [".*"]},
    envs=[
        {"name": "OPENBLAS_NUM_THREADS", "value": "1"},
        {"name": "OMP_NUM_THREADS", "value": "1"},
    ],
)
@bentoml.asgi_app(models_routes, path="/")
class LeadvalService:
    """Lead scores and customer lifetime value from the MLflow champions (see the module docstring)."""

    def __init__(self) -> None:
        error_log.install()  # a bad request logs one line, not a traceback
        try:
            self._start()
        except Exception as exc:
            # BentoML restarts a worker whose start-up fails, for ever: tell ``leadval serve``, which stops.
            report_startup_failure(exc)
            raise

    def _start(self) -> None:
        import pandas as pd

        self.served: ServedModels = worker_champions()
        self.limits = LimitsConfig.from_environment()
        close_silent_connections(self.limits.body_timeout_s)
        # pandas 3 infers its ``str`` dtype for every Index and column built from Python strings (the CLV
        # request's frame and its segments), and with the default arrow storage each such build, lookup
        # and insertion goes through pyarrow: ~0.3-0.9 ms of a one-customer request's ~3 ms. Python
        # storage makes them cheap, with the same values. (The lead path builds no such frames.)
        pd.set_option("mode.string_storage", "python")
        self.warm_up()
        # Everything loaded so far lives as long as the process: keep it out of the garbage collector's
        # full collections, which otherwise walk ~400,000 objects and stall a request for 100-300 ms. Only the
        # young generations are collected first: a full collection here found no garbage and took 0.3-0.6 s.
        gc.collect(1)
        gc.freeze()

    def warm_up(self) -> None:
        """Score a made-up lead and customers once, so lazy imports and caches exist before ``gc.freeze``.

        A model that fails it counts as missing, with why (its endpoint answers 503); with none left the
        service cannot start (:class:`NothingToServe`).
        """
        warm_ups = {LEAD_MODEL_NAME: lambda: lead_scores(self.served, ScoreLeadsRequest.model_validate(WARM_UP_LEADS)),
                    CLV_MODEL_NAME: lambda: customer_values(self.served,
                                                            PredictCLVRequest.model_validate(WARM_UP_CUSTOMERS))}
        for name, warm_up in warm_ups.items():
            model = self.served.get(name)
            if model is None:
                continue
            try:
                warm_up().model_dump_json()
            except Exception as exc:  # noqa: BLE001 - whatever it is, that model cannot be served
                reason = " ".join(str(exc).split())[:300] or type(exc).__name__
                loaded = {n: m for n, m in self.served.loaded.items() if n != name}
                missing = {**self.served.missing, name: f"version {model.version} failed its warm-up scoring: {reason}"}
                self.served = ServedModels(loaded=loaded, missing=missing)
        if not self.served.loaded:
            details = "; ".join(f"{champion_uri(n)}: {r}" for n, r in self.served.missing.items())
            raise NothingToServe(f"no model to serve: {details}")

    def readiness(self) -> dict[str, Any]:
        """What ``/readyz`` reports: the models served and the ones missing, with why."""
        return {"ready": bool(self.served.loaded), "serving": sorted(self.served.loaded),
                "missing": {champion_uri(n): r for n, r in self.served.missing.items()}}

    def models_report(self) -> ModelsResponse:
        """The ``GET /models`` body."""
        facts = [ModelFacts(name=m.name, uri=m.uri, version=m.version, run_id=m.run_id, trained_at=m.trained_at,
                            metrics=m.metrics) for m in self.served.loaded.values()]
        missing = [MissingModel(name=n, uri=champion_uri(n), reason=r) for n, r in self.served.missing.items()]
        return ModelsResponse(models=facts, missing=missing)

    @bentoml.api(route="/score_leads")
    async def score_leads(self, request: ScoreLeadsRequest, /) -> ScoreLeadsResponse:
        """Score leads (with their activities) as of ``as_of``; see the module docstring for expected_value.

        At most 10,000 leads, and LEADVAL_MAX_REQUEST_ACTIVITIES activities in all (default 300,000; over: 413).
        """
        if LEAD_MODEL_NAME not in self.served.loaded:
            return _unavailable(LEAD_MODEL_NAME, self.served.missing[LEAD_MODEL_NAME])
        too_many = too_many_activities(request, self.limits)
        if too_many is not None:
            return too_many
        return await off_the_loop(len(request.leads) + activity_count(request), lead_scores, self.served, request)

    @bentoml.api(route="/predict_clv")
    async def predict_clv(self, request: PredictCLVRequest, /) -> PredictCLVResponse:
        """Expected purchases, P(alive), expected order value, CLV and segment per customer.

        At most 10,000 customers, and LEADVAL_MAX_REQUEST_ORDERS orders in all (default 200,000; over: 413).
        """
        if CLV_MODEL_NAME not in self.served.loaded:
            return _unavailable(CLV_MODEL_NAME, self.served.missing[CLV_MODEL_NAME])
        too_many = too_many_orders(request, self.limits)
        if too_many is not None:
            return too_many
        return await off_the_loop(len(request.customers) + order_count(request), customer_values, self.served,
                                  request)


class ReadinessReport:
    """ASGI middleware: while a model is missing, ``GET /readyz`` answers 200 with what is served and missing.

    BentoML's own ``/readyz`` answers an empty 200; a service that lost one of its two models still
    serves the other, so it stays ready, and says which model is missing and why.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/readyz":
            try:
                service = bentoml.get_current_service()
            except bentoml.exceptions.BentoMLException:
                service = None
            if service is not None and service.served.missing:
                body = json.dumps(service.readiness()).encode()
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


parse_request_bodies(LeadvalService)
LeadvalService.add_asgi_middleware(RequestLimits)
LeadvalService.add_asgi_middleware(ReadinessReport)
LeadvalService.add_asgi_middleware(OpenAPIDocument)
