"""Time-ordered splits: no overlap, a purge gap before validation, purge + embargo around folds."""

from __future__ import annotations

import numpy as np
import pytest

from sensequant_assets.ml.splits import purged_kfold, train_val_split


@pytest.mark.parametrize(
    ("n", "val_fraction", "gap"),
    [(100, 0.2, 7), (123, 0.25, 5), (50, 0.1, 0), (30, 0.5, 3), (1000, 0.2, 7)],
)
def test_train_val_split_is_time_ordered_and_purged(n: int, val_fraction: float, gap: int) -> None:
    train, val = train_val_split(n, val_fraction, gap)
    assert not set(train) & set(val)
    assert train.max() + gap < val.min()
    assert val.min() - train.max() - 1 == gap  # exactly `gap` rows purged, no more
    assert np.array_equal(train, np.arange(len(train)))  # the head, in order
    assert np.array_equal(val, np.arange(n - len(val), n))  # the tail, in order
    assert len(val) == int(np.ceil(n * val_fraction))
    assert len(train) + gap + len(val) == n


def test_train_val_split_refuses_impossible_requests() -> None:
    with pytest.raises(ValueError, match="training row"):
        train_val_split(10, 0.5, 5)
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(100, 0.0, 1)
    with pytest.raises(ValueError, match="gap"):
        train_val_split(100, 0.2, -1)


@pytest.mark.parametrize(("n", "k", "gap"), [(100, 5, 7), (101, 4, 3), (37, 5, 0), (500, 5, 7)])
def test_purged_kfold_covers_each_row_once_and_leaves_the_gap(n: int, k: int, gap: int) -> None:
    folds = purged_kfold(n, k, gap)
    assert len(folds) == k
    tests = np.concatenate([test for _, test in folds])
    assert np.array_equal(tests, np.arange(n))  # each row once, blocks in time order
    for train, test in folds:
        assert np.array_equal(test, np.arange(test[0], test[-1] + 1))  # contiguous
        assert not set(train) & set(test)
        before, after = train[train < test[0]], train[train > test[-1]]
        assert len(before) + len(after) == len(train)
        if len(before):
            assert test[0] - before.max() - 1 == gap  # purge before the block
        else:
            assert test[0] <= gap
        if len(after):
            assert after.min() - test[-1] - 1 == gap  # embargo after the block
        else:
            assert n - 1 - test[-1] <= gap
        # Everything outside block +/- gap is used for training.
        expected = np.setdiff1d(np.arange(n), np.arange(test[0] - gap, test[-1] + gap + 1))
        assert np.array_equal(train, expected)


def test_purged_kfold_refuses_impossible_requests() -> None:
    with pytest.raises(ValueError, match="n_splits"):
        purged_kfold(10, 1, 0)
    with pytest.raises(ValueError, match="test blocks"):
        purged_kfold(3, 5, 0)
