"""Watching the champions over time: input and score drift, realized accuracy, KPI targets (``leadval monitor``)."""
