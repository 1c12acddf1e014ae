"""Human approval of exact actions: the record (`model`), its durable store, the desk that decides (M of N)."""
