"""The value-weighted lead score: how much a lead is worth, not only how likely it is to convert.

``expected_value = P(convert) x V(channel)``, where V is the CLV model's predicted value of a new
customer acquired through the lead's source channel (:func:`training.clv.predict.new_customer_value`;
channels the CLV model does not know get its overall value). The service and the batch job both call
:func:`expected_values`, so they agree to the last digit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from features.lead_features import PROFILE_FEATURES
from training.clv.predict import CLVParameters, new_customer_value

if TYPE_CHECKING:
    from features.lead_features import LeadFeatureArrays
    from training.leads.scorer import LeadScorer, LeadScores


def expected_values(
    probability: Sequence[float], channels: Sequence[str], clv: CLVParameters | None
) -> list[float | None]:
    """``probability x`` the new-customer value of each lead's channel; all None without a CLV model."""
    if clv is None:
        return [None] * len(probability)
    value = {channel: new_customer_value(clv, channel) for channel in set(channels)}
    out: list[float | None] = []
    for p, channel in zip(probability, channels, strict=True):
        v = float(p) * value[channel]
        out.append(v if math.isfinite(v) else None)
    return out


def lead_values(scorer: LeadScorer, clv: CLVParameters | None, features: LeadFeatureArrays
                ) -> tuple[LeadScores, list[float | None]]:
    """Scores and value-weighted ``expected_value`` of leads' features: the one scoring path of the API and the
    batch job (:func:`serving.batch.pool.chunk_scores`); no MLflow, so served models need none."""
    scores = scorer.predict_features(features)
    channels = features.profile[:, PROFILE_FEATURES.index("source_channel")].tolist()
    return scores, expected_values(scores.probability.tolist(), channels, clv)
