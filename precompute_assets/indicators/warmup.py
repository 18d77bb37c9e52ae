"""NaN past each column's warm-up, on the days a stock has input: what the build records and the
quality check judges, counted the same way in both."""

from __future__ import annotations

import numpy as np


def nan_after_warmup(values: np.ndarray, with_input: np.ndarray, warmups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of `values` (rows x columns): NaN count and row count past the column's warm-up.

    Only rows where `with_input` is True count, and a column's first `warmups[j]` of them are its
    warm-up (missing days do not use it up).
    """
    rank = np.cumsum(with_input) - 1  # position of a day among the days with input
    counted = with_input[:, None] & (rank[:, None] >= warmups[None, :])
    return (np.isnan(values) & counted).sum(axis=0), counted.sum(axis=0)
