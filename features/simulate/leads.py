"""Simulated leads: profiles, behaviour events over time, and conversion by a known function.

Each lead has a latent ``interest`` that scales how much it engages: web sessions with page views and
pricing-page visits, the email funnel (a six-mail nurture sequence and a monthly newsletter until it
unsubscribes; sent -> open -> click), downloads, forms, webinars (register -> attend), demo requests
and social engagements. Events cluster after the lead's creation (exponential decay with a lead-specific
time scale) with some later re-engagement.

Conversion follows ``ConversionModel``: each intent event may trigger a conversion some days later, with
a probability set by the lead's profile, the event type, interactions and the lead's age at the event;
the lead converts at the earliest triggered time. The hazard at any moment therefore depends only on
behaviour observed before it, and decays with time since the intent events (recency). After conversion
a lead's activity mostly stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
from scipy.special import expit, gammainc

from features.crm.schema import ACTIVITY_TYPES
from features.simulate.config import SimulationConfig
from features.simulate.content import ASSETS, NURTURE_DAYS, PAGES, ContentCatalog
from features.simulate.drift import junk_leads, rewire, signal_logits
from features.simulate.marketing import LeadPlan, day_lengths

DAY = 86_400.0
ACTIVITY_ID_WIDTH = 10
ACTIVITY_CHANNELS: tuple[str, ...] = ("web", "email", "event", "social")
COUNTRIES: tuple[tuple[str, float], ...] = (
    ("US", 0.34), ("GB", 0.10), ("DE", 0.12), ("FR", 0.08), ("NL", 0.05), ("CA", 0.06), ("AU", 0.05),
    ("IN", 0.07), ("BR", 0.04), ("ES", 0.04), ("SE", 0.05),
)
INDUSTRIES: tuple[tuple[str, float], ...] = (
    ("software", 0.24), ("financial_services", 0.14), ("healthcare", 0.10), ("retail", 0.12),
    ("manufacturing", 0.12), ("education", 0.08), ("professional_services", 0.13), ("media", 0.07),
)
COMPANY_SIZES: tuple[str, ...] = ("1-10", "11-50", "51-200", "201-1000", "1000+")
SENIORITIES: tuple[str, ...] = ("individual", "manager", "director", "vp", "c_level")
EMAIL_DOMAINS: tuple[str, ...] = ("business", "free", "edu")
SIZE_BASE = np.array([0.25, 0.28, 0.22, 0.15, 0.10])
SIZE_TILT = {"events": 0.6, "partner": 0.5, "referral": 0.2, "paid_social": -0.4, "organic_search": -0.2}
SENIORITY_BY_SIZE = np.array([
    [0.30, 0.15, 0.10, 0.10, 0.35],
    [0.40, 0.25, 0.15, 0.10, 0.10],
    [0.42, 0.30, 0.15, 0.08, 0.05],
    [0.45, 0.30, 0.15, 0.07, 0.03],
    [0.48, 0.30, 0.14, 0.06, 0.02],
])
BUSINESS_EMAIL_BY_SIZE = np.array([0.45, 0.65, 0.75, 0.80, 0.82])
DEMO_BY_SENIORITY = np.array([0.5, 1.0, 1.5, 1.6, 1.4])
DEMO_BY_DOMAIN = np.array([1.3, 0.6, 0.3])
UNSUBSCRIBE_BY_DOMAIN = np.array([0.05, 0.10, 0.08])
SESSIONS, EXTRA_PAGE_VIEWS, DOWNLOADS, FORMS, DEMOS, WEBINARS, SOCIAL = 4.0, 1.5, 0.6, 0.3, 0.12, 0.35, 1.2
"""Mean events per lead of average engagement (page views: extra per session besides the first)."""
SCALE_DAYS, LATER_DAYS = 30.0, 540.0
"""Median time scale of a lead's engagement decay; span of later re-engagement."""
TYPE = {name: code for code, name in enumerate(ACTIVITY_TYPES)}
CHANNEL = {name: code for code, name in enumerate(ACTIVITY_CHANNELS)}


