"""Time-ordered splits with a purge gap, because forward labels of neighbouring rows overlap.

A label at row i uses closes up to row i + horizon. With ``gap = horizon`` no training label's
interval overlaps a validation/test label's interval, on either side. Nothing is shuffled.
"""

from __future__ import annotations

import math

import numpy as np


def _check_n_gap(n: int, gap: int) -> None:
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")


def train_val_split(n: int, val_fraction: float, gap: int) -> tuple[np.ndarray, np.ndarray]:
    """The last ``ceil(n * val_fraction)`` rows validate; the ``gap`` rows before them are purged.

    Raises ValueError when either side would be empty, rather than report a score on nothing.
    """
    _check_n_gap(n, gap)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = max(1, math.ceil(n * val_fraction))
    val_start = n - n_val
    train_end = val_start - gap
    if train_end < 1:
        raise ValueError(
            f"{n} rows cannot hold a validation part of {n_val} rows, a gap of {gap} "
            "and at least one training row"
        )
    return np.arange(0, train_end), np.arange(val_start, n)


def purged_kfold(n: int, n_splits: int, gap: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Contiguous test blocks in time order; training drops ``gap`` rows on both sides of each.

    The rows before a block are purged (their labels reach into it) and the rows after it are
    embargoed (the block's labels reach into them). Every row is in exactly one test block. A
    training part can be empty when ``gap`` is large; callers handle that case.
    """
    _check_n_gap(n, gap)
    if n_splits < 2:
        raise ValueError(f"n_splits must be >= 2, got {n_splits}")
    if n < n_splits:
        raise ValueError(f"cannot cut {n} rows into {n_splits} test blocks")
    folds: list[tuple[np.ndarray, np.ndarray]] = []
    idx = np.arange(n)
    for block in np.array_split(idx, n_splits):
        lo, hi = int(block[0]), int(block[-1])
        train = idx[(idx < lo - gap) | (idx > hi + gap)]
        folds.append((train, block.copy()))
    return folds
