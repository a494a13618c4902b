"""msgspec's fast path for ``/score_leads`` bodies gives what pydantic gives, and takes nothing pydantic refuses.

Bodies pydantic refuses must be refused by msgspec too (they then go to pydantic, which words the 400), and a body
msgspec takes must give the request pydantic gives, value for value and type for type. Checked on hand-made edge
cases (duplicate keys, lone surrogates, lengths in code points, numbers at and past every limit, escapes) and on
bodies hypothesis draws by putting hostile JSON values into a valid request.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import AfterValidator, Field, ValidationError

from serving.api.activities import MAX_ACTIVITIES_PER_LEAD, MAX_DURATION_SECONDS, LeadActivities
from serving.api.fast_decoding import NotDecoded, decode_score_leads, msgspec_type
from serving.api.large_requests import FAST_DECODERS, read_body
from serving.api.schemas import MAX_BATCH, ScoreLeadsRequest

ACTIVITY = {"activity_type": "page_view", "occurred_at": "2024-03-02T11:00:00+01:00", "channel": "web",
            "content_id": "pricing", "duration_seconds": 40.0}
LEAD = {"lead_id": "L-1", "created_at": "2024-03-01T10:00:00Z", "source_channel": "paid_search", "campaign": None,
        "country": "DE", "industry": "software", "company_size": "51-200", "job_seniority": "manager",
        "email_domain_type": "business", "activities": [ACTIVITY, {"activity_type": "email_open",
                                                                   "occurred_at": "2024-03-03"}]}
COLUMNS = {"activity_type": ["page_view", "email_open"], "occurred_at": ["2024-03-02T11:00:00", "2024-03-03"],
           "channel": ["web", None], "duration_seconds": [40, None]}


def _body(**changes: Any) -> bytes:
    return json.dumps({"leads": [LEAD], "as_of": "2024-06-01"} | changes).encode()


def _lead(**changes: Any) -> dict[str, Any]:
    return {k: v for k, v in (LEAD | changes).items() if v is not ...}


def _typed(value: Any) -> Any:
    """``value`` with the type of every part beside it, so 5 and 5.0 (or True and 1) differ."""
    if isinstance(value, LeadActivities):
        return ("LeadActivities", _typed([value.activity_type, value.occurred_at, value.duration_seconds]),
                value.ignored, value.columns)
    if isinstance(value, dict):
        return {key: _typed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_typed(item) for item in value]
    return (type(value).__name__, value)


def _pydantic(body: bytes) -> ScoreLeadsRequest | None:
    try:
        return ScoreLeadsRequest.model_validate_json(body)
    except ValidationError:
        return None


def _msgspec(body: bytes) -> ScoreLeadsRequest | None:
    try:
        return decode_score_leads(body, ScoreLeadsRequest)
    except NotDecoded:
        return None


def assert_same_or_refused(body: bytes) -> ScoreLeadsRequest | None:
    """msgspec refuses ``body`` or gives pydantic's request; returns msgspec's request (None if refused)."""
    fast, slow = _msgspec(body), _pydantic(body)
    if fast is None:
        return None
    assert slow is not None, f"msgspec took a body pydantic refuses: {body[:300]!r}"
    assert _typed(fast.leads) == _typed(slow.leads)
    assert (fast.lenient, fast.ignored_fields, fast.__pydantic_extra__) == (slow.lenient, slow.ignored_fields, {})
    sent = json.loads(body).get("as_of")
    assert fast.as_of == slow.as_of if sent is not None else abs(fast.as_of - slow.as_of) < timedelta(seconds=5)
    return fast


TAKEN = {
    "objects": _body(),
    "columns": _body(leads=[_lead(activities=..., activity_columns=COLUMNS)]),
    "no activities, no as_of": json.dumps({"leads": [_lead(activities=...)]}).encode(),
    "empty activities": _body(leads=[_lead(activities=[])]),
    "lenient false": _body(lenient=False),
    "as_of with an offset": _body(as_of="2024-06-01T10:00:00+05:30"),
    "as_of null": _body(as_of=None),
    "integer duration": _body(leads=[_lead(activities=[ACTIVITY | {"duration_seconds": 5}])]),
    "limits exactly": _body(leads=[_lead(lead_id="x" * 64, campaign="c" * 128, company_size="s" * 32,
                                         activities=[ACTIVITY | {"duration_seconds": MAX_DURATION_SECONDS,
                                                                 "content_id": "c" * 128}])]),
    "64 code points of 4 bytes": _body(leads=[_lead(lead_id="\U0001f600" * 64)]),
    "-0.0 seconds": _body(leads=[_lead(activities=[ACTIVITY | {"duration_seconds": -0.0}])]),
    "escaped key": _body().replace(b'"lead_id"', b'"lead\\u005fid"'),
    "whitespace around": b" \n\t" + _body() + b"\r\n ",
}
REFUSED_BY_BOTH = {
    "unknown request field": _body(leadz=[]),
    "unknown lead field": _body(leads=[_lead(industy="x")]),
    "unknown activity field": _body(leads=[_lead(activities=[ACTIVITY | {"kind": "x"}])]),
    "unknown column": _body(leads=[_lead(activities=..., activity_columns=COLUMNS | {"kind": ["a", "b"]})]),
    "columns of different lengths": _body(leads=[_lead(activities=..., activity_columns=COLUMNS | {
        "channel": ["web"]})]),
    "activities and columns": _body(leads=[_lead(activity_columns=COLUMNS)]),
    "repeated lead": _body(leads=[LEAD, LEAD]),
    "no leads": _body(leads=[]),
    "leads missing": json.dumps({"as_of": "2024-06-01"}).encode(),
    "too many leads": _body(leads=[_lead(lead_id=f"L{i}", activities=...) for i in range(MAX_BATCH + 1)]),
    "too many activities": _body(leads=[_lead(activities=[ACTIVITY] * (MAX_ACTIVITIES_PER_LEAD + 1))]),
    "too many column values": _body(leads=[_lead(activities=..., activity_columns={
        "activity_type": ["page_view"] * (MAX_ACTIVITIES_PER_LEAD + 1),
        "occurred_at": ["2024-03-02"] * (MAX_ACTIVITIES_PER_LEAD + 1)})]),
    "column duration over a week": _body(leads=[_lead(activities=..., activity_columns=COLUMNS | {
        "duration_seconds": [1, MAX_DURATION_SECONDS + 1]})]),
    "65 code points": _body(leads=[_lead(lead_id="\U0001f600" * 65)]),
    "short time": _body(leads=[_lead(created_at="2024-03-1")]),
    "number as text": _body(leads=[_lead(activities=[ACTIVITY | {"duration_seconds": "5"}])]),
    "true as a number": _body(leads=[_lead(activities=[ACTIVITY | {"duration_seconds": True}])]),
    "over a week": _body(leads=[_lead(activities=[ACTIVITY | {"duration_seconds": MAX_DURATION_SECONDS + 1e-6}])]),
    "negative": _body(leads=[_lead(activities=[ACTIVITY | {"duration_seconds": -1e-9}])]),
    "1e999": _body(leads=[_lead(activities=[ACTIVITY])]).replace(b"40.0", b"1e999"),
    "NaN": _body(leads=[_lead(activities=[ACTIVITY])]).replace(b"40.0", b"NaN"),
    "integer of 400 digits": _body(leads=[_lead(activities=[ACTIVITY])]).replace(b"40.0", b"9" * 400),
    "null activities": _body(leads=[_lead(activities=None)]),
    "null source channel": _body(leads=[_lead(source_channel=None)]),
    "lenient null": _body(lenient=None),
    "as_of not a time": _body(as_of="yesterday"),
    "as_of before 1970": _body(as_of="1969-12-31T23:59:59Z"),
    "as_of a number": _body(as_of=20240601),
    "trailing text": _body() + b"x",
    "a list": b"[" + _body() + b"]",
    "byte order mark": b"\xef\xbb\xbf" + _body(),
    "not UTF-8": _body().replace(b"paid_search", b"paid\xff"),
}
SURROGATES_AND_DUPLICATES = {
    "lone surrogate": _body().replace(b'"L-1"', b'"\\ud800"'),
    "surrogate pair": _body().replace(b'"L-1"', b'"\\ud83d\\ude00"'),
    "repeated key, valid last": _body().replace(b'{"lead_id": "L-1"', b'{"lead_id": 5, "lead_id": "L-1"'),
    "repeated key, invalid last": _body().replace(b'{"lead_id": "L-1"', b'{"lead_id": "L-1", "lead_id": 5'),
    "repeated leads key": _body()[:-1] + b', "leads": []}',
}

LEAD_LIMITS = {"lead_id": 64, "created_at": 40, "source_channel": 64, "campaign": 128, "country": 64, "industry": 64,
               "company_size": 32, "job_seniority": 32, "email_domain_type": 32}
ACTIVITY_LIMITS = {"activity_type": 32, "occurred_at": 40, "channel": 64, "content_id": 128}
for field, most in LEAD_LIMITS.items():
    TAKEN[f"{field} of {most}"] = _body(leads=[_lead(**{field: "2024-03-01".ljust(most, "0")})])
    REFUSED_BY_BOTH[f"{field} of {most + 1}"] = _body(leads=[_lead(**{field: "2024-03-01".ljust(most + 1, "0")})])
for field, most in ACTIVITY_LIMITS.items():
    TAKEN[f"activity {field} of {most}"] = _body(leads=[_lead(activities=[ACTIVITY | {field: "2024-03-01".ljust(
        most, "0")}])])
    for shape, lead in (("", _lead(activities=[ACTIVITY | {field: "2024-03-01".ljust(most + 1, "0")}])),
                        ("column ", _lead(activities=..., activity_columns=COLUMNS | {field: [
                            "2024-03-01", "2024-03-01".ljust(most + 1, "0")]}))):
        REFUSED_BY_BOTH[f"activity {shape}{field} of {most + 1}"] = _body(leads=[lead])
for field in ("lead_id", "source_channel", "activity_type"):
    REFUSED_BY_BOTH[f"empty {field}"] = _body(leads=[_lead(**{field: ""}) if field != "activity_type" else _lead(
        activities=[ACTIVITY | {field: ""}])])


@pytest.mark.parametrize("name", list(TAKEN))
def test_msgspec_takes_what_pydantic_takes_and_gives_the_same_request(name: str) -> None:
    assert assert_same_or_refused(TAKEN[name]) is not None, f"{name}: not taken by msgspec"


@pytest.mark.parametrize("name", list(REFUSED_BY_BOTH))
def test_what_pydantic_refuses_msgspec_refuses(name: str) -> None:
    assert _pydantic(REFUSED_BY_BOTH[name]) is None, f"{name}: pydantic takes it"
    assert _msgspec(REFUSED_BY_BOTH[name]) is None


@pytest.mark.parametrize("name", list(SURROGATES_AND_DUPLICATES))
def test_surrogates_and_repeated_keys_give_pydantic_s_answer(name: str) -> None:
    assert_same_or_refused(SURROGATES_AND_DUPLICATES[name])


def test_read_body_gives_pydantic_s_400_for_what_msgspec_refuses() -> None:
    """The server's reading falls back to pydantic: the 400 is pydantic's own, field and location included."""
    body = REFUSED_BY_BOTH["unknown activity field"]
    with pytest.raises(ValidationError) as fallback:
        read_body(ScoreLeadsRequest, body, FAST_DECODERS["/score_leads"])
    with pytest.raises(ValidationError) as direct:
        ScoreLeadsRequest.model_validate_json(body)
    assert fallback.value.errors() == direct.value.errors()
    assert fallback.value.errors()[0]["loc"] == ("leads", 0, "activities", 0, "kind")


def test_a_lenient_request_is_left_to_pydantic_which_lists_what_it_ignored() -> None:
    body = _body(lenient=True, extra=1)
    assert _msgspec(body) is None and _msgspec(_body(lenient=True)) is None
    request = read_body(ScoreLeadsRequest, body, FAST_DECODERS["/score_leads"])
    assert request.ignored_fields == ["unknown field 'extra' of the request ignored"]


HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0, -0.0, MAX_DURATION_SECONDS, 1e308]),
    st.text(max_size=70), st.text(alphabet=st.characters(codec="utf-8"), min_size=60, max_size=130),
    st.sampled_from(["2024-03-02", "2024-03-02T25:00:00", "1969-12-31", "2200-01-01T00:00:00Z", "page_view", ""]),
    st.lists(st.sampled_from(["page_view", "2024-03-02", None, 1.5]), max_size=3),
    st.dictionaries(st.sampled_from(["activity_type", "occurred_at", "x"]), st.none(), max_size=2),
)
LEAD_KEYS = st.sampled_from([*LEAD, "activity_columns", "lenient", "Lead_id"])
ACTIVITY_KEYS = st.sampled_from([*ACTIVITY, "kind"])
REQUEST_KEYS = st.sampled_from(["as_of", "lenient", "leads", "leadz"])


@st.composite
def hostile_bodies(draw: st.DrawFn) -> bytes:
    """A valid request with a few of its values replaced, removed or added, as JSON with or without escapes."""
    activities = [dict(ACTIVITY) for _ in range(draw(st.integers(0, 2)))]
    lead = LEAD | {"activities": activities}
    request = {"leads": [lead], "as_of": draw(st.sampled_from(["2024-06-01", None, "2024-06-01T00:00:00-12:00"]))}
    for _ in range(draw(st.integers(0, 3))):
        target = draw(st.sampled_from(["lead", "activity", "request"] if activities else ["lead", "request"]))
        mapping, keys = {"lead": (lead, LEAD_KEYS), "request": (request, REQUEST_KEYS)}.get(target) or (
            draw(st.sampled_from(activities)), ACTIVITY_KEYS)
        key = draw(keys)
        if key in mapping and draw(st.booleans()):
            del mapping[key]
        else:
            mapping[key] = draw(HOSTILE)
    return json.dumps(request, ensure_ascii=draw(st.booleans())).encode()


@settings(max_examples=400, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_bodies())
def test_hostile_values_are_refused_or_read_as_pydantic_reads_them(body: bytes) -> None:
    """And the fast path is not lost: what pydantic takes, msgspec takes, unless the request is lenient."""
    fast, slow = assert_same_or_refused(body), _pydantic(body)
    assert fast is not None or slow is None or slow.lenient


@pytest.mark.parametrize("check", [Field(pattern=r"\d+"), Field(strict=False), AfterValidator(str.strip),
                                   Field(multiple_of=2)], ids=["pattern", "strict", "validator", "multiple_of"])
def test_a_check_msgspec_cannot_make_stops_the_fast_path_being_built(check: Any) -> None:
    """A check added to the pydantic schema that msgspec has no equivalent for fails at import, not in production."""
    with pytest.raises(TypeError, match="no msgspec equivalent"):
        msgspec_type(Annotated[str, check], {})
