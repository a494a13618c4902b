"""User engagement time: the measured time leads spent interacting, per lead, source channel and content item.

Counted, for the activities that happened in the window (by ``occurred_at``), from ``activities.duration_seconds``:

- every ``web_session`` with its whole duration (a session that runs past the window's end counts where it starts);
- every ``webinar_attend`` with the time attended;
- a ``page_view`` or ``pricing_page_view`` only when it lies outside every web session of the same lead. A page
  view is *inside* a session when the lead has a ``web_session`` whose ``[occurred_at, occurred_at +
  duration_seconds]`` (both ends included) holds the page view's ``occurred_at``, whether or not that session falls
  in the window. The schema has no session id, so time is the link; the simulator writes every page view inside
  its session this way, so there a session's page views are never added on top of it. A session without a
  measured duration holds no page views: theirs then counts.

Nothing else counts (emails, downloads, forms have no duration), nor the gaps between activities: idle time is
not engagement time. Activities without a measured duration count as sessions, webinars or page views but add no
seconds; when nothing counted was measured the seconds are NaN (unknown), not 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.kpi.definitions import UNKNOWN_CHANNEL
from features.kpi.tables import KpiTables, Window

SESSION = "web_session"
WEBINAR = "webinar_attend"
PAGE_VIEWS: tuple[str, ...] = ("page_view", "pricing_page_view")
"""Activity types that are page views: counted only outside the lead's web sessions."""

NO_CONTENT = "(none)"

ENGAGEMENT_TIME_DEFINITION = (
    "User engagement time: the measured time leads actually interacted (activities.duration_seconds) — whole web "
    "sessions, webinar attendance, and page views only where they lie outside every web session of the lead (a page "
    "view inside a session is part of the session's time and is not counted twice). Gaps between activities are not "
    "counted. It differs from dwell time, the span from arriving to leaving (first to last hit, or time a page stays "
    "open), which includes idle time; engagement time counts only the measured interaction, so it is never larger. "
    "Per lead, per source channel (the lead's) and per content item (a session's landing page, the webinar, the page); "
    "activities are counted in the period they start in."
)
"""The glossary text of engagement time and how it differs from dwell time."""

_PARTS = ("session_seconds", "webinar_seconds", "page_view_seconds")
TABLE_COLUMNS: tuple[str, ...] = (
    "engagement_seconds", *_PARTS, "sessions", "webinars", "page_views_outside_sessions", "engaged_leads",
    "seconds_per_engaged_lead", "seconds_per_session",
)
"""Columns of the per-channel, per-content and per-lead tables after their key columns."""
_ACTIVITY_COLUMNS = ("lead_id", "occurred_at", "activity_type", "content_id", "duration_seconds")


@dataclass(frozen=True)
class EngagementTime:
    """Engagement time in a window: ``totals`` (``engagement_time_*``), per channel, content and lead, and warnings.

    The tables have their key (``channel``; ``content_id``; ``lead_id`` and ``channel``) then :data:`TABLE_COLUMNS`,
    most engagement first.
    """

    totals: dict[str, float]
    by_channel: pd.DataFrame
    by_content: pd.DataFrame
    by_lead: pd.DataFrame
    warnings: tuple[str, ...] = ()


def page_views_in_sessions(activities: pd.DataFrame) -> pd.Series:
    """Whether each activity is a page view inside one of its lead's measured web sessions (the index kept)."""
    inside = pd.Series(False, index=activities.index)
    kinds = activities["activity_type"].astype("object")
    timed = activities["occurred_at"].notna()
    views = activities[kinds.isin(PAGE_VIEWS) & timed]
    sessions = activities[(kinds == SESSION) & timed & activities["duration_seconds"].notna()]
    if views.empty or sessions.empty:
        return inside
    spans = pd.DataFrame({
        "lead": sessions["lead_id"].astype(str).to_numpy(),
        "time": sessions["occurred_at"].to_numpy(dtype="datetime64[ns]"),
        "reach": (sessions["occurred_at"] + pd.to_timedelta(sessions["duration_seconds"], unit="s")).to_numpy(),
    }).sort_values(["lead", "time"], kind="stable")
    spans["reach"] = spans.groupby("lead", sort=False)["reach"].cummax()
    hits = pd.DataFrame({
        "lead": views["lead_id"].astype(str).to_numpy(),
        "time": views["occurred_at"].to_numpy(dtype="datetime64[ns]"),
        "row": views.index,
    }).sort_values("time", kind="stable")
    matched = pd.merge_asof(hits, spans.sort_values("time", kind="stable"), on="time", by="lead",
                            direction="backward")
    covered = matched["reach"].notna() & (matched["time"] <= matched["reach"])
    inside.loc[matched.loc[covered.to_numpy(), "row"].to_numpy()] = True
    return inside


