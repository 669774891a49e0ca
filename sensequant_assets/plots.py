"""Figures for the UI and the artifact directories (matplotlib, headless)."""

from __future__ import annotations

import base64
import io

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
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def png_markdown(png: bytes, alt: str) -> str:
    """Inline a PNG in markdown metadata, which the Dagster UI renders on the materialisation."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
