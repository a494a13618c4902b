"""What the CRM simulator simulates: the timeline, the channels and campaigns, and the true parameters.

Every true parameter lives here, in typed frozen dataclasses, so that ``leadval generate`` can write
them to ``truth_parameters`` and tests can compare fitted models with them. Time is in days.

References
----------
Fader, P. S., Hardie, B. G. S., & Lee, K. L. (2005). "Counting Your Customers" the Easy Way: An
Alternative to the Pareto/NBD Model. Marketing Science, 24(2), 275-284.
Fader, P. S., & Hardie, B. G. S. (2013). The Gamma-Gamma Model of Monetary Value.
"""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta

from features.errors import InvalidInput


@dataclass(frozen=True)
class PurchaseProcess:
    """True BG/NBD parameters, time in days.

    While alive a customer buys as a Poisson process with rate ``lambda ~ Gamma(r, alpha)`` (shape ``r``,
    rate ``alpha``: mean ``r / alpha`` purchases per day); after each repeat purchase the customer drops
    out with probability ``p ~ Beta(a, b)`` (Fader, Hardie & Lee 2005).
    """

    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True)
class OrderValue:
    """True Gamma-Gamma parameters (Fader & Hardie 2013; ``lifetimes`` names p, q, v).

    Each customer has ``nu ~ Gamma(q, v)`` (shape ``q``, rate ``v``); each order is worth
    ``z ~ Gamma(p, nu)``, so the customer's mean order value is ``p / nu``.
    """

    p: float = 6.0
    q: float = 3.8
    v: float = 150.0


@dataclass(frozen=True)
class Campaign:
    """A campaign of a channel: its share of the channel's leads and when it runs.

    ``active`` holds (from, to) windows as fractions of the timeline (0 = start, 1 = end).
    """

    name: str
    weight: float
    active: tuple[tuple[float, float], ...] = ((0.0, 1.0),)


@dataclass(frozen=True)
class Channel:
    """A lead source channel with its funnel economics and its true effects.

    Channels without campaigns bring leads whose ``campaign`` is empty; their spend (if any) is booked
    under campaign ``''``. ``cost_per_lead`` 0 means no spend rows at all (e.g. direct traffic).
    """

    name: str
    lead_share: float
    campaigns: tuple[Campaign, ...]
    cost_per_lead: float
    click_through_rate: float
    lead_per_click: float
    conversion_effect: float
    interest_shift: float
    purchases: PurchaseProcess
    customer_share: float


@dataclass(frozen=True)
class ConversionModel:
    """The true conversion function of a lead.

    Every intent event ``j`` of a lead (types in ``activity_effects``) gives it a chance to convert,
    ``p_j = sigmoid(logit_j)``, after a delay ``~ Gamma(delay_shape, delay_scale_days)``; the lead converts
    at the earliest such time. ``logit_j`` = intercept + channel + seniority + company size + email
    domain + industry effects + ``senior_large_company`` (director/vp/c_level at 201+ employees)
    + ``c_level_small_company`` (c_level at up to 50 employees) + ``demo_business_email`` (a
    demo_request from a business address) + activity effect + ``interest_effect`` x interest + lead
    noise ``~ N(0, noise_sd)`` - lead age at the event in days / ``staleness_days``.
    """

    intercept: float = -4.9
    activity_effects: tuple[tuple[str, float], ...] = (
        ("demo_request", 2.4),
        ("webinar_attend", 1.0),
        ("pricing_page_view", 0.8),
        ("form_submit", 0.5),
        ("content_download", 0.1),
        ("email_click", -0.3),
    )
    seniority_effects: tuple[tuple[str, float], ...] = (
        ("individual", -0.6), ("manager", 0.0), ("director", 0.4), ("vp", 0.6), ("c_level", 0.5),
    )
    company_size_effects: tuple[tuple[str, float], ...] = (
        ("1-10", -0.5), ("11-50", -0.1), ("51-200", 0.2), ("201-1000", 0.3), ("1000+", 0.0),
    )
    email_domain_effects: tuple[tuple[str, float], ...] = (("business", 0.3), ("free", -0.7), ("edu", -1.2))
    industry_effects: tuple[tuple[str, float], ...] = (
        ("software", 0.3), ("financial_services", 0.2), ("healthcare", 0.0), ("retail", -0.1),
        ("manufacturing", 0.0), ("education", -0.5), ("professional_services", 0.1), ("media", -0.2),
    )
    senior_large_company: float = 0.7
    c_level_small_company: float = 0.6
    demo_business_email: float = 0.8
    interest_effect: float = 0.4
    noise_sd: float = 0.6
    staleness_days: float = 200.0
    delay_shape: float = 2.0
    delay_scale_days: float = 8.0
    post_conversion_keep: float = 0.2
    post_conversion_days: float = 45.0


