"""The KPI report: its figures, charts and the page's template."""
