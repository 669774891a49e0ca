"""Forward-return labels over a horizon counted in bars, under a choice of label definitions.

The predecessor's label, "the h-bar return is above +2 %", is largely a *volatility* label: in a
volatile spell both tails grow, so a model that only sees volatility (ATR) ranks "above +2 %" and
"below -2 %" equally well and scores an AUC above 0.5 with no directional edge at all. The
definitions below are far less exposed, not immune: ``sign`` is predictable from volatility
only through the drift (P(r > 0 | sigma) = Phi(mu h / sigma sqrt(h)): an AUC of ~0.51 at a 10 %
yearly drift) or skewed returns, and ``vol_scaled`` by a forecast of future over trailing
volatility (an oracle of that ratio reached AUC 0.54 on GARCH-t). The briefing's decision does
not rest on any label's AUC but on the rank IC against the forward return (``ml.briefing``):

- ``sign``: the forward return is positive (the default; base rate near 0.5).
- ``vol_scaled``: the forward return exceeds ``vol_k * sigma_t * sqrt(h)``, ``sigma_t`` the
  standard deviation of the last ``vol_window`` daily log returns up to bar t (causal).
- ``fixed``: the predecessor's fixed threshold (``threshold``, default 0.02), kept available.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

LABEL_KINDS = ("sign", "vol_scaled", "fixed")


@dataclass(frozen=True)
class LabelSpec:
    """What ``label = 1`` means for a row; see the module docstring for each ``kind``."""

    kind: str = "sign"
    threshold: float = 0.02
    vol_k: float = 0.5
    vol_window: int = 20

    def __post_init__(self) -> None:
        if self.kind not in LABEL_KINDS:
            raise ValueError(f"label kind must be one of {LABEL_KINDS}, got {self.kind!r}")
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold must be finite, got {self.threshold!r}")
        if not math.isfinite(self.vol_k):
            raise ValueError(f"vol_k must be finite, got {self.vol_k!r}")
        if self.vol_window < 2:
            raise ValueError(f"vol_window must be >= 2 bars, got {self.vol_window}")

    def describe(self, horizon: int) -> str:
        """A one-line definition for metadata and briefings."""
        if self.kind == "sign":
            return f"{horizon}-bar forward return > 0"
        if self.kind == "vol_scaled":
            return (
                f"{horizon}-bar forward return > {self.vol_k:g} x sigma_{self.vol_window} x sqrt({horizon})"
            )
        return f"{horizon}-bar forward return > {self.threshold:g}"


def make_labels(close: pd.Series, horizon: int, spec: LabelSpec | float) -> pd.DataFrame:
    """``forward_return`` = close[t+h] / close[t] - 1 and ``label`` under ``spec``.

    ``spec`` may be a plain float: the predecessor's fixed threshold. The horizon counts bars,
    not calendar days, so holidays do not shorten it. Rows whose horizon runs past the last bar
    given (or, for ``vol_scaled``, with fewer than ``vol_window`` past returns) have NaN in both
    columns: they are dropped later, never filled, so a label never uses a bar the caller did
    not hand over (the caller passes bars up to the window end only). ``label`` is float so it
    can carry those NaNs.
    """
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ValueError(f"horizon must be a positive number of bars, got {horizon!r}")
    if not isinstance(spec, LabelSpec):
        if not np.isfinite(spec):
            raise ValueError(f"threshold must be finite, got {spec!r}")
        spec = LabelSpec(kind="fixed", threshold=float(spec))
    close = close.astype("float64")
    forward_return = close.shift(-int(horizon)) / close - 1.0
    if spec.kind == "sign":
        threshold: pd.Series | float = 0.0
    elif spec.kind == "fixed":
        threshold = spec.threshold
    else:
        sigma = np.log(close).diff().rolling(spec.vol_window, min_periods=spec.vol_window).std()
        threshold = spec.vol_k * sigma * math.sqrt(horizon)
        forward_return = forward_return.where(sigma.notna())
    label = (forward_return > threshold).astype("float64").where(forward_return.notna())
    return pd.DataFrame({"forward_return": forward_return, "label": label}, index=close.index)
