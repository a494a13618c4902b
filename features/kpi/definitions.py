"""What each marketing KPI means: names, units, definitions and where it applies; the glossary comes from here.

Every figure is computed from ``leads``, ``activities``, ``customers``, ``orders``, ``marketing_spend`` and the
score tables (``customer_scores``); the simulator's ``truth_*`` tables are never read. Definitions, for one scope
(a channel, a campaign, a segment or everything) and one window ``[start, end)``:

- *Cohort KPIs* follow the leads created in the window: ``conversions`` are those that became customers before
  the window ends. Recent leads have had less time to convert, so the latest periods of a trend read low.
- *Acquisition KPIs* follow the customers created in the window (``new_customers``): their revenue from the
  first order up to the end of the window is the ``attributed_revenue`` of the channel (or campaign) that
  acquired them, which is what ``roi`` and ``historic_cltv`` use. ``predicted_cltv`` is the mean of their
  ``customer_scores.clv`` (future value over the CLV model's horizon); ``clv_to_cac`` puts both together:
  (revenue to date + predicted future value) of the paid channels' new customers / spend.
- *Activity KPIs* count the activities that happened in the window, credited to the source channel (or
  campaign) of the lead who did them.

A customer's channel is ``customers.acquisition_channel``, else the source channel of the lead it came from.
*Converted leads* (``conversions``) and *new customers* are different counts: the first follows leads (those
created in the window that became customers), the second all customers acquired in the window, with or without
a lead. *Paid* KPIs (``cac``, ``roi``, ``clv_to_cac``) put spend against the new customers of the channels with
recorded spend in the window (a channel's own, for a channel); ``blended_cac`` against all new customers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

DIMENSIONS: tuple[str, ...] = ("all", "channel", "campaign", "segment")
"""What a KPI can be broken down by: everything, a lead's source channel, its campaign, a customer segment."""

GRAINS: Mapping[str, str] = MappingProxyType({"week": "W", "month": "M", "quarter": "Q"})
"""Period lengths of a trend and their pandas period codes."""

NO_CAMPAIGN = "(none)"
LEAD_SOURCE = "(lead source)"
"""In :data:`TOUCH_CHANNELS`: the touch counts on the source channel of the lead who made it."""
UNKNOWN_CHANNEL = "(unknown)"
UNSCORED = "(unscored)"

MICRO_CONVERSIONS: tuple[str, ...] = ("form_submit", "content_download", "webinar_register")
"""Activities counted as micro-conversions: newsletter and other form sign-ups, downloads, webinar sign-ups."""

PASSIVE_ACTIVITIES: tuple[str, ...] = ("email_sent",)
"""Activities the lead did not do themselves: they do not make a lead active."""

CONTENT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "email_sent": 0.0,
        "web_session": 1.0,
        "page_view": 1.0,
        "email_open": 1.0,
        "social_engagement": 2.0,
        "pricing_page_view": 2.0,
        "email_click": 3.0,
        "form_submit": 5.0,
        "content_download": 5.0,
        "webinar_register": 5.0,
        "webinar_attend": 8.0,
        "demo_request": 10.0,
    }
)
"""Weight of one interaction with a content item, by activity type: the more intent an action shows, the more
it counts (a sent email 0, a view or open 1, a click 3, a download or sign-up 5, attending a webinar 8, asking
for a demo 10)."""

TOUCH_CHANNELS: Mapping[str, str] = MappingProxyType(
    {"web": LEAD_SOURCE, "email": "email", "event": "events", "social": "paid_social"}
)
"""The source channel an activity's ``channel`` counts as in attribution, so that every method credits the KPI
table's channels: an email on ``email``, an event (webinar) on ``events``, social content on ``paid_social`` (the
one social source channel), and a website visit or form on the lead's own source channel (the CRM does not record
what brought a known lead back to the site). An activity channel that is itself a source channel counts as it is;
any other, or one mapped to a channel the CRM does not have, counts on the lead's source channel."""

Unit = Literal["count", "money", "percent", "ratio", "rate", "probability"]


@dataclass(frozen=True)
class Metric:
    """One KPI: its column name, how people call it, its unit, its definition and where it applies."""

    name: str
    label: str
    unit: Unit
    definition: str
    dimensions: tuple[str, ...] = ("all", "channel", "campaign")
    higher_is_better: bool = True
    lower_bound: float | None = 0.0
    upper_bound: float | None = None


_LEAD_SCOPES = ("all", "channel", "campaign")
_CUSTOMER_SCOPES = ("all", "channel", "campaign", "segment")

