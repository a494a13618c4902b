"""Kept so lead models registered before the move to ``training.leads`` still load: their pickles name this module."""

from training.leads.pyfunc import LeadScoringModel

__all__ = ["LeadScoringModel"]
