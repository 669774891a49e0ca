"""Promotion statistics computed from data: block bootstrap, Sharpe, PSR/DSR, Diebold-Mariano.

Pure numpy/scipy; no Dagster, no file I/O. Every number here is a deterministic function of its
inputs (and, for the bootstrap, of an explicit seed) -- the predecessor's "statistical tests" drew
random numbers instead, which is exactly what this module replaces.

Conventions shared by all functions:
- Prediction-quality metrics (AUC, log loss, IC, ...) live in :mod:`sensequant_assets.ml.evaluation`;
  this module holds the inference machinery that turns their per-row series into decisions.
- Inputs are 1-D array-likes (lists, numpy arrays, pandas Series); NaNs are rejected unless the
  docstring says otherwise.
- A statistic that is undefined for the data (zero variance, too few observations) is returned as
  ``None`` rather than NaN, so results stay JSON-serialisable.
- Sharpe ratios use the sample standard deviation (``ddof=1``); skewness and kurtosis are the
  moment estimators ``m3 / m2**1.5`` and ``m4 / m2**2`` with ``mk = mean((x - mean(x))**k)``, as in
  Bailey & Lopez de Prado (2012). Kurtosis is *non-excess* (3 for a normal distribution).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

EULER_MASCHERONI = 0.5772156649015329
"""Euler-Mascheroni constant (gamma) used by the expected-maximum-Sharpe approximation."""

# Bootstrap index matrices are generated in row chunks so memory stays near this many elements.
_MAX_CHUNK_ELEMENTS = 4_000_000


# --------------------------------------------------------------------------------------------
# Input helpers
# --------------------------------------------------------------------------------------------


def as_1d(x: ArrayLike, name: str, *, allow_nan: bool = False) -> NDArray[np.float64]:
    """A 1-D float array, refusing NaN/inf unless ``allow_nan``: one validation for every metric."""
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not allow_nan and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _moments(x: NDArray[np.float64]) -> tuple[float, float]:
    """Return (skewness g3, non-excess kurtosis g4) as moment estimators; requires var > 0."""
    centred = x - x.mean()
    m2 = float(np.mean(centred**2))
    m3 = float(np.mean(centred**3))
    m4 = float(np.mean(centred**4))
    return m3 / m2**1.5, m4 / m2**2


# --------------------------------------------------------------------------------------------
# Block bootstrap
# --------------------------------------------------------------------------------------------


def default_block_length(n: int) -> int:
    """Rule-of-thumb block length ``round(n ** (1/3))`` (at least 1).

    The n^(1/3) rate is the MSE-optimal order for block-bootstrap variance estimation
    (Hall, Horowitz & Jing 1995; Politis & White 2004); the constant is left at 1.
    """
    if n < 1:
        raise ValueError("n must be positive")
    return max(1, round(n ** (1.0 / 3.0)))


def stationary_bootstrap_indices(
    n: int, mean_block: float, n_boot: int, rng: np.random.Generator
) -> NDArray[np.intp]:
    """Index matrix (n_boot, n) for the stationary bootstrap of Politis & Romano (1994).

    Each resample is a concatenation of blocks that wrap around the end of the series; block
    starts are uniform on ``0..n-1`` and block lengths are geometric with mean ``mean_block``
    (a new block starts at each position with probability ``p = 1/mean_block``). Unlike fixed
    blocks this keeps the resampled series stationary. Vectorised: the start of the current block
    at every position is found with a running maximum over the positions where a block begins.
    """
    if n < 1 or n_boot < 1:
        raise ValueError("n and n_boot must be positive")
    if mean_block < 1:
        raise ValueError("mean_block must be >= 1")
    p = 1.0 / float(mean_block)
    new_block = rng.random((n_boot, n)) < p
    new_block[:, 0] = True
    starts = rng.integers(0, n, size=(n_boot, n))
    positions = np.arange(n)
    # For each position, the position where the current block began.
    block_origin = np.maximum.accumulate(np.where(new_block, positions, 0), axis=1)
    origin_start = np.take_along_axis(starts, block_origin, axis=1)
    return (origin_start + (positions - block_origin)) % n


def circular_block_bootstrap_indices(
    n: int, block: int, n_boot: int, rng: np.random.Generator
) -> NDArray[np.intp]:
    """Index matrix (n_boot, n) for the circular block bootstrap of Politis & Romano (1992).

    ``ceil(n / block)`` blocks of fixed length ``block`` with uniform starts, wrapped around the
    end of the series (so every observation is equally likely to be drawn), truncated to ``n``.
    """
    if n < 1 or n_boot < 1:
        raise ValueError("n and n_boot must be positive")
    if block < 1:
        raise ValueError("block must be >= 1")
    n_blocks = -(-n // block)
    starts = rng.integers(0, n, size=(n_boot, n_blocks))
    idx = (starts[:, :, None] + np.arange(block)[None, None, :]) % n
    return idx.reshape(n_boot, n_blocks * block)[:, :n]


def bootstrap_statistic_ci(
    n: int,
    statistic: Callable[[NDArray[np.intp]], NDArray[np.float64]],
    *,
    block: float | None = None,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    method: Literal["stationary", "circular"] = "stationary",
) -> tuple[float | None, float | None]:
    """Block-bootstrap percentile interval of any statistic of a serially dependent record.

    ``statistic`` receives a ``(rows, n)`` matrix of resampled row indices (one replicate per
    row) and returns one value per replicate, so callers vectorise over replicates and this
    function owns the resampling: every bootstrap in the project goes through here. Blocks
    keep short-range dependence (overlapping-horizon labels, persistent signals), which an iid
    bootstrap would ignore and so give intervals that are too narrow. ``block`` is the (mean)
    block length, default :func:`default_block_length`; ``block=1`` with ``method="stationary"``
    is the iid bootstrap. Replicates where the statistic is undefined (NaN, e.g. a resample
    with one class) are dropped; ``(None, None)`` if none is defined. Index matrices are drawn
    in chunks of rows to bound memory. Deterministic for a given ``seed``.
    """
    if n < 2:
        raise ValueError("need at least 2 observations")
    if n_boot < 1:
        raise ValueError("n_boot must be positive")
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    if method not in ("stationary", "circular"):
        raise ValueError(f"unknown method {method!r}")
    b = default_block_length(n) if block is None else block
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_CHUNK_ELEMENTS // n)
    values = np.empty(n_boot)
    for lo_row in range(0, n_boot, chunk):
        rows = min(chunk, n_boot - lo_row)
        if method == "stationary":
            idx = stationary_bootstrap_indices(n, b, rows, rng)
        else:
            idx = circular_block_bootstrap_indices(n, round(b), rows, rng)
        values[lo_row : lo_row + rows] = statistic(idx)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None, None
    lo, hi = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def bootstrap_mean_ci(
    x: ArrayLike,
    *,
    block: float | None = None,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    method: Literal["stationary", "circular"] = "stationary",
) -> tuple[float, float, float]:
    """Mean of a (serially dependent) series and its block-bootstrap percentile interval.

    Returns ``(mean, lo, hi)`` where ``lo``/``hi`` are the ``alpha/2`` and ``1 - alpha/2``
    quantiles of the bootstrap distribution of the mean (:func:`bootstrap_statistic_ci`).
    Daily strategy returns and overlapping-horizon losses are autocorrelated, hence blocks.
    """
    arr = as_1d(x, "x")
    lo, hi = bootstrap_statistic_ci(
        arr.size,
        lambda idx: arr[idx].mean(axis=1),
        block=block,
        n_boot=n_boot,
        alpha=alpha,
        seed=seed,
        method=method,
    )
    if lo is None or hi is None:  # pragma: no cover - the mean of finite values is always defined
        raise RuntimeError("the bootstrap of the mean produced no finite replicate")
    return float(arr.mean()), lo, hi


# --------------------------------------------------------------------------------------------
# Sharpe family
# --------------------------------------------------------------------------------------------


def sharpe_ratio(returns: ArrayLike, periods_per_year: int = 252, annualise: bool = True) -> float | None:
    """Sharpe ratio ``mean / std(ddof=1)`` of periodic (excess) returns.

    Annualised by ``sqrt(periods_per_year)`` when ``annualise``. ``None`` when fewer than two
    returns or zero standard deviation (a flat strategy has no defined Sharpe ratio).
    """
    arr = as_1d(returns, "returns")
    if arr.size < 2:
        return None
    sd = float(arr.std(ddof=1))
    if sd == 0.0 or not math.isfinite(sd):
        return None
    sr = float(arr.mean()) / sd
    return sr * math.sqrt(periods_per_year) if annualise else sr


def _sr_and_denominator(arr: NDArray[np.float64]) -> tuple[float, float, float, float] | None:
    """Per-period SR, skew, kurtosis and ``1 - g3*SR + (g4-1)/4*SR^2``; None if undefined."""
    if arr.size < 2:
        return None
    sr = sharpe_ratio(arr, annualise=False)
    if sr is None:
        return None
    g3, g4 = _moments(arr)
    denom = 1.0 - g3 * sr + (g4 - 1.0) / 4.0 * sr**2
    if not denom > 0.0:
        return None
    return sr, g3, g4, denom


def probabilistic_sharpe_ratio(returns: ArrayLike, sr_benchmark: float = 0.0) -> float | None:
    """Probability that the true Sharpe ratio exceeds ``sr_benchmark`` (per-period units).

    Bailey & Lopez de Prado (2012), "The Sharpe Ratio Efficient Frontier", eq. for PSR:
    ``PSR = Phi((SR - SR*) * sqrt(n - 1) / sqrt(1 - g3*SR + (g4 - 1)/4 * SR^2))`` with SR the
    non-annualised sample Sharpe ratio, g3 the skewness and g4 the non-excess kurtosis. It
    discounts a high Sharpe that comes from few observations or fat/left-skewed tails.
    ``None`` when the Sharpe ratio is undefined (fewer than 2 returns or zero variance).
    """
    arr = as_1d(returns, "returns")
    parts = _sr_and_denominator(arr)
    if parts is None:
        return None
    sr, _g3, _g4, denom = parts
    z = (sr - sr_benchmark) * math.sqrt(arr.size - 1) / math.sqrt(denom)
    return float(NormalDist().cdf(z))


def expected_max_sharpe(n_trials: int, var_sr: float) -> float:
    """Expected maximum of ``n_trials`` independent Sharpe estimates with true SR 0.

    Bailey & Lopez de Prado (2014), "The Deflated Sharpe Ratio", eq. (2) (via the False Strategy
    Theorem): ``E[max SR] = sqrt(V) * ((1 - g) * Phi^-1(1 - 1/N) + g * Phi^-1(1 - 1/(N e)))``,
    ``g`` the Euler-Mascheroni constant. Defined as 0 for ``N = 1`` (no selection, nothing to
    deflate; the formula itself diverges there).
    """
    if n_trials < 1:
        raise ValueError("n_trials must be >= 1")
    if var_sr < 0:
        raise ValueError("var_sr must be non-negative")
    if n_trials == 1 or var_sr == 0:
        return 0.0
    g = EULER_MASCHERONI
    z1 = NormalDist().inv_cdf(1.0 - 1.0 / n_trials)
    z2 = NormalDist().inv_cdf(1.0 - 1.0 / (n_trials * math.e))
    return float(math.sqrt(var_sr) * ((1.0 - g) * z1 + g * z2))


def deflated_sharpe_ratio(
    returns: ArrayLike, n_trials: int, var_trial_sr: float | None = None
) -> dict[str, Any]:
    """Deflated Sharpe ratio: PSR against the Sharpe expected from the best of ``n_trials``.

    Bailey & Lopez de Prado (2014): ``DSR = PSR(SR* = E[max SR])`` with ``E[max SR]`` from
    :func:`expected_max_sharpe`. It corrects for selection bias when the reported model is the
    best of several tried (windows, hyper-parameters, symbols).

    ``var_trial_sr`` is the cross-sectional variance of the per-period Sharpe ratios of the
    trials. When it is ``None`` (trial Sharpes not recorded) the variance of the per-period SR
    *estimator* of this series is used instead, ``(1 - g3*SR + (g4 - 1)/4 * SR^2) / (n - 1)``
    (Mertens 2002 / Bailey & Lopez de Prado 2012) -- i.e. the spread expected from estimation
    noise alone; ``var_source`` in the result says which was used. ``n_trials = 1`` gives
    ``SR* = 0`` and so ``DSR == PSR(0)``.

    Returns a dict with ``dsr``, ``psr`` (vs 0), ``sr`` (per-period), ``sr_benchmark``
    (= E[max SR]), ``var_trial_sr``, ``var_source``, ``n_trials``, ``n``, ``skew``, ``kurtosis``;
    statistics are ``None`` when the Sharpe ratio is undefined.
    """
    if n_trials < 1:
        raise ValueError("n_trials must be >= 1")
    arr = as_1d(returns, "returns")
    out: dict[str, Any] = {
        "dsr": None,
        "psr": None,
        "sr": None,
        "sr_benchmark": None,
        "var_trial_sr": None,
        "var_source": "trials" if var_trial_sr is not None else "estimator",
        "n_trials": int(n_trials),
        "n": int(arr.size),
        "skew": None,
        "kurtosis": None,
    }
    parts = _sr_and_denominator(arr)
    if parts is None:
        return out
    sr, g3, g4, denom = parts
    var = denom / (arr.size - 1) if var_trial_sr is None else float(var_trial_sr)
    sr_star = expected_max_sharpe(n_trials, var)
    out.update(
        dsr=probabilistic_sharpe_ratio(arr, sr_benchmark=sr_star),
        psr=probabilistic_sharpe_ratio(arr, sr_benchmark=0.0),
        sr=float(sr),
        sr_benchmark=float(sr_star),
        var_trial_sr=float(var),
        skew=float(g3),
        kurtosis=float(g4),
    )
    return out


# --------------------------------------------------------------------------------------------
# Forecast comparison
# --------------------------------------------------------------------------------------------


def diebold_mariano(
    loss_a: ArrayLike,
    loss_b: ArrayLike,
    h: int = 1,
    *,
    kernel: Literal["rectangular", "bartlett"] = "rectangular",
) -> dict[str, Any]:
    """Diebold-Mariano test of equal expected loss, with the Harvey-Leybourne-Newbold correction.

    ``d_t = loss_a_t - loss_b_t``. Long-run variance ``gamma_0 + 2 * sum_{k=1}^{h-1} w_k gamma_k``
    with ``gamma_k = (1/n) sum_t (d_t - dbar)(d_{t-k} - dbar)``: an h-step forecast error is at
    most MA(h-1), so autocovariances beyond lag h-1 are zero under the null (Diebold & Mariano
    1995). ``kernel="rectangular"`` (``w_k = 1``, the DM 1995 form) can give a non-positive
    variance for h > 1; in that case the Newey-West/Bartlett weights ``w_k = 1 - k/h`` are used
    instead (always non-negative) and ``kernel`` in the result says so.
    ``DM = dbar / sqrt(lrv / n)``, scaled by ``sqrt((n + 1 - 2h + h(h-1)/n) / n)`` (Harvey,
    Leybourne & Newbold 1997) and compared with Student t, ``n - 1`` df; two-sided p-value.
    With ``kernel="bartlett"`` this equals statsmodels' ``diebold_mariano_test(lags=h-1,
    harvey_adj=True, horizon=h)``.

    A negative ``stat`` means ``a`` has the lower loss. If ``d`` is identically zero the
    forecasts are indistinguishable: ``stat = 0.0``, ``p_value = 1.0``. If ``d`` is a non-zero
    constant the variance is zero and the test is undefined: ``stat`` and ``p_value`` are ``None``
    (``mean_diff`` still carries the sign).
    """
    a = as_1d(loss_a, "loss_a")
    b = as_1d(loss_b, "loss_b")
    if a.shape != b.shape:
        raise ValueError("loss_a and loss_b must have the same length")
    if h < 1:
        raise ValueError("h must be >= 1")
    if kernel not in ("rectangular", "bartlett"):
        raise ValueError(f"unknown kernel {kernel!r}")
    n = a.size
    if n < 2 or n <= h:
        raise ValueError(f"need more than max(1, h)={max(1, h)} observations, got {n}")
    d = a - b
    dbar = float(d.mean())
    out: dict[str, Any] = {
        "stat": None,
        "p_value": None,
        "mean_diff": dbar,
        "n": int(n),
        "h": int(h),
        "kernel": kernel,
    }
    if np.all(d == 0.0):
        out.update(stat=0.0, p_value=1.0)
        return out
    dc = d - dbar
    gammas = np.array([float(np.dot(dc[k:], dc[: n - k])) / n for k in range(h)])

    def lrv(weights: NDArray[np.float64]) -> float:
        return float(gammas[0] + 2.0 * np.sum(weights * gammas[1:]))

    lags = np.arange(1, h)
    used = kernel
    var_long = lrv(np.ones(h - 1)) if kernel == "rectangular" else lrv(1.0 - lags / h)
    if var_long <= 0.0 and kernel == "rectangular":
        used = "bartlett"
        var_long = lrv(1.0 - lags / h)
    out["kernel"] = used
    if not var_long > 0.0:
        return out
    dm = dbar / math.sqrt(var_long / n)
    hln = math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    stat = float(hln * dm)
    from scipy.stats import t as student_t  # lazy: scipy.stats costs most of a second to import

    p_value = float(2.0 * student_t.sf(abs(stat), df=n - 1))
    out.update(stat=stat, p_value=p_value)
    return out