def _channels() -> tuple[Channel, ...]:
    whole = ((0.0, 1.0),)
    return (
        Channel("paid_search", 0.22, (
            Campaign("search_brand", 0.35, whole),
            Campaign("search_generic", 0.45, whole),
            Campaign("search_competitor", 0.20, ((0.25, 1.0),)),
        ), cost_per_lead=85.0, click_through_rate=0.035, lead_per_click=0.06, conversion_effect=0.0,
            interest_shift=0.0, purchases=PurchaseProcess(0.9, 60.0, 0.9, 4.0), customer_share=0.10),
        Channel("paid_social", 0.18, (
            Campaign("linkedin_lead_gen", 0.45, whole),
            Campaign("linkedin_abm", 0.25, ((0.5, 1.0),)),
            Campaign("meta_retargeting", 0.30, whole),
        ), cost_per_lead=55.0, click_through_rate=0.008, lead_per_click=0.04, conversion_effect=-0.5,
            interest_shift=-0.3, purchases=PurchaseProcess(0.8, 70.0, 1.1, 3.2), customer_share=0.02),
        Channel("organic_search", 0.16, (), cost_per_lead=12.0, click_through_rate=0.03, lead_per_click=0.025,
                conversion_effect=0.0, interest_shift=0.1, purchases=PurchaseProcess(1.0, 60.0, 0.8, 4.0),
                customer_share=0.20),
        Channel("email", 0.10, (
            Campaign("newsletter_promo", 0.5, whole),
            Campaign("product_launch", 0.2, ((0.55, 0.62),)),
            Campaign("reactivation", 0.3, ((0.1, 1.0),)),
        ), cost_per_lead=6.0, click_through_rate=0.025, lead_per_click=0.05, conversion_effect=-0.2,
            interest_shift=0.0, purchases=PurchaseProcess(1.0, 55.0, 0.9, 3.8), customer_share=0.03),
        Channel("referral", 0.08, (Campaign("customer_referral", 1.0, whole),), cost_per_lead=40.0,
                click_through_rate=0.2, lead_per_click=0.3, conversion_effect=0.7, interest_shift=0.3,
                purchases=PurchaseProcess(1.2, 50.0, 0.7, 4.5), customer_share=0.15),
        Channel("events", 0.07, (
            Campaign("industry_summit", 0.45, ((0.20, 0.21), (0.70, 0.71))),
            Campaign("roadshow", 0.35, ((0.30, 0.34), (0.80, 0.84))),
            Campaign("trade_fair", 0.20, ((0.45, 0.46), (0.95, 0.96))),
        ), cost_per_lead=150.0, click_through_rate=0.05, lead_per_click=0.2, conversion_effect=0.4,
            interest_shift=0.3, purchases=PurchaseProcess(1.1, 55.0, 0.8, 4.4), customer_share=0.05),
        Channel("direct", 0.12, (), cost_per_lead=0.0, click_through_rate=0.0, lead_per_click=0.0,
                conversion_effect=0.1, interest_shift=0.1, purchases=PurchaseProcess(1.0, 60.0, 0.9, 4.0),
                customer_share=0.30),
        Channel("partner", 0.07, (
            Campaign("reseller_program", 0.6, whole),
            Campaign("integration_marketplace", 0.4, ((0.3, 1.0),)),
        ), cost_per_lead=70.0, click_through_rate=0.01, lead_per_click=0.1, conversion_effect=0.5,
            interest_shift=0.2, purchases=PurchaseProcess(1.3, 50.0, 0.7, 5.0), customer_share=0.15),
    )


