"""Dagster asset checks: thin wrappers that run the core validations and report them as metadata."""

from precompute_assets.checks.store_checks import STORE_CHECKS

__all__ = ["STORE_CHECKS"]
