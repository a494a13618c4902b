"""CRM contracts, storage and point-in-time feature pipelines (pure pandas at the core)."""