DEFAULT_CHANNELS: tuple[Channel, ...] = _channels()
"""paid_search, paid_social, organic_search, email, referral, events, direct, partner."""


def steady_calendar(channels: tuple[Channel, ...] = DEFAULT_CHANNELS) -> tuple[Channel, ...]:
    """``channels`` with every campaign running the whole timeline: a stationary source mix.

    The default calendar launches campaigns part-way (``linkedin_abm`` at mid-timeline, ...) and runs event
    campaigns in bursts, so the mix of channels and campaigns among open leads moves over time: input drift a
    monitor should flag. A CRM that is stationary in every respect, the one "no false alarm" is judged on,
    passes ``channels=steady_calendar()``; the default (``--scenario stationary``) keeps its calendar.
    """
    return tuple(replace(c, campaigns=tuple(replace(k, active=((0.0, 1.0),)) for k in c.campaigns))
                 for c in channels)


@dataclass(frozen=True)
class Experiment:
    """An A/B test the simulator runs on the leads created while it is active, with its true effects.

    ``effects`` are the true differences of each variant's rate from the control's (the first variant, effect
    0), in rate units (0.05 = +5 points) of ``metric``: ``conversion`` (leads converting after assignment) or
    ``ctr`` (leads clicking an email, of those opening one after assignment). ``active`` is the (from, to)
    window of creation times as fractions of the timeline.
    """

    name: str
    metric: str
    variants: tuple[str, ...]
    effects: tuple[float, ...]
    active: tuple[float, float]
    description: str = ""


DEFAULT_EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment("nurture_subject_line", "conversion", ("control", "question_subject"), (0.0, 0.05), (0.30, 0.75),
               "Subject line of the nurture emails: a question instead of a statement; +5 points of conversion."),
    Experiment("landing_page_hero", "conversion", ("control", "video_hero"), (0.0, 0.0), (0.45, 0.95),
               "Landing page hero: a video instead of a picture; no effect at all."),
    Experiment("email_cta_button", "ctr", ("control", "orange_button"), (0.0, 0.08), (0.80, 1.0),
               "Call-to-action button of the emails: orange instead of grey; +8 points of click-to-open, running."),
)
"""The demo's experiments: one with an effect on conversion, one with none, one on email clicks still running."""

EXPERIMENT_METRICS: tuple[str, ...] = ("conversion", "ctr")

SCENARIOS: tuple[str, ...] = ("stationary", "drift")
"""``stationary``: the same process throughout; ``drift``: the process changes at the change date (:class:`Drift`)."""
DRIFT_MONTHS = 6
"""By default the drift starts this many months before the CRM's end."""