def format_ids(prefix: str, numbers: np.ndarray, width: int) -> pd.Series:
    """Identifiers like ``L0000042``: ``prefix`` then the number zero-padded to ``width`` digits."""
    return prefix + pd.Series(np.asarray(numbers, dtype="int64")).astype("str").str.zfill(width)


def to_timestamps(start: datetime, seconds: np.ndarray) -> np.ndarray:
    """Naive UTC timestamps ``start + seconds`` (NaN stays NaT), at whole seconds."""
    values = np.asarray(seconds, dtype="float64")
    missing = np.isnan(values)
    whole = np.where(missing, 0, values).astype("int64").astype("timedelta64[s]")
    stamps = (np.datetime64(start, "s") + whole).astype("datetime64[us]")
    stamps[missing] = np.datetime64("NaT")
    return stamps


@dataclass(frozen=True)
class LeadBatch:
    """One chunk of simulated leads: CRM rows and the truth behind them."""

    leads: pd.DataFrame
    activities: pd.DataFrame
    truth: pd.DataFrame


class _Events:
    """Columns of behaviour events, collected group by group."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in
                                                    ("lead", "time", "root", "type", "channel", "content",
                                                     "duration", "intent")}

    def add(self, lead: np.ndarray, time: np.ndarray, activity_type: str, channel: str, content: np.ndarray | int,
            *, root: np.ndarray | None = None, duration: np.ndarray | None = None, intent: bool = False) -> None:
        n = len(lead)
        values = {
            "lead": lead, "time": time, "root": time if root is None else root,
            "type": np.full(n, TYPE[activity_type], dtype="int8"),
            "channel": np.full(n, CHANNEL[channel], dtype="int8"),
            "content": np.broadcast_to(np.asarray(content, dtype="int32"), (n,)),
            "duration": np.full(n, np.nan) if duration is None else duration,
            "intent": np.full(n, intent),
        }
        for key, value in values.items():
            self.parts[key].append(value)

    def columns(self) -> dict[str, np.ndarray]:
        return {key: np.concatenate(parts) for key, parts in self.parts.items()}


def _draw(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """One category per row of a (rows, categories) probability matrix."""
    cumulative = np.cumsum(probabilities / probabilities.sum(axis=1, keepdims=True), axis=1)
    return (rng.random(len(probabilities))[:, None] > cumulative[:, :-1]).sum(axis=1)


def _pick(rng: np.random.Generator, options: tuple[tuple[str, float], ...], n: int) -> np.ndarray:
    weights = np.array([w for _, w in options])
    return rng.choice(len(options), size=n, p=weights / weights.sum())


def _event_times(rng: np.random.Generator, leads: _Leads, lead: np.ndarray, slower: float = 1.0) -> np.ndarray:
    """Seconds of events of ``lead`` (positions): 75% decay after creation with the lead's time scale
    (times ``slower``), 25% re-engagement uniformly over the following 540 days."""
    decay = rng.exponential(slower * leads.scale_days[lead]) * DAY
    later = rng.random(len(lead)) * LATER_DAYS * DAY
    return leads.created[lead] + np.where(rng.random(len(lead)) < 0.75, decay, later)


def _lognormal(rng: np.random.Generator, median: np.ndarray | float, sigma: float, low: float, high: float,
               n: int) -> np.ndarray:
    return np.round(np.clip(rng.lognormal(np.log(median), sigma, n), low, high))


@dataclass(frozen=True)
class _Leads:
    """Per-lead arrays of one chunk (categories as codes into the module's vocabularies)."""

    created: np.ndarray
    source: np.ndarray
    channel: np.ndarray
    country: np.ndarray
    industry: np.ndarray
    size: np.ndarray
    seniority: np.ndarray
    domain: np.ndarray
    interest: np.ndarray
    engagement: np.ndarray
    scale_days: np.ndarray
    junk: np.ndarray
    propensity: np.ndarray
    keen: np.ndarray

    @property
    def senior(self) -> np.ndarray:
        return self.seniority >= SENIORITIES.index("director")

    @property
    def business(self) -> np.ndarray:
        return self.domain == EMAIL_DOMAINS.index("business")


def _profiles(config: SimulationConfig, plan: LeadPlan, first: int, stop: int, rng: np.random.Generator) -> _Leads:
    """Creation times (business hours mostly), sources and profiles; company size tilts by channel,
    seniority depends on company size, the email domain on size and industry."""
    n = stop - first
    names = [c.name for c in config.channels]
    day, source = plan.locate(first, stop)
    business_hours = (8 + 10 * rng.beta(2, 2, n)) * 3600
    time_of_day = np.where(rng.random(n) < 0.8, business_hours, rng.random(n) * DAY)
    created = np.floor(day * DAY + time_of_day * day_lengths(config)[day])
    order = np.argsort(created, kind="stable")
    created, source = created[order], source[order]
    channel = np.array([names.index(s.channel) for s in plan.sources])[source]
    country = _pick(rng, COUNTRIES, n)
    industry = _pick(rng, INDUSTRIES, n)
    tilt = np.array([SIZE_TILT.get(name, 0.0) for name in names])[channel]
    size = _draw(rng, SIZE_BASE * np.exp(tilt[:, None] * (np.arange(len(COMPANY_SIZES)) - 2) / 2))
    seniority = _draw(rng, SENIORITY_BY_SIZE[size])
    business = BUSINESS_EMAIL_BY_SIZE[size]
    edu = np.where(industry == [i for i, _ in INDUSTRIES].index("education"), 0.6, 0.02)
    domain = _draw(rng, np.column_stack([business * (1 - edu), (1 - business) * (1 - edu), edu]))
    interest = (np.array([c.interest_shift for c in config.channels])[channel]
                + 0.15 * (seniority >= SENIORITIES.index("director")) + 0.2 * (domain == 0) + rng.normal(0, 1, n))
    junk = junk_leads(config, channel, created, rng)
    engagement = config.activity_rate * np.exp(0.5 * interest) * np.where(junk, config.drift.engagement_factor, 1.0)
    propensity, keen = rewire(config, created, interest, engagement, junk, rng)
    return _Leads(
        created=created, source=source, channel=channel, country=country, industry=industry, size=size,
        seniority=seniority, domain=domain, interest=interest, engagement=engagement, junk=junk,
        scale_days=SCALE_DAYS * rng.lognormal(0, 0.5, n), propensity=propensity, keen=keen,
    )


def _behaviour(config: SimulationConfig, leads: _Leads, catalog: ContentCatalog,
               rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every behaviour event of the chunk's leads, before the simulation end."""
    events = _Events()
    everyone = np.arange(len(leads.created))
    names = np.array([c.name for c in config.channels])[leads.channel]
    capture = np.where(names == "events", catalog.code("event-badge-scan"), catalog.code("form-signup"))
    events.add(everyone, leads.created, "form_submit", "web", capture)
    _web(events, leads, catalog, rng)

    lead = np.repeat(everyone, rng.poisson(DOWNLOADS * leads.keen))
    asset_codes = np.array([catalog.code(a) for a in ASSETS])
    events.add(lead, _event_times(rng, leads, lead), "content_download", "web",
               asset_codes[rng.integers(0, len(ASSETS), len(lead))], intent=True)
    lead = np.repeat(everyone, rng.poisson(FORMS * leads.engagement))
    form = np.where(rng.random(len(lead)) < 0.6, catalog.code("form-contact"), catalog.code("form-trial"))
    events.add(lead, _event_times(rng, leads, lead), "form_submit", "web", form, intent=True)
    demo_rate = (DEMOS * leads.engagement**1.5 * DEMO_BY_SENIORITY[leads.seniority] * DEMO_BY_DOMAIN[leads.domain])
    lead = np.repeat(everyone, rng.poisson(demo_rate))
    events.add(lead, _event_times(rng, leads, lead, slower=1.5), "demo_request", "web", catalog.code("form-demo"),
               intent=True)

    _webinars(events, leads, np.where(names == "events", 2.0, 1.0), catalog, rng)
    lead = np.repeat(everyone, rng.poisson(SOCIAL * leads.engagement * np.where(names == "paid_social", 2.5, 1.0)))
    t = _event_times(rng, leads, lead)
    week = np.minimum((t // (7 * DAY)).astype("int64"), catalog.weeks - 1)
    events.add(lead, t, "social_engagement", "social", catalog.social_first + week)
    _email(events, leads, catalog, rng)

    columns = events.columns()
    inside = columns["time"] < config.span_seconds
    return {k: v[inside] for k, v in columns.items()}


def _web(events: _Events, leads: _Leads, catalog: ContentCatalog, rng: np.random.Generator) -> None:
    """Web sessions (landing page, length), page views inside them and pricing-page visits."""
    lead = np.repeat(np.arange(len(leads.created)), rng.poisson(SESSIONS * leads.engagement))
    t = _event_times(rng, leads, lead)
    length = _lognormal(rng, 150 * np.exp(0.3 * leads.interest[lead]), 0.8, 5, 7200, len(lead))
    page_codes = np.array([catalog.code(p) for p, _ in PAGES])
    events.add(lead, t, "web_session", "web", page_codes[_pick(rng, PAGES, len(lead))], duration=length)
    session = np.repeat(np.arange(len(lead)), 1 + rng.poisson(EXTRA_PAGE_VIEWS, len(lead)))
    events.add(lead[session], t[session] + rng.random(len(session)) * length[session], "page_view", "web",
               page_codes[_pick(rng, PAGES, len(session))], root=t[session],
               duration=_lognormal(rng, 40, 0.9, 1, 1800, len(session)))
    chance = expit(-2.0 + 0.7 * leads.interest[lead] + 0.3 * leads.senior[lead] + 0.3 * leads.business[lead])
    visit = rng.random(len(lead)) < chance
    events.add(lead[visit], t[visit] + rng.random(visit.sum()) * length[visit], "pricing_page_view", "web",
               catalog.code("/pricing"), root=t[visit], duration=_lognormal(rng, 60, 0.7, 1, 1800, visit.sum()),
               intent=True)


def _webinars(events: _Events, leads: _Leads, factor: np.ndarray, catalog: ContentCatalog,
              rng: np.random.Generator) -> None:
    """Registrations for the next monthly webinar (at least a day ahead); attendance depends on interest."""
    lead = np.repeat(np.arange(len(leads.created)), rng.poisson(WEBINARS * leads.keen * factor))
    t = _event_times(rng, leads, lead)
    webinar = np.minimum(np.searchsorted(catalog.webinar_seconds, t + DAY), len(catalog.webinar_seconds) - 1)
    events.add(lead, t, "webinar_register", "event", catalog.webinar_codes[webinar])
    attend = (rng.random(len(lead)) < expit(-0.2 + 0.5 * leads.propensity[lead])) & (catalog.webinar_seconds[webinar] > t)
    late = rng.random(attend.sum()) * 600
    events.add(lead[attend], catalog.webinar_seconds[webinar[attend]] + late, "webinar_attend", "event",
               catalog.webinar_codes[webinar[attend]], root=t[attend],
               duration=np.minimum(3600 - np.round(late), _lognormal(rng, 2100, 0.5, 60, 3600, attend.sum())),
               intent=True)


def _email(events: _Events, leads: _Leads, catalog: ContentCatalog, rng: np.random.Generator) -> None:
    """The nurture sequence, then monthly newsletters until the lead unsubscribes; opens and clicks."""
    n = len(leads.created)
    nurture = np.array(NURTURE_DAYS) * DAY
    lead = np.repeat(np.arange(n), len(nurture))
    sent = leads.created[lead] + np.tile(nurture, n) + rng.random(len(lead)) * 0.2 * DAY
    content = np.tile(np.arange(len(nurture)) + catalog.code("nurture-1"), n)
    first = np.searchsorted(catalog.newsletter_seconds, leads.created + DAY)
    letters = np.minimum(rng.geometric(UNSUBSCRIBE_BY_DOMAIN[leads.domain]) - 1,
                         len(catalog.newsletter_seconds) - first)
    letter_lead = np.repeat(np.arange(n), letters)
    letter = first[letter_lead] + np.arange(letters.sum()) - np.repeat(np.cumsum(letters) - letters, letters)
    lead = np.concatenate([lead, letter_lead])
    sent = np.concatenate([sent, catalog.newsletter_seconds[letter]])
    content = np.concatenate([content, catalog.newsletter_codes[letter]])
    events.add(lead, sent, "email_sent", "email", content)
    opened = rng.random(len(lead)) < expit(-0.9 + 0.5 * leads.interest[lead] + 0.3 * leads.business[lead])
    opened_at = sent[opened] + rng.exponential(6 * 3600, opened.sum())
    events.add(lead[opened], opened_at, "email_open", "email", content[opened], root=sent[opened])
    clicked = rng.random(opened.sum()) < expit(-1.7 + 0.5 * leads.interest[lead[opened]])
    events.add(lead[opened][clicked], opened_at[clicked] + rng.exponential(180, clicked.sum()), "email_click",
               "email", content[opened][clicked], root=sent[opened][clicked], intent=True)


@dataclass(frozen=True)
class _Conversion:
    lead_logit: np.ndarray
    noise: np.ndarray
    probability: np.ndarray
    converted_at: np.ndarray
    trigger: np.ndarray


def _convert(config: SimulationConfig, leads: _Leads, events: dict[str, np.ndarray],
             rng: np.random.Generator) -> _Conversion:
    """Each intent event fires with its true probability and converts the lead after a Gamma delay; the
    earliest conversion before the end wins. Also the true chance of converting before the end."""
    model = config.conversion
    n = len(leads.created)
    end = config.span_seconds
    noise = rng.normal(0, model.noise_sd, n)
    lead_logit = (
        model.intercept
        + np.array([c.conversion_effect for c in config.channels])[leads.channel]
        + _effects(model.seniority_effects, SENIORITIES)[leads.seniority]
        + _effects(model.company_size_effects, COMPANY_SIZES)[leads.size]
        + _effects(model.email_domain_effects, EMAIL_DOMAINS)[leads.domain]
        + _effects(model.industry_effects, tuple(i for i, _ in INDUSTRIES))[leads.industry]
        + model.senior_large_company * (leads.senior & (leads.size >= COMPANY_SIZES.index("201-1000")))
        + model.c_level_small_company * ((leads.seniority == SENIORITIES.index("c_level"))
                                         & (leads.size <= COMPANY_SIZES.index("11-50")))
        + model.interest_effect * leads.propensity
        + noise
    )
    intent = np.flatnonzero(events["intent"])
    who, when, kind = events["lead"][intent], events["time"][intent], events["type"][intent]
    logit = (lead_logit[who] + _effects(model.activity_effects, ACTIVITY_TYPES)[kind]
             + model.demo_business_email * ((kind == TYPE["demo_request"]) & leads.business[who])
             - (when - leads.created[who]) / DAY / model.staleness_days
             + signal_logits(config, leads.created[who], kind, ACTIVITY_TYPES))
    chance = np.where(leads.junk[who], 0.0, expit(logit))
    fired = rng.random(len(intent)) < chance
    delay = rng.gamma(model.delay_shape, model.delay_scale_days, len(intent)) * DAY
    reach = chance * gammainc(model.delay_shape, (end - when) / DAY / model.delay_scale_days)
    probability = -np.expm1(np.bincount(who, weights=np.log1p(-reach), minlength=n))
    candidates = np.flatnonzero(fired & (when + delay < end))
    candidates = candidates[np.lexsort((when[candidates] + delay[candidates], who[candidates]))]
    winners = candidates[np.unique(who[candidates], return_index=True)[1]]
    converted_at = np.full(n, np.inf)
    converted_at[who[winners]] = np.floor(when[winners] + delay[winners])
    trigger = np.full(n, -1)
    trigger[who[winners]] = intent[winners]
    return _Conversion(lead_logit, noise, probability, converted_at, trigger)


def _after_conversion(config: SimulationConfig, events: dict[str, np.ndarray], converted_at: np.ndarray,
                      rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Events kept, sorted by lead and time: after conversion only a few (and their follow-ups), for a while."""
    model = config.conversion
    since = events["root"] - converted_at[events["lead"]]
    keep = (since <= 0) | ((since < model.post_conversion_days * DAY)
                           & (rng.random(len(since)) < model.post_conversion_keep))
    kept = {k: v[keep] for k, v in events.items()}
    kept["time"] = np.floor(kept["time"])
    order = np.lexsort((kept["type"], kept["time"], kept["lead"]))
    return {k: v[order] for k, v in kept.items()}


def simulate_leads(
    config: SimulationConfig,
    plan: LeadPlan,
    catalog: ContentCatalog,
    first: int,
    stop: int,
    first_activity: int,
    rng: np.random.Generator,
) -> LeadBatch:
    """Leads numbered ``first .. stop - 1`` (0-based, in creation order), their activities and truth.

    Activity ids continue from ``first_activity`` (0-based count of earlier activities). Converted
    leads carry ``converted_at`` and ``customer_id`` (``C`` + the lead's number).
    """
    start = config.starts_at
    leads = _profiles(config, plan, first, stop, rng)
    events = _behaviour(config, leads, catalog, rng)
    conversion = _convert(config, leads, events, rng)
    converted = np.isfinite(conversion.converted_at)
    trigger = np.maximum(conversion.trigger, 0)
    trigger_time = np.where(converted, events["time"][trigger], np.nan)
    trigger_type = np.where(converted, np.array(ACTIVITY_TYPES, dtype=object)[events["type"][trigger]], None)
    events = _after_conversion(config, events, conversion.converted_at, rng)

    numbers = first + 1 + np.arange(stop - first)
    lead_ids = format_ids("L", numbers, id_width(config))
    converted_at = to_timestamps(start, np.where(converted, conversion.converted_at, np.nan))
    lead_rows = pd.DataFrame({
        "lead_id": lead_ids,
        "created_at": to_timestamps(start, leads.created),
        "source_channel": np.array([c.name for c in config.channels], dtype=object)[leads.channel],
        "campaign": np.array([s.campaign for s in plan.sources], dtype=object)[leads.source],
        "country": np.array([c for c, _ in COUNTRIES], dtype=object)[leads.country],
        "industry": np.array([i for i, _ in INDUSTRIES], dtype=object)[leads.industry],
        "company_size": np.array(COMPANY_SIZES, dtype=object)[leads.size],
        "job_seniority": np.array(SENIORITIES, dtype=object)[leads.seniority],
        "email_domain_type": np.array(EMAIL_DOMAINS, dtype=object)[leads.domain],
        "converted_at": converted_at,
        "customer_id": format_ids("C", numbers, id_width(config)).where(converted, None),
    })
    activities = pd.DataFrame({
        "activity_id": format_ids("A", first_activity + 1 + np.arange(len(events["time"])), ACTIVITY_ID_WIDTH),
        "lead_id": lead_ids.to_numpy()[events["lead"]],
        "occurred_at": to_timestamps(start, events["time"]),
        "activity_type": pd.Categorical.from_codes(events["type"], categories=ACTIVITY_TYPES),
        "channel": pd.Categorical.from_codes(events["channel"], categories=ACTIVITY_CHANNELS),
        "content_id": pd.Categorical.from_codes(events["content"], categories=catalog.content),
        "duration_seconds": events["duration"],
    })
    truth = pd.DataFrame({
        "lead_id": lead_ids,
        "interest": leads.interest,
        "lead_logit": conversion.lead_logit,
        "lead_noise": conversion.noise,
        "conversion_probability": conversion.probability,
        "converted": converted,
        "converted_at": converted_at,
        "trigger_activity_type": trigger_type,
        "trigger_occurred_at": to_timestamps(start, trigger_time),
    })
    return LeadBatch(leads=lead_rows, activities=activities, truth=truth)


def id_width(config: SimulationConfig) -> int:
    """Digits of lead and customer numbers: at least 7, more for very large CRMs."""
    return max(7, len(str(config.n_leads + config.n_customers)))


def _effects(pairs: tuple[tuple[str, float], ...], names: tuple[str, ...]) -> np.ndarray:
    """A lookup array of effects by category code (0 for categories without an effect)."""
    given = dict(pairs)
    return np.array([given.get(name, 0.0) for name in names])
