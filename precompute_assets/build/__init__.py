"""The precompute's steps: per-stock plans, intermediates between steps, buckets, freshness, progress."""
