"""Bounded retries for the bucket steps: a transient error (a busy disk, a network filesystem hiccup)
costs a retry, not a failed backfill; a deterministic one fails after the last attempt with its error."""

from dagster import Backoff, RetryPolicy

BUCKET_RETRIES = RetryPolicy(max_retries=2, delay=5, backoff=Backoff.EXPONENTIAL)
