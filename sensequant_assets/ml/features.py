"""The predecessor's 15 technical features and the scale-free matrix the models train on.

Every indicator is strictly causal: the value at bar t is computed from bars <= t only. Rolling
windows are trailing, exponential smoothers are recursive (``adjust=False``), nothing is centred,
back-filled or normalised with statistics of the whole series. Rows whose indicators have not
filled yet are NaN, never filled; :data:`WARMUP_BARS` says how much history makes them settle.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BAR_COLUMNS: list[str] = ["open", "high", "low", "close", "volume"]

FEATURE_COLUMNS: list[str] = [
    "sma_20",
    "sma_50",
    "ema_12",
    "ema_26",
    "rsi_14",
    "atr_14",
    "vwap",
    "bb_upper",
    "bb_middle",
    "bb_lower",
    "macd_line",
    "macd_signal",
    "macd_histogram",
    "adx_14",
    "obv",
]

# Bars of history needed before the first usable row. sma_50 needs 50 bars; the recursive
# smoothers (EMA-26, MACD signal, Wilder's ATR/RSI/ADX, ADX being smoothed twice) start from
# their first observation and forget it geometrically: after 120 bars the start-up weight is
# (25/27)**120 ~ 1e-4 for EMA-26 and (13/14)**120 ~ 1e-4 for Wilder-14, so a row's features no
# longer depend on where the supplied history happens to begin.
WARMUP_BARS: int = 120
# Calendar days before a window that hold WARMUP_BARS trading days, with room for holidays: the
# history every fit reads (the teacher asset and ml.protocol alike).
HISTORY_DAYS: int = -(-WARMUP_BARS * 7 * 115 // (5 * 100)) + 10

# Scale-free model inputs, derived only from the 15 features (and the bar's own close/volume
# used to express them relative to the price and volume level).
MODEL_FEATURES: list[str] = [
    "m_sma_20",  # sma_20 / close - 1
    "m_sma_50",  # sma_50 / close - 1
    "m_ema_12",  # ema_12 / close - 1
    "m_ema_26",  # ema_26 / close - 1
    "m_vwap",  # vwap / close - 1
    "m_atr_14",  # atr_14 / close
    "m_bb_width",  # (bb_upper - bb_lower) / bb_middle
    "m_bb_position",  # (close - bb_lower) / (bb_upper - bb_lower), 0.5 when the bands touch
    "m_macd_line",  # macd_line / close
    "m_macd_signal",  # macd_signal / close
    "m_macd_histogram",  # macd_histogram / close
    "m_rsi_14",  # rsi_14 / 100
    "m_adx_14",  # adx_14 / 100
    "m_obv_flow",  # (obv[t] - obv[t-20]) / sum(volume[t-19..t])
]

_SMA_FAST = 20
_SMA_SLOW = 50
_WILDER = 14
_VWAP_WINDOW = 20
_BB_WINDOW = 20
_BB_K = 2.0
_MACD_FAST, _MACD_SLOW, _MACD_SIGNAL = 12, 26, 9
_OBV_WINDOW = 20


def validate_bars(bars: pd.DataFrame) -> None:
    """Refuse input the indicators would silently mis-handle (unsorted, duplicated, missing columns)."""
    if not isinstance(bars, pd.DataFrame):
        raise TypeError(f"bars must be a pandas DataFrame, got {type(bars).__name__}")
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise ValueError(f"bars lack columns {missing}; expected {BAR_COLUMNS}")
    if not isinstance(bars.index, pd.DatetimeIndex):
        raise ValueError("bars must be indexed by a DatetimeIndex")
    if len(bars.index) > 1 and not (bars.index.is_monotonic_increasing and bars.index.is_unique):
        raise ValueError("bar timestamps must be strictly increasing")


def _wilder(series: pd.Series, min_periods: int = _WILDER) -> pd.Series:
    """Wilder's smoothing (an EMA with alpha = 1/14), recursive and therefore causal."""
    return series.ewm(alpha=1.0 / _WILDER, adjust=False, min_periods=min_periods).mean()