def counted_activities(crm: KpiTables, window: Window) -> tuple[pd.DataFrame, int]:
    """The activities in ``window`` whose time counts, and how many page views were left out as inside sessions.

    One row per activity: ``lead_id``, ``channel`` (the lead's source channel), ``content_id``, ``kind``
    (``session``, ``webinar`` or ``page_view``) and ``seconds`` (NaN where not measured). Optional columns
    missing from ``activities`` (``content_id``, ``duration_seconds``) read as empty.
    """
    acts = crm.activities.reindex(columns=[*_ACTIVITY_COLUMNS])
    kinds = acts["activity_type"].astype("object")
    inside_session = page_views_in_sessions(acts)
    in_window = window.contains(acts["occurred_at"]).to_numpy()
    views = kinds.isin(PAGE_VIEWS).to_numpy()
    kind = np.select([(kinds == SESSION).to_numpy(), (kinds == WEBINAR).to_numpy(), views & ~inside_session],
                     ["session", "webinar", "page_view"], "")
    kept = in_window & (kind != "")
    sources = crm.leads.set_index("lead_id")["source_channel"].astype("object")
    lead_ids = acts["lead_id"].astype(str)[kept]
    content = acts["content_id"].astype("object")[kept]
    frame = pd.DataFrame({
        "lead_id": lead_ids.to_numpy(),
        "channel": lead_ids.map(sources).fillna(UNKNOWN_CHANNEL).to_numpy(dtype=object),
        "content_id": content.where(content.notna() & (content != ""), NO_CONTENT).to_numpy(dtype=object),
        "kind": kind[kept],
        "seconds": acts["duration_seconds"].to_numpy(dtype="float64")[kept],
    })
    return frame, int((in_window & views & inside_session.to_numpy()).sum())


def _summarised(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Seconds, counts and per-lead and per-session means of ``frame`` grouped by ``keys``."""
    columns = [*keys, *TABLE_COLUMNS]
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype=object if c in keys else "float64") for c in columns})
    work = frame.assign(
        session_seconds=frame["seconds"].where(frame["kind"] == "session"),
        webinar_seconds=frame["seconds"].where(frame["kind"] == "webinar"),
        page_view_seconds=frame["seconds"].where(frame["kind"] == "page_view"),
        sessions=(frame["kind"] == "session").astype("float64"),
        webinars=(frame["kind"] == "webinar").astype("float64"),
        page_views_outside_sessions=(frame["kind"] == "page_view").astype("float64"),
        measured_session=((frame["kind"] == "session") & frame["seconds"].notna()).astype("float64"),
        engaged_lead=frame["lead_id"].where(frame["seconds"].notna()),
    )
    grouped = work.groupby(keys, sort=False, dropna=False)
    table = pd.concat([
        grouped[["seconds", *_PARTS]].sum(min_count=1).rename(columns={"seconds": "engagement_seconds"}),
        grouped[["sessions", "webinars", "page_views_outside_sessions", "measured_session"]].sum(),
        grouped["engaged_lead"].nunique().astype("float64").rename("engaged_leads"),
    ], axis=1)
    table["seconds_per_engaged_lead"] = _ratio(table["engagement_seconds"], table["engaged_leads"])
    table["seconds_per_session"] = _ratio(table["session_seconds"], table["measured_session"])
    order = ["engagement_seconds", "sessions", *keys]
    table = table.reset_index().sort_values(order, ascending=[False, False, *(True for _ in keys)],
                                            na_position="last", kind="stable")
    return table[columns].reset_index(drop=True)


def _ratio(numerator: pd.Series, denominator: pd.Series) -> np.ndarray:
    """``numerator / denominator``, NaN where the denominator is not positive."""
    num = np.asarray(numerator, dtype="float64")
    den = np.asarray(denominator, dtype="float64")
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def engagement_time(crm: KpiTables, window: Window) -> EngagementTime:
    """Engagement time in ``window``: totals, and per source channel, content item and lead (see the module)."""
    frame, in_sessions = counted_activities(crm, window)
    everything = _summarised(frame.assign(scope="all"), ["scope"])
    row = everything.iloc[0] if len(everything) else pd.Series(np.nan, index=everything.columns)
    names = {
        "engagement_seconds": "seconds", "session_seconds": "session_seconds", "webinar_seconds": "webinar_seconds",
        "page_view_seconds": "page_view_seconds", "sessions": "sessions", "webinars": "webinars",
        "page_views_outside_sessions": "page_views_outside_sessions", "engaged_leads": "engaged_leads",
        "seconds_per_engaged_lead": "per_engaged_lead_seconds", "seconds_per_session": "per_session_seconds",
    }
    totals = {f"engagement_time_{key}": float(row[column]) for column, key in names.items()}
    for count in ("sessions", "webinars", "page_views_outside_sessions", "engaged_leads"):
        totals[f"engagement_time_{count}"] = float(np.nan_to_num(totals[f"engagement_time_{count}"]))
    totals["engagement_time_page_views_in_sessions"] = float(in_sessions)
    unmeasured = int(frame["seconds"].isna().sum())
    totals["engagement_time_unmeasured"] = float(unmeasured)
    warnings: list[str] = []
    if len(frame) and unmeasured == len(frame):
        warnings.append(f"none of the {len(frame):,} sessions, webinars and page views in the window has a "
                        "duration_seconds: engagement time is unknown")
    elif unmeasured:
        warnings.append(f"{unmeasured:,} of {len(frame):,} sessions, webinars and page views in the window have no "
                        "duration_seconds; they are counted but add no time")
    return EngagementTime(
        totals=totals,
        by_channel=_summarised(frame, ["channel"]),
        by_content=_summarised(frame, ["content_id"]),
        by_lead=_summarised(frame, ["lead_id", "channel"]),
        warnings=tuple(warnings),
    )
