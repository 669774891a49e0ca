"""Forward-return labels over a horizon counted in bars."""

from __future__ import annotations

import numpy as np
import pandas as pd


def make_labels(close: pd.Series, horizon: int, threshold: float) -> pd.DataFrame:
    """``forward_return`` = close[t+h] / close[t] - 1 and ``label`` = 1 if it exceeds ``threshold``.

    The horizon counts bars, not calendar days, so holidays do not shorten it. Rows whose
    horizon runs past the last bar given have NaN in both columns: they are dropped later,
    never filled, so a label never uses a bar the caller did not hand over (the caller passes
    bars up to the window end only). ``label`` is float so it can carry those NaNs.
    """
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ValueError(f"horizon must be a positive number of bars, got {horizon!r}")
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    close = close.astype("float64")
    forward_return = close.shift(-int(horizon)) / close - 1.0
    label = (forward_return > threshold).astype("float64").where(forward_return.notna())
    return pd.DataFrame({"forward_return": forward_return, "label": label}, index=close.index)