def _ema(series: pd.Series, span: int) -> pd.Series:
    return series.ewm(span=span, adjust=False, min_periods=span).mean()


def compute_features(bars: pd.DataFrame) -> pd.DataFrame:
    """The 15 predecessor features, same index as ``bars``, NaN until each indicator has filled.

    vwap is a rolling 20-bar volume-weighted typical price ((high + low + close) / 3), not a
    session VWAP: daily bars have no intraday session to anchor on. Bollinger bands use the
    population standard deviation (ddof=0) of the last 20 closes. RSI, ATR and ADX use Wilder's
    smoothing (alpha = 1/14), seeded with the first observation instead of a 14-bar mean; the
    difference fades within WARMUP_BARS. MACD is 12/26/9 EMAs of closes; OBV is cumulative from
    the first bar given (so only its changes are comparable across inputs).
    """
    validate_bars(bars)
    high = bars["high"].astype("float64")
    low = bars["low"].astype("float64")
    close = bars["close"].astype("float64")
    volume = bars["volume"].astype("float64")
    prev_close = close.shift(1)

    out = pd.DataFrame(index=bars.index)
    out["sma_20"] = close.rolling(_SMA_FAST, min_periods=_SMA_FAST).mean()
    out["sma_50"] = close.rolling(_SMA_SLOW, min_periods=_SMA_SLOW).mean()
    ema_fast = _ema(close, _MACD_FAST)
    ema_slow = _ema(close, _MACD_SLOW)
    out["ema_12"] = ema_fast
    out["ema_26"] = ema_slow

    # RSI (Wilder): average gain / average loss over the close-to-close changes.
    delta = close.diff()
    avg_gain = _wilder(delta.clip(lower=0.0))
    avg_loss = _wilder((-delta).clip(lower=0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        rsi = 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
    rsi = rsi.where(avg_loss > 0, 100.0)  # only gains: RSI is 100 by definition
    rsi = rsi.where((avg_gain > 0) | (avg_loss > 0), 50.0)  # no movement at all: neutral
    out["rsi_14"] = rsi.where(avg_gain.notna() & avg_loss.notna())

    # ATR (Wilder) on the true range; the first bar has no previous close, its range is high-low.
    true_range = pd.concat([high - low, (high - prev_close).abs(), (low - prev_close).abs()], axis=1).max(
        axis=1, skipna=True
    )
    atr = _wilder(true_range)
    out["atr_14"] = atr

    typical = (high + low + close) / 3.0
    pv_sum = (typical * volume).rolling(_VWAP_WINDOW, min_periods=_VWAP_WINDOW).sum()
    v_sum = volume.rolling(_VWAP_WINDOW, min_periods=_VWAP_WINDOW).sum()
    out["vwap"] = (pv_sum / v_sum).where(v_sum > 0)  # undefined without volume: left NaN

    middle = close.rolling(_BB_WINDOW, min_periods=_BB_WINDOW).mean()
    std = close.rolling(_BB_WINDOW, min_periods=_BB_WINDOW).std(ddof=0)
    out["bb_upper"] = middle + _BB_K * std
    out["bb_middle"] = middle
    out["bb_lower"] = middle - _BB_K * std

    macd_line = ema_fast - ema_slow
    macd_signal = macd_line.ewm(span=_MACD_SIGNAL, adjust=False, min_periods=_MACD_SIGNAL).mean()
    out["macd_line"] = macd_line
    out["macd_signal"] = macd_signal
    out["macd_histogram"] = macd_line - macd_signal

    # ADX (Wilder): directional movement smoothed by the same ATR, DX smoothed once more.
    up_move = high.diff()
    down_move = -low.diff()
    plus_dm = up_move.where((up_move > down_move) & (up_move > 0), 0.0).where(up_move.notna())
    minus_dm = down_move.where((down_move > up_move) & (down_move > 0), 0.0).where(down_move.notna())
    smooth_plus, smooth_minus = _wilder(plus_dm), _wilder(minus_dm)
    ready = atr.notna() & smooth_plus.notna() & smooth_minus.notna()
    with np.errstate(divide="ignore", invalid="ignore"):
        # No range at all (atr == 0) means no directional movement either: DI = 0, not 0/0.
        plus_di = (100.0 * smooth_plus / atr).where(atr > 0, 0.0).where(ready)
        minus_di = (100.0 * smooth_minus / atr).where(atr > 0, 0.0).where(ready)
        di_sum = plus_di + minus_di
        dx = (100.0 * (plus_di - minus_di).abs() / di_sum).where(di_sum > 0, 0.0)
    dx = dx.where(plus_di.notna() & minus_di.notna())
    out["adx_14"] = _wilder(dx)

    direction = np.sign(delta).fillna(0.0)  # the first bar has no change: contributes 0
    out["obv"] = (direction * volume).cumsum()
    return out[FEATURE_COLUMNS].astype("float64")


def model_matrix(features: pd.DataFrame, bars: pd.DataFrame) -> pd.DataFrame:
    """Scale-free model inputs so a model fitted on one window applies at another price level.

    Price-level features become ratios to the bar's close, oscillators are scaled to [0, 1],
    and the cumulative OBV (which depends on where the history starts) becomes its trailing
    20-bar change over the trailing 20-bar volume. Causal because every input is.
    """
    missing = [c for c in FEATURE_COLUMNS if c not in features.columns]
    if missing:
        raise ValueError(f"features lack columns {missing}")
    if not features.index.equals(bars.index):
        raise ValueError("features and bars must share the same index")
    close = bars["close"].astype("float64")
    volume = bars["volume"].astype("float64")
    f = features
    out = pd.DataFrame(index=features.index)
    for name in ("sma_20", "sma_50", "ema_12", "ema_26", "vwap"):
        out[f"m_{name}"] = f[name] / close - 1.0
    out["m_atr_14"] = f["atr_14"] / close
    out["m_bb_width"] = (f["bb_upper"] - f["bb_lower"]) / f["bb_middle"]
    band = f["bb_upper"] - f["bb_lower"]
    with np.errstate(divide="ignore", invalid="ignore"):
        position = (close - f["bb_lower"]) / band
    # Bands of zero width (20 identical closes): the close sits on the middle band.
    out["m_bb_position"] = position.where(band > 0, 0.5).where(band.notna())
    out["m_macd_line"] = f["macd_line"] / close
    out["m_macd_signal"] = f["macd_signal"] / close
    out["m_macd_histogram"] = f["macd_histogram"] / close
    out["m_rsi_14"] = f["rsi_14"] / 100.0
    out["m_adx_14"] = f["adx_14"] / 100.0
    obv_change = f["obv"] - f["obv"].shift(_OBV_WINDOW)
    v_sum = volume.rolling(_OBV_WINDOW, min_periods=_OBV_WINDOW).sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        flow = obv_change / v_sum
    # No volume in the window: no flow either (0/0 otherwise).
    out["m_obv_flow"] = flow.where(v_sum > 0, 0.0).where(obv_change.notna() & v_sum.notna())
    out = out[MODEL_FEATURES].astype("float64")
    return out.replace([np.inf, -np.inf], np.nan)


def feature_frame(frame: pd.DataFrame, *, keep_index: bool = True) -> pd.DataFrame:
    """The MODEL_FEATURES columns of `frame` as float64, in one contiguous block.

    `frame[MODEL_FEATURES].astype("float64")` keeps the source's block layout: a table read back
    from labels.csv.gz holds one block per column, and every row slice and sklearn/LightGBM
    conversion of it then copies column by column (the student trained 18 % slower on the
    stored labels than on the same rows built in memory). The values are the same bits either way.
    `keep_index=False` numbers the rows 0..n-1.
    """
    values = frame[MODEL_FEATURES].to_numpy(dtype="float64", copy=True)
    index = frame.index if keep_index else pd.RangeIndex(len(frame))
    return pd.DataFrame(values, index=index, columns=list(MODEL_FEATURES))
