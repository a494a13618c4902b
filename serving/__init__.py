"""What users run: the scoring API, the nightly write-back jobs, the KPI report and the `leadval` command line."""
