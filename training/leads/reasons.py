"""Reason codes: each lead's top factors raising and lowering its score, worded for a salesperson.

LightGBM's ``pred_contrib`` gives per-feature SHAP values in log-odds; the contributions of a lead
plus the bias add up to the model's raw margin. Features that describe one thing are grouped first
(the 7/30/90-day counts and the recency of pricing-page visits are one factor, "pricing-page visits");
the factors with the largest positive and negative sums become the reasons, each worded from the
member feature that contributed most, e.g. "4 pricing-page visits in the last 7 days",
"source: paid social", "no demo request yet". "Up" and "down" are relative to the average lead.

Output per lead: up to 3 phrases up and 3 down, strongest first (:class:`ReasonPhrases`), as lists for
the API or as the JSON string ``{"up": [...], "down": [...]}`` the CRM stores; factors moving the log-odds
by less than :data:`MIN_IMPACT` are left out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import chain

import numpy as np

from features.crm.schema import ACTIVITY_TYPES
from features.lead_features import PROFILE_FEATURES, WINDOWS_DAYS

TOP_REASONS = 3
MIN_IMPACT = 0.01
"""Smallest absolute log-odds contribution worth telling a salesperson about."""
SMALL_CHOICE = 60
"""Up to this many (lead, factor) reasons are worded in plain Python rather than numpy (same phrases)."""

ACTIVITY_NOUNS: dict[str, tuple[str, str]] = {
    "web_session": ("website visit", "website visits"),
    "page_view": ("page view", "page views"),
    "pricing_page_view": ("pricing-page visit", "pricing-page visits"),
    "email_sent": ("email received", "emails received"),
    "email_open": ("email opened", "emails opened"),
    "email_click": ("email click", "email clicks"),
    "form_submit": ("form submitted", "forms submitted"),
    "content_download": ("content download", "content downloads"),
    "webinar_register": ("webinar registration", "webinar registrations"),
    "webinar_attend": ("webinar attended", "webinars attended"),
    "demo_request": ("demo request", "demo requests"),
    "social_engagement": ("social interaction", "social interactions"),
}
PROFILE_LABELS: dict[str, str] = {
    "source_channel": "source",
    "campaign": "campaign",
    "country": "country",
    "industry": "industry",
    "company_size": "company size",
    "job_seniority": "seniority",
    "email_domain_type": "email domain",
}


@dataclass(frozen=True)
class FeatureWording:
    """How one feature is grouped and worded.

    ``kind`` is one of: category, count, recency, age, minutes, rate, active_days, number.
    ``label`` is the category label, the verb of a rate or the singular noun of an event.
    """

    feature: str
    group: str
    kind: str
    label: str
    plural: str = ""
    window: int = 0


def crm_wording(features: Sequence[str]) -> tuple[FeatureWording, ...]:
    """Wording of the CRM lead features (:mod:`features.lead_features`); other names are worded as numbers."""
    known: dict[str, FeatureWording] = {
        name: FeatureWording(name, name, "category", PROFILE_LABELS.get(name, name)) for name in PROFILE_FEATURES
    }
    for activity in ACTIVITY_TYPES:
        singular, plural = ACTIVITY_NOUNS[activity]
        for window in WINDOWS_DAYS:
            name = f"{activity}_{window}d"
            known[name] = FeatureWording(name, activity, "count", singular, plural, window)
        name = f"days_since_last_{activity}"
        known[name] = FeatureWording(name, activity, "recency", singular)
    for window in WINDOWS_DAYS:
        name = f"engagement_minutes_{window}d"
        known[name] = FeatureWording(name, "engagement_time", "minutes", "engagement", window=window)
    known.update({
        "days_since_created": FeatureWording("days_since_created", "lead_age", "age", "lead created"),
        "days_since_last_activity": FeatureWording("days_since_last_activity", "recent_activity", "recency",
                                                   "activity"),
        "active_days_30d": FeatureWording("active_days_30d", "recent_activity", "active_days", "active", window=30),
        "email_open_rate": FeatureWording("email_open_rate", "email_open", "rate", "opened"),
        "email_click_rate": FeatureWording("email_click_rate", "email_click", "rate", "clicked"),
    })
    return tuple(known.get(name, FeatureWording(name, name, "number", name)) for name in features)


def column_wording(features: Sequence[str], categorical: Collection[str]) -> tuple[FeatureWording, ...]:
    """Wording of a flat file's columns: ``column: value``, each column its own factor."""
    return tuple(FeatureWording(name, name, "category" if name in categorical else "number", name)
                 for name in features)


