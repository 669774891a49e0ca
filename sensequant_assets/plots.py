"""Figures for the UI and the artifact directories (matplotlib, headless)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import pandas as pd


def equity_png(equity: pd.DataFrame, title: str) -> bytes:
    """Strategy vs buy-and-hold equity curves as a small PNG (no timestamp metadata: reproducible).

    Uses a bare `Figure` (no pyplot global state, no GUI backend) and imports matplotlib lazily,
    since most processes that import this module never draw.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.2), dpi=100)
    ax = fig.subplots()
    x = pd.to_datetime(equity.index)
    ax.plot(x, equity["strategy_equity"], label="student long/flat (after costs)", lw=1.6)
    ax.plot(x, equity["buy_hold_equity"], label="buy and hold", lw=1.2, alpha=0.8)
    ax.axhline(1.0, color="grey", lw=0.6)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("equity")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    # Fixed margins: `tight_layout` draws the figure once more to measure it (a third of the cost).
    fig.subplots_adjust(left=0.09, right=0.98, top=0.9, bottom=0.2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def reliability_png(
    curves: dict[str, Sequence[dict[str, Any]]], title: str, base_rate: float | None = None
) -> bytes:
    """Reliability diagram: observed frequency of label 1 against the mean forecast, per bin.

    ``curves`` maps a legend label to :func:`~sensequant_assets.ml.evaluation.reliability_diagram`
    bins (e.g. the calibrated student and the distilled student before calibration); each bin is a
    point with its 95 % interval. Points on the diagonal are calibrated; a flat row of points far
    from it is an overconfident forecast. ``base_rate`` (the window's share of label 1) is drawn as
    a horizontal line. Same conventions as :func:`equity_png` (bare Figure, reproducible bytes).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.8, 4.4), dpi=100)
    ax = fig.subplots()
    ax.plot([0.0, 1.0], [0.0, 1.0], color="grey", lw=0.8, ls="--", label="perfect calibration")
    if base_rate is not None:
        ax.axhline(base_rate, color="grey", lw=0.6, alpha=0.7, label=f"window base rate {base_rate:.2f}")
    for (name, bins), marker in zip(curves.items(), ("o", "s", "^", "D"), strict=False):
        if not bins:
            continue
        x = [b["mean_proba"] for b in bins]
        y = [b["observed_rate"] for b in bins]
        err = [
            [max(0.0, b["observed_rate"] - b["observed_low"]) for b in bins],
            [max(0.0, b["observed_high"] - b["observed_rate"]) for b in bins],
        ]
        ax.errorbar(x, y, yerr=err, marker=marker, ms=4, lw=1.2, capsize=2, label=name)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("mean predicted P(label = 1) in bin")
    ax.set_ylabel("observed share of label 1")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=7)
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.13, right=0.97, top=0.88, bottom=0.11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


INLINE_COLOURS = 32


def inline_png(png: bytes) -> bytes:
    """The figure with a palette of `INLINE_COLOURS` colours: a third to a quarter of the bytes
    (about 10-12 KiB for our figures, against 40-45 KiB), still sharp, for the event log; the
    full-colour file stays in the partition directory."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(png)).convert("RGB")
    except OSError:  # not an image PIL can read: inline it as it is rather than lose the evaluation
        return png
    palette = image.quantize(colors=INLINE_COLOURS, method=Image.Quantize.MEDIANCUT)
    buf = io.BytesIO()
    palette.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def png_markdown(png: bytes, alt: str) -> str:
    """Inline a PNG in markdown metadata, which the Dagster UI renders on the materialisation
    (compacted by `inline_png`: every byte here is stored in the event log)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(inline_png(png)).decode()})"