@dataclass(frozen=True)
class Drift:
    """What changes in scenario ``drift`` from the change date on (midnight UTC of ``change_date``).

    The quality of ``channel``'s leads created from then on falls to ``conversion_factor``: the rest of them
    (a share ``1 - conversion_factor``) are junk that never converts yet engages ``engagement_factor`` times
    as much, so the channel's conversion rate is multiplied by ``conversion_factor``. A new campaign ``campaign`` of ``channel`` starts then (weight ``campaign_weight``
    among the channel's campaigns); a share ``country_share`` of the leads and customers created from then on
    come from a new country ``country``. Customers acquired from then on churn faster: their BG/NBD dropout
    probability is multiplied by ``dropout_factor`` (capped at 1).

    What predicts conversion changes too, for leads created from then on (a product-led funnel): their
    propensity to convert is a new latent, independent of the ``interest`` that drives their other behaviour.
    Only the ``signals`` events (an intent type each) can convert them: those occur at ``signal_strength`` x
    propensity on the log scale (``interest``'s 0.5 before) and fire with ``signal_boost`` added to their logit.
    Every other intent event (demo requests, pricing-page views, forms, email clicks) keeps following
    ``interest``, so it occurs independently of the propensity and never converts.
    """

    channel: str = "paid_social"
    conversion_factor: float = 0.5
    engagement_factor: float = 2.0
    campaign: str = "tiktok_lead_ads"
    campaign_weight: float = 0.5
    country: str = "JP"
    country_share: float = 0.1
    dropout_factor: float = 2.0
    signals: tuple[str, ...] = ("webinar_attend", "content_download")
    signal_strength: float = 1.2
    signal_boost: float = 2.0