def _when(days: float) -> str:
    if days < 1:
        return "today"
    if days < 2:
        return "yesterday"
    if days < 60:
        return f"{int(days)} days ago"
    return f"{round(days / 30.44)} months ago"


def _count(value: float, singular: str, plural: str) -> str:
    n = int(round(value))
    return f"no {plural}" if n == 0 else f"1 {singular}" if n == 1 else f"{n} {plural}"


def phrase(wording: FeatureWording, value: float, categories: Sequence[str] = ()) -> str:
    """One feature value in words (``value`` is the category code for categorical features)."""
    missing = value is None or math.isnan(value)
    kind, label = wording.kind, wording.label
    if kind == "category":
        if missing:
            return f"{label} not known"
        return f"{label}: {str(categories[int(value)]).replace('_', ' ')}"
    if kind == "number":
        return f"{label} not known" if missing else f"{label}: {value:.4g}"
    if kind == "count":
        return f"{_count(0 if missing else value, label, wording.plural)} in the last {wording.window} days"
    if kind == "recency":
        return f"no {label} yet" if missing else f"last {label} {_when(value)}"
    if kind == "age":
        return f"{label} {_when(0 if missing else value)}"
    if kind == "minutes":
        minutes = 0 if missing else round(value)
        amount = "no engagement time" if minutes == 0 else f"{minutes} minute{'s' if minutes > 1 else ''} of engagement"
        return f"{amount} in the last {wording.window} days"
    if kind == "rate":
        return "no emails received yet" if missing else f"{label} {round(100 * value)}% of emails received"
    if kind == "active_days":
        days = 0 if missing else int(round(value))
        if days == 0:
            return f"not active in the last {wording.window} days"
        return f"active on {days} day{'s' if days > 1 else ''} in the last {wording.window} days"
    raise ValueError(f"unknown wording kind {kind!r} of feature {wording.feature!r}")


_quoted = json.encoder.encode_basestring
"""A phrase as a JSON string, exactly as ``json.dumps(text, ensure_ascii=False)`` writes it, without its
per-call set-up (a 1,000-lead batch has ~2,400 distinct phrases)."""


@dataclass(frozen=True)
class ReasonPhrases:
    """Per row, the phrases raising (``up``) and lowering (``down``) its score, strongest first.

    Both are (rows x top) object arrays; rows with fewer reasons are padded with ``""``.
    """

    up: np.ndarray
    down: np.ndarray

    def lists(self) -> list[dict[str, list[str]]]:
        """Per row ``{"up": [...], "down": [...]}`` (the API's ``reasons``)."""
        return [{"up": list(filter(None, u)), "down": list(filter(None, d))}
                for u, d in zip(self.up.tolist(), self.down.tolist(), strict=True)]

    def json(self) -> list[str]:
        """Per row the JSON string ``{"up": [...], "down": [...]}`` (what the CRM stores); each phrase quoted once."""
        up, down = self.up.tolist(), self.down.tolist()
        quoted = {text: _quoted(text) for text in set(chain.from_iterable(up + down)) if text}
        return [f'{{"up": [{", ".join(filter(None, map(quoted.get, u)))}], '
                f'"down": [{", ".join(filter(None, map(quoted.get, d)))}]}}'
                for u, d in zip(up, down, strict=True)]


