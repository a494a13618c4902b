"""The nightly write-back jobs (pandas and Spark engines) and the run ledger that makes them resumable."""
