"""The simulated marketing content: pages, assets, forms, nurture mails, newsletters, webinars and social posts.

Every ``content_id`` an activity can carry comes from :func:`content_catalog`, with the calendars of the
monthly newsletter and webinar that email and event behaviour follow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.simulate.config import SimulationConfig

NURTURE_DAYS = (0.01, 2.0, 5.0, 9.0, 16.0, 30.0)
PAGES: tuple[tuple[str, float], ...] = (
    ("/", 0.25), ("/product", 0.12), ("/features/lead-scoring", 0.08), ("/features/lifetime-value", 0.08),
    ("/integrations", 0.06), ("/customers", 0.06), ("/about", 0.03), ("/docs", 0.07),
    *((f"/blog/post-{k:02d}", 0.25 / 30) for k in range(1, 31)),
)
ASSETS: tuple[str, ...] = (
    "ebook-lead-scoring-guide", "ebook-crm-data-quality", "whitepaper-clv-benchmarks",
    "whitepaper-attribution", "case-study-retail", "case-study-saas", "case-study-fintech",
    "checklist-marketing-ops", "report-state-of-b2b-sales", "template-roi-calculator",
)
FORM_IDS: tuple[str, ...] = ("form-signup", "event-badge-scan", "form-contact", "form-trial", "form-demo")


@dataclass(frozen=True)
class ContentCatalog:
    """Every ``content_id`` an activity can carry, and the newsletter and webinar calendars."""

    content: tuple[str, ...]
    newsletter_seconds: np.ndarray
    newsletter_codes: np.ndarray
    webinar_seconds: np.ndarray
    webinar_codes: np.ndarray
    weeks: int

    def code(self, content_id: str) -> int:
        return self.content.index(content_id)

    @property
    def social_first(self) -> int:
        return len(self.content) - self.weeks


def content_catalog(config: SimulationConfig) -> ContentCatalog:
    """Pages, assets, forms, nurture mails, monthly newsletters (first Tuesday 10:00), monthly webinars
    (third Thursday 16:00, one past the end so late registrations have one) and weekly social posts."""
    start, end = pd.Timestamp(config.starts_at), pd.Timestamp(config.end)
    months = pd.date_range(start.replace(day=1), end + pd.Timedelta(days=31), freq="MS")
    first_tuesday = months + pd.to_timedelta((1 - months.dayofweek) % 7, unit="D") + pd.Timedelta(hours=10)
    third_thursday = months + pd.to_timedelta((3 - months.dayofweek) % 7 + 14, unit="D") + pd.Timedelta(hours=16)
    newsletters = first_tuesday[(first_tuesday >= start) & (first_tuesday < end)]
    webinars = third_thursday[third_thursday >= start]
    weeks = config.timeline_days // 7 + 1
    content = [
        *(page for page, _ in PAGES), "/pricing", *ASSETS, *FORM_IDS,
        *(f"nurture-{k}" for k in range(1, len(NURTURE_DAYS) + 1)),
        *(f"newsletter-{t:%Y-%m}" for t in newsletters),
        *(f"webinar-{t:%Y-%m}" for t in webinars),
        *(f"social-post-{k:03d}" for k in range(1, weeks + 1)),
    ]
    newsletter_first = content.index(f"nurture-{len(NURTURE_DAYS)}") + 1
    webinar_first = newsletter_first + len(newsletters)
    return ContentCatalog(
        content=tuple(content),
        newsletter_seconds=((newsletters - start).total_seconds()).to_numpy(),
        newsletter_codes=np.arange(newsletter_first, newsletter_first + len(newsletters)),
        webinar_seconds=((webinars - start).total_seconds()).to_numpy(),
        webinar_codes=np.arange(webinar_first, webinar_first + len(webinars)),
        weeks=weeks,
    )
