"""Channel contribution: first-touch, last-touch, linear and Markov removal-effect attribution of conversions.

Every method credits the KPI table's channels (the leads' source channels): a *touchpoint* is a moment a lead
met one of them: the lead's source channel when it entered the CRM (at ``created_at``), then every activity of
its own that names a channel (``activities.channel``; outbound ``email_sent`` is not a touch, the lead did
nothing), counted on the source channel :data:`features.kpi.definitions.TOUCH_CHANNELS` maps it to, in time
order. The leads are those of the KPI table's cohort: created in the window, converted (before its end) or
open. A lead's *path* is its touchpoints up to its conversion (converted leads) or to the end of the window
(open leads); consecutive touches on the same channel count once. Rule-based methods share each conversion
among the channels of converted paths; the Markov method also learns from the paths that did not convert. So
every method credits the KPI table's ``conversions`` in total, and first touch gives each channel its own.

The functions take a touchpoint frame with columns ``lead_id``, ``position`` (0 = first), ``channel`` and
``converted`` (bool, the same on every row of a path), and return the conversions credited per channel; every
method's credits add up to the number of converted paths.

References
----------
Anderl, E., Becker, I., von Wangenheim, F., Schumann, J. H. (2016). Mapping the customer journey: lessons
learned from graph-based online attribution modeling. International Journal of Research in Marketing 33(3).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np
import pandas as pd

from features.errors import InvalidInput
from features.kpi.definitions import LEAD_SOURCE, TOUCH_CHANNELS, UNKNOWN_CHANNEL

NOT_TOUCHES: tuple[str, ...] = ("email_sent",)
"""Activity types that are not touchpoints: the lead did nothing."""

METHODS: tuple[str, ...] = ("first_touch", "last_touch", "linear", "markov")
"""Attribution methods, in the order the report shows them."""

TOUCHPOINT_COLUMNS: tuple[str, ...] = ("lead_id", "position", "channel", "converted")


def touchpoints(
    leads: pd.DataFrame,
    activities: pd.DataFrame,
    start: pd.Timestamp,
    end: pd.Timestamp,
    not_touches: Sequence[str] = NOT_TOUCHES,
    channel_map: Mapping[str, str] = TOUCH_CHANNELS,
    channels: Collection[str] | None = None,
) -> pd.DataFrame:
    """The touchpoint paths of the leads created in ``[start, end)``: converted before ``end``, or still open.

    A converted lead's path stops at its conversion (touches at the same instant count); an open lead's at
    ``end``. Activity channels count as ``channel_map`` says (see :data:`TOUCH_CHANNELS`); ``channels`` are the
    channels a touch may count on (default: the leads' source channels), any other touch counts on the lead's own.
    """
    created = (leads["created_at"] >= start) & (leads["created_at"] < end)
    scoped = leads[created]
    if scoped.empty:
        return pd.DataFrame({"lead_id": pd.Series(dtype=object), "position": pd.Series(dtype="int64"),
                             "channel": pd.Series(dtype=object), "converted": pd.Series(dtype=bool)})
    ids = scoped["lead_id"].to_numpy()
    source = pd.Series(scoped["source_channel"].astype("object").fillna(UNKNOWN_CHANNEL).to_numpy(), index=ids)
    known = set(source) if channels is None else set(channels)
    done = (scoped["converted_at"].notna() & (scoped["converted_at"] < end)).to_numpy()
    is_converted = pd.Series(done, index=ids)
    cutoff = pd.Series(scoped["converted_at"].where(done, end).to_numpy(dtype="datetime64[ns]"), index=ids)
    sources = pd.DataFrame({"lead_id": ids, "at": scoped["created_at"].to_numpy(), "tie": 0,
                            "channel": source.to_numpy()})
    acts = activities[activities["channel"].notna() & ~activities["activity_type"].isin(list(not_touches))]
    limit = cutoff.reindex(acts["lead_id"].to_numpy()).to_numpy()
    acts = acts[~np.isnat(limit) & (acts["occurred_at"].to_numpy(dtype="datetime64[ns]") <= limit)]
    touches = pd.DataFrame({
        "lead_id": acts["lead_id"].to_numpy(),
        "at": acts["occurred_at"].to_numpy(),
        "tie": 1,
        "channel": source_channels(acts["channel"], source.reindex(acts["lead_id"].to_numpy()), channel_map, known),
    })
    frame = pd.concat([sources, touches], ignore_index=True)
    frame = frame.sort_values(["lead_id", "at", "tie"], kind="stable")
    frame["converted"] = frame["lead_id"].map(is_converted).astype(bool)
    return collapse_repeats(frame[["lead_id", "channel", "converted"]])


def source_channels(
    touched: pd.Series, lead_source: pd.Series, channel_map: Mapping[str, str], channels: Collection[str]
) -> np.ndarray:
    """The source channel each activity channel counts on: itself if it is one of ``channels``, else its mapping
    if that is one of them, else the lead's own source channel (``lead_source``, row for row)."""
    named = touched.astype(str).reset_index(drop=True)
    allowed = list(channels)
    mapped = named.where(named.isin(allowed), named.map(dict(channel_map)).fillna(LEAD_SOURCE))
    return np.where(mapped.isin(allowed), mapped.to_numpy(dtype=object), lead_source.to_numpy()).astype(object)


def collapse_repeats(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop touches on the same channel as the touch before them in the same path; number what is left."""
    same_lead = frame["lead_id"].eq(frame["lead_id"].shift())
    repeat = same_lead & frame["channel"].eq(frame["channel"].shift())
    kept = frame[~repeat].copy()
    kept["position"] = kept.groupby("lead_id", sort=False).cumcount()
    return kept[list(TOUCHPOINT_COLUMNS)].reset_index(drop=True)


def paths_frame(paths: Sequence[Sequence[str]], converted: Sequence[bool] | None = None) -> pd.DataFrame:
    """A touchpoint frame from literal paths (``[["paid_search", "email"], ...]``), all converted by default."""
    flags = [True] * len(paths) if converted is None else list(converted)
    if len(flags) != len(paths):
        raise InvalidInput(f"converted: {len(flags)} flags for {len(paths)} paths; expected one per path")
    rows = [
        {"lead_id": f"path{i}", "position": j, "channel": channel, "converted": bool(flag)}
        for i, (path, flag) in enumerate(zip(paths, flags))
        for j, channel in enumerate(path)
    ]
    return pd.DataFrame(rows, columns=list(TOUCHPOINT_COLUMNS))


def _checked(frame: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in TOUCHPOINT_COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidInput(f"touchpoints: missing column(s) {', '.join(missing)}; "
                           f"expected {', '.join(TOUCHPOINT_COLUMNS)}")
    return frame.sort_values(["lead_id", "position"], kind="stable")


def _converted(frame: pd.DataFrame) -> pd.DataFrame:
    ordered = _checked(frame)
    return ordered[ordered["converted"].astype(bool)]


def _credit(channels: pd.Series, weights: pd.Series | float, name: str) -> pd.Series:
    frame = pd.DataFrame({"channel": channels.to_numpy(), "credit": weights})
    return frame.groupby("channel")["credit"].sum().astype("float64").rename(name)


def first_touch(frame: pd.DataFrame) -> pd.Series:
    """Each conversion credited wholly to the first channel of its path."""
    firsts = _converted(frame).drop_duplicates("lead_id", keep="first")
    return _credit(firsts["channel"], 1.0, "first_touch")


def last_touch(frame: pd.DataFrame) -> pd.Series:
    """Each conversion credited wholly to the last channel before it."""
    lasts = _converted(frame).drop_duplicates("lead_id", keep="last")
    return _credit(lasts["channel"], 1.0, "last_touch")


def linear(frame: pd.DataFrame) -> pd.Series:
    """Each conversion shared equally among the touchpoints of its path."""
    conv = _converted(frame)
    share = 1.0 / conv.groupby("lead_id", sort=False)["channel"].transform("size").to_numpy(dtype="float64")
    return _credit(conv["channel"], share, "linear")


def _transitions(frame: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Channels, start probabilities, channel-to-channel and channel-to-conversion transition probabilities."""
    ordered = _checked(frame)
    channels = sorted(ordered["channel"].astype(str).unique())
    index = {c: i for i, c in enumerate(channels)}
    n = len(channels)
    state = ordered["channel"].map(index).to_numpy()
    lead = ordered["lead_id"].to_numpy()
    first = np.r_[True, lead[1:] != lead[:-1]] if len(lead) else np.array([], dtype=bool)
    last = np.r_[lead[1:] != lead[:-1], True] if len(lead) else np.array([], dtype=bool)
    starts = np.bincount(state[first], minlength=n).astype("float64")
    moves = np.zeros((n, n))
    inner = ~last
    np.add.at(moves, (state[inner], state[1:][inner[:-1]]), 1.0)
    converted = ordered["converted"].astype(bool).to_numpy()
    to_conversion = np.bincount(state[last & converted], minlength=n).astype("float64")
    to_null = np.bincount(state[last & ~converted], minlength=n).astype("float64")
    outgoing = moves.sum(axis=1) + to_conversion + to_null
    total_starts = starts.sum()
    start_p = starts / total_starts if total_starts else starts
    with np.errstate(invalid="ignore", divide="ignore"):
        move_p = np.where(outgoing[:, None] > 0, moves / outgoing[:, None], 0.0)
        conv_p = np.where(outgoing > 0, to_conversion / outgoing, 0.0)
    return channels, start_p, move_p, conv_p


def _conversion_probability(start: np.ndarray, moves: np.ndarray, conversion: np.ndarray) -> float:
    """Probability of reaching conversion from the start of the absorbing Markov chain."""
    if not len(start):
        return 0.0
    reach = np.linalg.solve(np.eye(len(start)) - moves, conversion)
    return float(start @ reach)


def removal_effects(frame: pd.DataFrame) -> pd.Series:
    """Markov removal effect per channel: the share of conversions lost if the channel's touches led nowhere.

    A first-order chain (start -> channels -> conversion or null) is estimated from all paths; removing a
    channel sends every transition into it to null. Effect = 1 - P(conversion without it) / P(conversion).
    """
    channels, start, moves, conversion = _transitions(frame)
    base = _conversion_probability(start, moves, conversion)
    effects = []
    for i in range(len(channels)):
        keep = np.ones(len(channels), dtype=bool)
        keep[i] = False
        without = _conversion_probability(start[keep], moves[np.ix_(keep, keep)], conversion[keep])
        effects.append(1.0 - without / base if base > 0 else 0.0)
    return pd.Series(effects, index=pd.Index(channels, name="channel"), dtype="float64", name="removal_effect")


def markov(frame: pd.DataFrame) -> pd.Series:
    """Conversions shared among channels in proportion to their Markov removal effects."""
    return _shared(removal_effects(frame), frame)


def _shared(effects: pd.Series, frame: pd.DataFrame) -> pd.Series:
    conversions = float(_converted(frame)["lead_id"].nunique())
    total = effects.sum()
    credit = effects / total * conversions if total > 0 else effects * 0.0
    return credit.rename("markov")


def attribution_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Conversions credited to each channel by every method, side by side, most credited (linear) first.

    Returns ``channel``, one column per method in :data:`METHODS`, ``removal_effect`` and each method's share of
    the conversions (``first_touch_share`` ..., adding up to 1 when anything converted).
    """
    shares = [f"{method}_share" for method in METHODS]
    columns = ["channel", *METHODS, "removal_effect", *shares]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    effects = removal_effects(frame)
    parts = [first_touch(frame), last_touch(frame), linear(frame), _shared(effects, frame), effects]
    table = pd.concat(parts, axis=1).fillna(0.0)
    table.index.name = "channel"
    conversions = float(_converted(frame)["lead_id"].nunique())
    for method, share in zip(METHODS, shares):
        table[share] = table[method] / conversions if conversions else 0.0
    table = table.reset_index().sort_values(["linear", "channel"], ascending=[False, True])
    return table[columns].reset_index(drop=True)