@dataclass(frozen=True)
class ReasonCoder:
    """Turns a model's ``pred_contrib`` output into grouped contributions and worded reasons.

    ``wording`` is in the model's feature order; ``categories`` maps categorical features to their
    categories, indexed by the codes the model sees.
    """

    wording: tuple[FeatureWording, ...]
    categories: dict[str, tuple[str, ...]]

    @cached_property
    def groups(self) -> tuple[str, ...]:
        """Factor names, in order of first appearance."""
        return tuple(dict.fromkeys(w.group for w in self.wording))

    @cached_property
    def _members(self) -> tuple[np.ndarray, ...]:
        index = {g: i for i, g in enumerate(self.groups)}
        members: list[list[int]] = [[] for _ in self.groups]
        for j, w in enumerate(self.wording):
            members[index[w.group]].append(j)
        return tuple(np.array(m) for m in members)

    @cached_property
    def _indicator(self) -> np.ndarray:
        indicator = np.zeros((len(self.wording), len(self.groups)))
        for g, members in enumerate(self._members):
            indicator[members, g] = 1.0
        return indicator

    def grouped(self, contributions: np.ndarray) -> np.ndarray:
        """(rows x factors) sums of the per-feature contributions (bias column, if present, dropped)."""
        return contributions[:, : len(self.wording)] @ self._indicator

    def phrases(self, contributions: np.ndarray, values: np.ndarray, top: int = TOP_REASONS) -> ReasonPhrases:
        """The reasons of each row (``contributions`` as ``pred_contrib`` gives them, ``values`` the model's input)."""
        n = len(values)
        contributions = contributions[:, : len(self.wording)]
        grouped = contributions @ self._indicator
        k = min(top, grouped.shape[1])
        up_groups = np.argsort(-grouped, axis=1, kind="stable")[:, :k]
        down_groups = np.argsort(grouped, axis=1, kind="stable")[:, :k]
        up_ok = np.take_along_axis(grouped, up_groups, axis=1) > MIN_IMPACT
        down_ok = np.take_along_axis(grouped, down_groups, axis=1) < -MIN_IMPACT
        rows = np.concatenate([np.nonzero(up_ok)[0], np.nonzero(down_ok)[0]])
        groups = np.concatenate([up_groups[up_ok], down_groups[down_ok]])
        direction = np.concatenate([np.ones(up_ok.sum()), -np.ones(down_ok.sum())])
        texts = self._phrases(contributions, values, rows, groups, direction)
        up = np.full((n, k), "", dtype=object)
        down = np.full((n, k), "", dtype=object)
        up[up_ok] = texts[: up_ok.sum()]
        down[down_ok] = texts[up_ok.sum():]
        return ReasonPhrases(up, down)

    def _phrases(self, contributions: np.ndarray, values: np.ndarray, rows: np.ndarray, groups: np.ndarray,
                 direction: np.ndarray) -> np.ndarray:
        """The phrase of each chosen (row, factor), from the member feature pushing hardest in the
        factor's direction; each distinct value is worded once."""
        if len(rows) <= SMALL_CHOICE:
            return self._few_phrases(contributions, values, rows, groups, direction)
        feature = np.empty(len(rows), dtype="int64")
        for g in np.unique(groups):
            chosen = np.flatnonzero(groups == g)
            members = self._members[g]
            push = contributions[rows[chosen][:, None], members[None, :]] * direction[chosen, None]
            feature[chosen] = members[np.argmax(push, axis=1)]
        texts = np.empty(len(rows), dtype=object)
        for f in np.unique(feature):
            chosen = np.flatnonzero(feature == f)
            wording = self.wording[f]
            categories = self.categories.get(wording.feature, ())
            distinct, position = np.unique(values[rows[chosen], f], return_inverse=True)
            worded = np.array([phrase(wording, v, categories) for v in distinct.tolist()], dtype=object)
            texts[chosen] = worded[position]
        return texts

    @cached_property
    def _member_lists(self) -> tuple[list[int], ...]:
        return tuple(m.tolist() for m in self._members)

    def _few_phrases(self, contributions: np.ndarray, values: np.ndarray, rows: np.ndarray, groups: np.ndarray,
                     direction: np.ndarray) -> np.ndarray:
        """:meth:`_phrases` for a few choices, in plain Python (numpy's per-call costs dominate there)."""
        texts = np.empty(len(rows), dtype=object)
        row_cache: dict[int, tuple[list[float], list[float]]] = {}
        for i, (row, group, sign) in enumerate(zip(rows.tolist(), groups.tolist(), direction.tolist(), strict=True)):
            if row not in row_cache:
                row_cache[row] = (contributions[row].tolist(), values[row].tolist())
            pushes, row_values = row_cache[row]
            members = self._member_lists[group]
            feature = max(members, key=lambda m: pushes[m] * sign)
            wording = self.wording[feature]
            texts[i] = phrase(wording, row_values[feature], self.categories.get(wording.feature, ()))
        return texts
