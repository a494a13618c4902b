"""Category codes read by a dict (up to ``SMALL_FRAME`` rows) and by pandas (more rows) are the same codes, for the
text and missing values the CRM and the API send."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from training.leads.spec import _category_codes, _small_category_codes

TRAINING = ["web", "paid_search", "1", "1.5", "True", "DE", "é ✓"]
VALUES = st.one_of(st.sampled_from([*TRAINING, "unseen", "", None, np.nan, pd.NA]), st.text(max_size=5))


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.lists(VALUES, max_size=40))
def test_the_dict_and_pandas_give_the_same_codes(values: list) -> None:
    column = np.array(values, dtype=object)
    by_pandas = _category_codes(pd.Series(column, dtype=object), pd.Index(TRAINING))
    by_dict = _small_category_codes(column.tolist(), {name: code for code, name in enumerate(TRAINING)})
    np.testing.assert_array_equal(np.asarray(by_dict, dtype="float64"), by_pandas)
