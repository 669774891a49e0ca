"""Write bars in the predecessor's daily-file layout (`<SYMBOL>/1day/<YYYY-MM-DD>.csv`) for tests."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd


def write_daily(
    data_dir: Path, symbol: str, start: date, end: date, *, seed: int = 0, bump: float = 1.0
) -> int:
    """One file per weekday in [start, end] with a deterministic price path; returns files written.

    `bump` scales the prices, so rewriting a day with bump != 1 is a correction of that day. Each
    file gets an explicit mtime derived from its date and bump, so tests never depend on clock
    granularity.
    """
    days = pd.bdate_range(start, end)
    rng = np.random.default_rng([seed, start.toordinal()])
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(days)))) * bump
    folder = data_dir / symbol / "1day"
    folder.mkdir(parents=True, exist_ok=True)
    for day, c in zip(days, close, strict=True):
        path = folder / f"{day.date().isoformat()}.csv"
        path.write_text(
            "timestamp,open,high,low,close,volume\n"
            f"{day.date().isoformat()} 00:00:00+05:30,{c:.4f},{c * 1.01:.4f},{c * 0.99:.4f},{c:.4f},1000\n"
        )
        stamp = int(day.timestamp()) + int(bump * 1000)
        os.utime(path, ns=(stamp * 10**9, stamp * 10**9))
    return len(days)


def write_bars(data_dir: Path, symbol: str, bars: pd.DataFrame) -> Path:
    """One file per bar of `bars` (a source's frame) in `<SYMBOL>/1day/`; returns that folder."""
    folder = data_dir / symbol / "1day"
    folder.mkdir(parents=True, exist_ok=True)
    for ts, row in bars.iterrows():
        (folder / f"{ts.date().isoformat()}.csv").write_text(
            "timestamp,open,high,low,close,volume\n"
            f"{ts.isoformat(sep=' ')},{row.open},{row.high},{row.low},{row.close},{row.volume}\n"
        )
    return folder
