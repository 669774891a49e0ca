"""One BLAS thread per process: the per-window models are far too small to gain from more.

NumPy's and SciPy's OpenBLAS start one thread per core and busy-wait between calls. On the
logistic student's few hundred rows that made fitting about 3x slower, and in a deployment where
two runs train at once the spinning threads take the other run's core. The limit is set once per
process, after the libraries are loaded (SciPy's own OpenBLAS is loaded lazily by the optimiser).
"""

from __future__ import annotations

from functools import cache

from threadpoolctl import threadpool_limits

BLAS_THREADS = 1


@cache
def single_threaded_blas() -> None:
    """Limit every loaded BLAS library to `BLAS_THREADS` threads, once per process."""
    import scipy.optimize  # noqa: F401  (loads SciPy's OpenBLAS so that the limit reaches it)

    threadpool_limits(limits=BLAS_THREADS, user_api="blas")