METRICS: Mapping[str, Metric] = MappingProxyType(
    {
        m.name: m
        for m in (
            Metric("leads", "Leads", "count", "Leads created in the period."),
            Metric("conversions", "Converted leads", "count",
                   "Leads created in the period that became customers before the end of the report window (a "
                   "count of leads, not of all new customers)."),
            Metric("conversion_rate", "Lead-to-customer conversion rate", "percent",
                   "Converted leads / leads, for the leads created in the period (a cohort rate: the most recent "
                   "leads are still converting).", upper_bound=1.0),
            Metric("new_customers", "New customers (all)", "count",
                   "All customers created (acquired) in the period, with or without a lead: besides converted "
                   "leads, customers who bought without being a lead first (e.g. direct).", _CUSTOMER_SCOPES),
            Metric("paid_new_customers", "New customers of paid channels", "count",
                   "New customers acquired through a channel with recorded spend in the report window."),
            Metric("spend", "Marketing spend", "money", "Money spent on the channel or campaign in the period.",
                   higher_is_better=False),
            Metric("cac", "Paid CAC (customer acquisition cost)", "money",
                   "Spend / new customers of the channels with spend: what one paid-for customer cost. For a "
                   "channel, its spend / the new customers it acquired; undefined (a dash, null in JSON) without "
                   "recorded spend, so channels like direct are neither free nor counted.", higher_is_better=False),
            Metric("blended_cac", "Blended CAC", "money",
                   "All spend / all new customers, including those of channels without recorded spend (direct, "
                   "...): always at most the paid CAC. Undefined without spend.", higher_is_better=False),
            Metric("attributed_revenue", "Attributed revenue", "money",
                   "Revenue, from their first order until the end of the report window, of the customers the "
                   "channel or campaign acquired in the period.", _CUSTOMER_SCOPES),
            Metric("roi", "Marketing ROI (paid)", "percent",
                   "(Attributed revenue of the new customers of the channels with spend - spend) / spend: money "
                   "back per unit spent, net of the spend, on the same customers as the paid CAC.", lower_bound=-1.0),
            Metric("historic_cltv", "Historic CLTV", "money",
                   "Actual revenue per customer acquired in the period, to date (attributed revenue / new "
                   "customers).", _CUSTOMER_SCOPES),
            Metric("predicted_cltv", "Predicted CLTV", "money",
                   "Mean predicted future value (customer_scores.clv, discounted, over the CLV model's horizon) "
                   "of the customers acquired in the period that have a score; for a segment, of the customers "
                   "in it at each scoring run.", _CUSTOMER_SCOPES),
            Metric("clv_to_cac", "CLV:CAC ratio (paid)", "ratio",
                   "(Revenue to date + predicted future value) of the new customers of the channels with spend / "
                   "spend, i.e. their lifetime value per customer over the paid CAC. Above 3 is the usual rule of "
                   "thumb."),
            Metric("revenue", "Revenue", "money", "Order revenue placed in the period, by the customer's channel.",
                   _CUSTOMER_SCOPES),
            Metric("p_alive", "Mean P(alive)", "probability",
                   "Mean probability that the customers acquired in the period are still active (CLV model); for "
                   "a segment, of the customers in it at each scoring run.",
                   _CUSTOMER_SCOPES, upper_bound=1.0),
            Metric("customers", "Customers in segment", "count",
                   "Customers in the segment at a scoring run (segments only; trends follow the scoring runs).",
                   ("segment",)),
            Metric("web_sessions", "Web sessions", "count", "Website sessions (web_session activities)."),
            Metric("page_views", "Page views", "count", "Pages viewed (page_view and pricing_page_view activities)."),
            Metric("email_ctr", "Email click-through rate", "percent",
                   "Email clicks / emails sent (email_click / email_sent activities).", upper_bound=1.0),
            Metric("email_open_rate", "Email open rate", "percent", "Email opens / emails sent.", upper_bound=1.0),
            Metric("ad_ctr", "Ad click-through rate", "percent",
                   "Clicks / impressions, from marketing_spend.", upper_bound=1.0),
            Metric("social_engagement_rate", "Social engagement rate", "percent",
                   "Share of active leads (leads with at least one activity of their own in the period) who "
                   "engaged with social content (social_engagement activities).", upper_bound=1.0),
            Metric("engagement_index", "Customer engagement index", "rate",
                   "Micro-conversions (form sign-ups such as the newsletter, content downloads, webinar "
                   "registrations) per web session."),
        )
    }
)
"""Every KPI the report and the targets know, by column name."""

SNAPSHOT_METRICS: tuple[str, ...] = ("customers", "predicted_cltv", "p_alive")
"""Metrics of a segment read from the scoring runs (:func:`features.kpi.metrics.segment_snapshots`), not cohorts."""

COHORT_METRICS: tuple[str, ...] = ("conversions", "conversion_rate")
"""Metrics of the leads created in a period, which keep growing while those leads convert."""
COHORT_MATURITY_DAYS = 90
"""Days a period's leads get to convert before its cohort metrics count towards a target's current value and trend:
the lead model's horizon, within which most conversions happen. Younger periods read low and would bend the
trend down (a 9% channel projected at 0%)."""