def current_end() -> datetime:
    """Now in UTC, naive and to the whole second: the end of a simulated CRM unless one is given."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


@dataclass(frozen=True)
class SimulationConfig:
    """A simulated CRM: its size, seed, timeline and true parameters.

    The timeline ends at ``end`` (naive UTC; default: now, to the second, see :func:`current_end`): it
    covers the ``days`` calendar days before ``end``'s day and that day up to ``end``, so a CRM written
    now has its latest events minutes before now. Nothing happens at or after ``end``. Same ``seed``, same
    ``end`` and same ``chunk_leads`` give a bit-identical CRM (random streams are drawn per chunk); pass a
    fixed ``end`` wherever the CRM must be the same tomorrow. ``n_customers`` counts customers not from
    tracked leads; converted leads become customers too.
    """

    n_leads: int = 5_000
    n_customers: int = 1_000
    seed: int = 0
    end: datetime = field(default_factory=current_end)
    days: int = 730
    chunk_leads: int = 50_000
    channels: tuple[Channel, ...] = DEFAULT_CHANNELS
    conversion: ConversionModel = field(default_factory=ConversionModel)
    order_value: OrderValue = field(default_factory=OrderValue)
    activity_rate: float = 1.0
    lead_growth: float = 0.8
    experiments: tuple[Experiment, ...] = DEFAULT_EXPERIMENTS
    scenario: str = "stationary"
    change_date: date | None = None
    drift: Drift = field(default_factory=Drift)

    @property
    def change_at(self) -> datetime | None:
        """When the drift starts (midnight UTC of ``change_date``); None in scenario ``stationary``."""
        return None if self.change_date is None else datetime.combine(self.change_date, time())

    @property
    def starts_at(self) -> datetime:
        """Start of the timeline: midnight (naive UTC) ``days`` days before the day of ``end``."""
        return datetime.combine(self.end.date(), time()) - timedelta(days=self.days)

    @property
    def start(self) -> date:
        """The timeline's first day."""
        return self.starts_at.date()

    @property
    def span_seconds(self) -> float:
        """Length of the timeline in seconds: ``days`` whole days, then ``end``'s day up to ``end``."""
        return (self.end - self.starts_at).total_seconds()

    @property
    def timeline_days(self) -> int:
        """Calendar days the timeline touches: ``days``, plus ``end``'s day unless ``end`` is its midnight."""
        return math.ceil(self.span_seconds / 86_400)

    @property
    def last_day_fraction(self) -> float:
        """How much of the timeline's last calendar day lies before ``end`` (1.0 when ``end`` is a midnight)."""
        return self.span_seconds / 86_400 - (self.timeline_days - 1)

    def __post_init__(self) -> None:
        end = self.end
        if isinstance(end, datetime):
            if end.tzinfo is not None:
                end = end.astimezone(UTC)
            end = datetime.combine(end.date(), end.time())  # a plain naive datetime (also from a pd.Timestamp)
        elif isinstance(end, date):
            end = datetime.combine(end, time())
        else:
            raise InvalidInput(f"end must be a date or datetime, got {end!r}")
        object.__setattr__(self, "end", end)
        for name in ("n_leads", "n_customers", "seed"):
            if getattr(self, name) < 0:
                raise InvalidInput(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("days", "chunk_leads"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.activity_rate <= 0:
            raise InvalidInput(f"activity_rate must be > 0, got {self.activity_rate}")
        if not self.channels or sum(c.lead_share for c in self.channels) <= 0:
            raise InvalidInput("channels: at least one channel with lead_share > 0 is required")
        if self.n_customers and sum(c.customer_share for c in self.channels) <= 0:
            raise InvalidInput("channels: n_customers > 0 needs a channel with customer_share > 0")
        names = [c.name for c in self.channels]
        if len(set(names)) != len(names):
            raise InvalidInput(f"channels: names must be unique, got {names}")
        campaigns = [k.name for c in self.channels for k in c.campaigns]
        if len(set(campaigns)) != len(campaigns):
            raise InvalidInput(f"channels: campaign names must be unique, got {campaigns}")
        self._check_scenario()
        for experiment in self.experiments:
            _check_experiment(experiment)
        if len({e.name for e in self.experiments}) != len(self.experiments):
            raise InvalidInput(f"experiments: names must be unique, got {[e.name for e in self.experiments]}")


    def _check_scenario(self) -> None:
        """Resolve the default change date of scenario ``drift`` and check that it lies inside the timeline."""
        if self.scenario not in SCENARIOS:
            raise InvalidInput(f"scenario {self.scenario!r}: expected one of {', '.join(SCENARIOS)}")
        if self.scenario == "stationary":
            if self.change_date is not None:
                raise InvalidInput("a change date needs scenario drift (--scenario drift)")
            return
        change = self.change_date
        if change is None:
            change = months_before(self.end.date(), DRIFT_MONTHS)
        elif isinstance(change, datetime):
            change = change.date()
        object.__setattr__(self, "change_date", change)
        if not self.start < change or not datetime.combine(change, time()) < self.end:
            raise InvalidInput(f"change date {change.isoformat()}: must lie inside the CRM's period, after "
                               f"{self.start.isoformat()} and before {self.end.isoformat()}")
        drift = self.drift
        if (not 0 <= drift.conversion_factor <= 1 or min(drift.engagement_factor, drift.dropout_factor) <= 0
                or not 0 <= drift.country_share <= 1):
            raise InvalidInput("drift: expected 0 <= conversion_factor <= 1, engagement_factor > 0, dropout_factor > 0 "
                               "and 0 <= country_share <= 1")


def months_before(day: date, months: int) -> date:
    """The same day of the month ``months`` calendar months before ``day`` (the month's last day if shorter)."""
    year, month = divmod(day.year * 12 + day.month - 1 - months, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def _check_experiment(experiment: Experiment) -> None:
    """An ``InvalidInput`` naming what is wrong with ``experiment``, if anything."""
    name, variants, effects = experiment.name, experiment.variants, experiment.effects
    if experiment.metric not in EXPERIMENT_METRICS:
        raise InvalidInput(f"experiment {name}: metric {experiment.metric!r}; expected one of {EXPERIMENT_METRICS}")
    if len(variants) < 2 or len(set(variants)) != len(variants) or len(effects) != len(variants):
        raise InvalidInput(f"experiment {name}: expected 2 or more distinct variants with one effect each")
    if effects[0] != 0 or not all(-1 < e < 1 for e in effects):
        raise InvalidInput(f"experiment {name}: the control's effect must be 0 and the others between -1 and 1")
    low, high = experiment.active
    if not 0 <= low < high <= 1:
        raise InvalidInput(f"experiment {name}: active {experiment.active}; expected 0 <= from < to <= 1")
