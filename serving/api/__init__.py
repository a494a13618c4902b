"""The scoring API: the BentoML service, its request validation, limits and the champions it serves."""
