"""Validation of the store, in plain Python (no Dagster): one module per validation.

`completeness`, `quality`, `consistency` and `integrity` each offer `validate_<name>(settings, bucket)`,
which judges one bucket (or the whole store with `bucket=None`) with a Great Expectations suite and
returns a `result.ValidationResult`: the verdict, GX's statistics, and the failing stocks and columns.
`integrity` also has the plain checks that operations reuse (`stock_problems`, `damaged_stocks`). The
Dagster asset checks (`precompute_assets.defs.precompute.checks`) are thin wrappers around these functions.
"""
