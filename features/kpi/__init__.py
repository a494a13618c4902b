"""Marketing KPIs: definitions, per channel and over time, attribution, SMART targets, predictive KPIs."""
