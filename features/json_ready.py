"""Values as JSON can hold them: the one converter behind ``--json`` output, reports, model cards and parameters."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd


def json_ready(value: Any) -> Any:
    """``value`` with NaN, infinities, NaT and NA as None, numpy scalars as Python numbers and times as ISO text.

    Mappings, lists and tuples are converted item by item; anything else is returned as it is.
    """
    if isinstance(value, Mapping):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
