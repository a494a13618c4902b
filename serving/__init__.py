"""The BentoML service, the batch write-back jobs and the `leadval` command line."""
