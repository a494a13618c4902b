"""Request timestamps read in bulk: ISO 8601 texts to naive UTC ``datetime64``, the first unreadable one named."""

from __future__ import annotations

from typing import TYPE_CHECKING

from serving.api.schemas import EARLIEST, LATEST

if TYPE_CHECKING:
    import numpy as np

MICROSECOND_TEXT = len("2024-05-01T09:30:00.123456")
"""The longest offset-free ISO 8601 text of at most microsecond precision."""


def _numpy_times(texts: list[str]) -> np.ndarray | None:
    """Offset-free texts of at most microsecond precision as ``datetime64[us]``, by numpy; None for any other.

    Microseconds, not nanoseconds: numpy wraps years outside 1678-2262 around silently at ns
    ("2604-06-01" would read as 2019), at us they stay what they are and the range check refuses them.
    """
    import warnings

    import numpy as np

    if max(map(len, texts), default=0) > MICROSECOND_TEXT:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return np.array(texts, dtype="datetime64[us]")
    except (ValueError, OverflowError, Warning):
        return None


def utc_times(texts: list[str]) -> tuple[np.ndarray, int | None]:
    """ISO 8601 texts as naive UTC ``datetime64[ns]``, and the index of the first unreadable one (or None).

    Offsets are converted to UTC, times without one are taken as UTC, and times outside
    1970-01-01..2200-01-01 count as unreadable. Texts without offsets (what CRMs mostly send) are
    parsed by numpy, ~2x faster than pandas and ~25x for a single lead's few; anything numpy refuses or
    warns about (offsets, ``Z``, a bad value, digits beyond microseconds) goes to pandas, which reads
    offsets and finds the bad value.
    """
    import numpy as np
    import pandas as pd

    stamps = _numpy_times(texts)
    if stamps is None:
        stamps = pd.to_datetime(texts, utc=True, format="ISO8601", errors="coerce").tz_localize(None).to_numpy()
    bad = np.isnat(stamps) | (stamps < np.datetime64(EARLIEST, "us")) | (stamps >= np.datetime64(LATEST, "us"))
    if bad.any():
        return stamps, int(np.argmax(bad))
    return stamps.astype("datetime64[ns]"), None
