"""Reason codes: each lead's top factors raising and lowering its score, worded for a salesperson.

LightGBM's ``pred_contrib`` gives per-feature SHAP values in log-odds; the contributions of a lead
plus the bias add up to the model's raw margin. Features that describe one thing are grouped first
(the 7/30/90-day counts and the recency of pricing-page visits are one factor, "pricing-page visits");
the factors with the largest positive and negative sums become the reasons, each worded from the
member feature that contributed most, e.g. "4 pricing-page visits in the last 7 days",
"source: paid social", "no demo request yet". "Up" and "down" are relative to the average lead.

Reasons a salesperson can believe (``ReasonCoder(evidence=True)``, every model saved since scorer format
2): an up reason states evidence present on the lead (an activity, its recency, a profile attribute,
the lead's age); a factor whose wording states an absence (:func:`states_absence`: a zero count, no
event yet, a value not known or recorded as "unknown"/"none", a 0% rate, no engagement time, not
active) is not shown as raising the score, even
where the model's contribution is positive (the model learned that the *average* lead is worse off,
which no salesperson reads into "no website visit yet"). Likewise a down reason never states a fresh
intent signal (:func:`states_fresh_intent`: any count of, or a last event within :data:`FRESH_DAYS`
days of, an :data:`INTENT_ACTIVITIES` activity). Such a factor is dropped and the next factor in the
same direction that passes takes its place, so a lead keeps up to 3 reasons each way. Contributions
themselves are untouched (they still add up to the margin); only what is worded is chosen.
Models saved in format 1 keep their reasons as they were (``evidence=False``).

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
SMALL_ROWS = 48
"""Up to this many rows reasons are chosen and worded in plain Python rather than numpy (same phrases; numpy's
fixed costs, ~0.6 ms, outweigh Python's ~20 us a row below ~70 rows)."""
INTENT_ACTIVITIES: tuple[str, ...] = ("pricing_page_view", "demo_request", "webinar_register", "webinar_attend",
                                      "form_submit")
"""Activities that show buying intent (the lead raised a hand): never worded as lowering a score."""
FRESH_DAYS = 30
"""An intent event at most this many days ago is fresh (the longest count window a salesperson calls recent)."""
ABSENT_CATEGORIES = frozenset({"unknown", "none", "nonexistent", "not known", "not specified", "unspecified",
                               "missing", "n/a", "null", "nan", ""})
"""Category values that record an absence (compared lower-cased, ``_`` read as a space): "job: unknown" is no
evidence."""

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
    ``intent``: a count or recency of an intent activity (:data:`INTENT_ACTIVITIES`).
    """

    feature: str
    group: str
    kind: str
    label: str
    plural: str = ""
    window: int = 0
    intent: bool = False


def crm_wording(features: Sequence[str]) -> tuple[FeatureWording, ...]:
    """Wording of the CRM lead features (:mod:`features.lead_features`); other names are worded as numbers."""
    known: dict[str, FeatureWording] = {
        name: FeatureWording(name, name, "category", PROFILE_LABELS.get(name, name)) for name in PROFILE_FEATURES
    }
    for activity in ACTIVITY_TYPES:
        singular, plural = ACTIVITY_NOUNS[activity]
        intent = activity in INTENT_ACTIVITIES
        for window in WINDOWS_DAYS:
            name = f"{activity}_{window}d"
            known[name] = FeatureWording(name, activity, "count", singular, plural, window, intent)
        name = f"days_since_last_{activity}"
        known[name] = FeatureWording(name, activity, "recency", singular, intent=intent)
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
        amount = ("no engagement time" if missing or value <= 0 else "under a minute of engagement" if minutes == 0
                  else f"{minutes} minute{'s' if minutes > 1 else ''} of engagement")
        return f"{amount} in the last {wording.window} days"
    if kind == "rate":
        return "no emails received yet" if missing else f"{label} {round(100 * value)}% of emails received"
    if kind == "active_days":
        days = 0 if missing else int(round(value))
        if days == 0:
            return f"not active in the last {wording.window} days"
        return f"active on {days} day{'s' if days > 1 else ''} in the last {wording.window} days"
    raise ValueError(f"unknown wording kind {kind!r} of feature {wording.feature!r}")


_MISSING, _ZERO, _ZERO_RATE, _NEVER, _NONE = range(5)
_ABSENCE_RULE = {"category": _MISSING, "number": _MISSING, "recency": _MISSING,
                 "count": _ZERO, "minutes": _NONE, "active_days": _ZERO,
                 "rate": _ZERO_RATE, "age": _NEVER}
"""When :func:`phrase` words an absence, by kind: when missing ("not known", "no ... yet"), when missing or
rounding to 0 ("no ... in the last 7 days", "not active"), when missing or 0% ("no emails received yet", "opened 0%
of emails received"), when missing or none at all ("no engagement time": 30 seconds are "under a minute of
engagement"), never (a lead's age)."""


def absent_category(category: object) -> bool:
    """Whether a category value records an absence (:data:`ABSENT_CATEGORIES`)."""
    return str(category).strip().lower().replace("_", " ") in ABSENT_CATEGORIES


def states_absence(wording: FeatureWording, value: float, categories: Sequence[str] = ()) -> bool:
    """Whether :func:`phrase` words this value as an absence (nothing recorded, not known, "unknown", zero, 0%)."""
    rule = _ABSENCE_RULE.get(wording.kind, _NEVER)
    missing = value is None or math.isnan(value)
    if wording.kind == "category" and not missing:
        return absent_category(categories[int(value)])
    if rule == _MISSING or missing:
        return missing and rule != _NEVER
    if rule == _ZERO:
        return abs(value) <= 0.5  # rounds to 0, as phrase() rounds it (half to even)
    if rule == _NONE:
        return value <= 0
    return rule == _ZERO_RATE and abs(100 * value) <= 0.5


def states_fresh_intent(wording: FeatureWording, value: float) -> bool:
    """Whether :func:`phrase` words a fresh intent signal: any count of an intent activity, or its last event
    at most :data:`FRESH_DAYS` days ago as worded (days are truncated: "30 days ago" is under 31)."""
    if not wording.intent or value is None or math.isnan(value):
        return False
    if wording.kind == "count":
        return value > 0.5  # rounds to 1 or more
    return wording.kind == "recency" and value < FRESH_DAYS + 1  # worded "30 days ago" up to 31 days


def _display_key(kind: str, value: np.ndarray) -> np.ndarray:
    """Per value, a number :func:`phrase` reads alone (equal keys, equal phrases; missing values share NaN or
    their zero): the rounding ``phrase`` applies, done once in numpy."""
    if kind in ("recency", "age"):
        days = np.where(np.isnan(value), 0.0 if kind == "age" else np.nan, value)
        return np.where(days < 1, -1.0, np.where(days < 60, np.trunc(days), 1_000 + np.round(days / 30.44)))
    if kind in ("count", "active_days"):
        return np.round(np.nan_to_num(value, nan=0.0))
    if kind == "minutes":  # under a minute is worded apart from none at all
        minutes = np.round(np.nan_to_num(value, nan=0.0))
        return np.where((minutes == 0) & (value > 0), -1.0, minutes)
    if kind == "rate":
        return np.round(100 * value)
    return value


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
    categories, indexed by the codes the model sees. ``evidence``: up reasons only state evidence present
    on the lead and down reasons never a fresh intent signal (see the module docstring); False words the
    top factors whatever they say (models saved in scorer format 1).
    """

    wording: tuple[FeatureWording, ...]
    categories: dict[str, tuple[str, ...]]
    evidence: bool = True

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
    def _member_lists(self) -> tuple[list[int], ...]:
        return tuple(m.tolist() for m in self._members)

    @cached_property
    def _padded_members(self) -> np.ndarray:
        """(factors x most members) feature indexes, short rows padded with their first member (which
        changes no first arg-max: the copy comes after the original)."""
        width = max(len(m) for m in self._member_lists)
        return np.array([m + [m[0]] * (width - len(m)) for m in self._member_lists], dtype="int64")

    @cached_property
    def _indicator(self) -> np.ndarray:
        indicator = np.zeros((len(self.wording), len(self.groups)))
        for g, members in enumerate(self._members):
            indicator[members, g] = 1.0
        return indicator

    @cached_property
    def _rules(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per feature: its absence rule, whether it is an intent count, whether it is an intent recency, and
        where its categories start in the last array (-1: not a category), which says per category whether it
        records an absence."""
        rule = np.array([_ABSENCE_RULE.get(w.kind, _NEVER) for w in self.wording], dtype="int64")
        count = np.array([w.intent and w.kind == "count" for w in self.wording], dtype=bool)
        recency = np.array([w.intent and w.kind == "recency" for w in self.wording], dtype=bool)
        categories = [self.categories.get(w.feature, ()) if w.kind == "category" else () for w in self.wording]
        start = np.cumsum([0] + [len(c) for c in categories[:-1]]).astype("int64")
        start[[w.kind != "category" for w in self.wording]] = -1
        absent = np.array([absent_category(c) for c in chain.from_iterable(categories)], dtype=bool)
        return rule, count, recency, start, absent

    def grouped(self, contributions: np.ndarray) -> np.ndarray:
        """(rows x factors) sums of the per-feature contributions (bias column, if present, dropped)."""
        return contributions[:, : len(self.wording)] @ self._indicator

    def phrases(self, contributions: np.ndarray, values: np.ndarray, top: int = TOP_REASONS) -> ReasonPhrases:
        """The reasons of each row (``contributions`` as ``pred_contrib`` gives them, ``values`` the model's input).

        Per row and direction, factors in order of their summed contribution (above :data:`MIN_IMPACT`), each
        worded by its member feature pushing hardest that way; with ``evidence``, a factor whose wording
        states an absence (up) or a fresh intent (down) is passed over for the next one.
        """
        n = len(values)
        contributions = contributions[:, : len(self.wording)]
        grouped = contributions @ self._indicator
        k = min(top, grouped.shape[1])
        if n <= SMALL_ROWS:
            return self._few_phrases(contributions, values, grouped, k)
        up_feature = self._choose(contributions, values, grouped, 1.0, k)
        down_feature = self._choose(contributions, values, -grouped, -1.0, k)
        up_rows, up_columns = np.nonzero(up_feature >= 0)
        down_rows, down_columns = np.nonzero(down_feature >= 0)
        texts = self._word(values, np.concatenate([up_rows, down_rows]),
                           np.concatenate([up_feature[up_rows, up_columns], down_feature[down_rows, down_columns]]))
        up = np.full((n, k), "", dtype=object)
        down = np.full((n, k), "", dtype=object)
        up[up_rows, up_columns] = texts[: len(up_rows)]
        down[down_rows, down_columns] = texts[len(up_rows):]
        return ReasonPhrases(up, down)

    def _choose(self, contributions: np.ndarray, values: np.ndarray, strength: np.ndarray, sign: float,
                k: int) -> np.ndarray:
        """(rows x k) the features worded as reasons in one direction, strongest first, -1 where none.

        ``strength`` is the factors' contributions in that direction (``sign`` x grouped). The top ``k``
        factors of every row are checked at once; rows that lost a factor to the evidence check then take
        one more factor per round until they have ``k`` or none is left above :data:`MIN_IMPACT`.
        """
        n, width = strength.shape
        order = np.argsort(-strength, axis=1, kind="stable")
        groups = order[:, :k]
        live = np.take_along_axis(strength, groups, axis=1) > MIN_IMPACT
        rows = np.repeat(np.arange(n), k)
        feature = self._lead_members(contributions, rows, groups.ravel(), sign).reshape(n, k)
        ok = live & self._admissible(values, rows, feature.ravel(), sign).reshape(n, k)
        chosen = np.full((n, k), -1, dtype="int64")
        found = ok.sum(axis=1)
        chosen[np.nonzero(ok)[0], (np.cumsum(ok, axis=1) - 1)[ok]] = feature[ok]
        if not self.evidence:
            return chosen
        rows = np.flatnonzero(live[:, -1] & (found < k))
        for position in range(k, width):
            if not len(rows):
                break
            group = order[rows, position]
            live = strength[rows, group] > MIN_IMPACT
            rows, group = rows[live], group[live]
            feature = self._lead_members(contributions, rows, group, sign)
            ok = self._admissible(values, rows, feature, sign)
            chosen[rows[ok], found[rows[ok]]] = feature[ok]
            found[rows[ok]] += 1
            rows = rows[found[rows] < k]
        return chosen

    def _lead_members(self, contributions: np.ndarray, rows: np.ndarray, groups: np.ndarray,
                      sign: float) -> np.ndarray:
        """The member feature of each (row, factor) pushing hardest in the ``sign`` direction (first on ties)."""
        members = self._padded_members[groups]
        push = contributions[rows[:, None], members] * sign
        return members[np.arange(len(rows)), np.argmax(push, axis=1)]

    def _admissible(self, values: np.ndarray, rows: np.ndarray, features: np.ndarray, sign: float) -> np.ndarray:
        """:func:`states_absence` (up) or :func:`states_fresh_intent` (down) negated, for many values at once."""
        if not self.evidence:
            return np.ones(len(rows), dtype=bool)
        value = values[rows, features]
        rule, count, recency, start, absent_categories = self._rules
        if sign > 0:
            rule = rule[features]
            missing = np.isnan(value)
            absent = ((missing & (rule != _NEVER)) | ((rule == _ZERO) & (np.abs(value) <= 0.5))
                      | ((rule == _NONE) & (value <= 0)) | ((rule == _ZERO_RATE) & (np.abs(100 * value) <= 0.5)))
            category = (start[features] >= 0) & ~missing
            if category.any():
                absent[category] = absent_categories[start[features[category]] + value[category].astype("int64")]
            return ~absent
        return ~((count[features] & (value > 0.5)) | (recency[features] & (value < FRESH_DAYS + 1)))

    def _word(self, values: np.ndarray, rows: np.ndarray, features: np.ndarray) -> np.ndarray:
        """The phrase of each chosen (row, feature); each distinct phrase is worded once (values that read
        the same, e.g. 3.2 and 3.9 days ago, share a :func:`_display_key`)."""
        texts = np.empty(len(rows), dtype=object)
        for f in np.unique(features).tolist():
            chosen = np.flatnonzero(features == f)
            wording = self.wording[f]
            categories = self.categories.get(wording.feature, ())
            value = values[rows[chosen], f]
            _, first, position = np.unique(_display_key(wording.kind, value), return_index=True, return_inverse=True)
            worded = np.array([phrase(wording, v, categories) for v in value[first].tolist()], dtype=object)
            texts[chosen] = worded[position]
        return texts

    def _few_phrases(self, contributions: np.ndarray, values: np.ndarray, grouped: np.ndarray,
                     k: int) -> ReasonPhrases:
        """:meth:`phrases` for a few rows, in plain Python (numpy's per-call costs dominate there): the same
        order (a stable sort), the same member (first strongest) and the same checks, scalar."""
        n = len(values)
        up = np.full((n, k), "", dtype=object)
        down = np.full((n, k), "", dtype=object)
        for row, (pushes, row_values, sums) in enumerate(zip(contributions.tolist(), values.tolist(),
                                                              grouped.tolist(), strict=True)):
            for sign, out in ((1.0, up), (-1.0, down)):
                column = 0
                for group in sorted(range(len(sums)), key=lambda g: -(sums[g] * sign)):
                    if sums[group] * sign <= MIN_IMPACT:
                        break
                    feature = max(self._member_lists[group], key=lambda m: pushes[m] * sign)
                    wording = self.wording[feature]
                    categories = self.categories.get(wording.feature, ())
                    if self.evidence and (states_absence(wording, row_values[feature], categories) if sign > 0
                                          else states_fresh_intent(wording, row_values[feature])):
                        continue
                    out[row, column] = phrase(wording, row_values[feature], categories)
                    column += 1
                    if column == k:
                        break
        return ReasonPhrases(up, down)
