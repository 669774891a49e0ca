"""Without `fcntl` and `os.fork` (Windows) the package imports and the local artifact store works.

Each check runs in a fresh interpreter in which `fcntl` cannot be imported and `os.fork` does not
exist, before anything else is imported: the definitions load, a partition is written and read back
through the store, a student is promoted and rolled back with the registry, and the Breeze
bookkeeping takes its lock. Once with a stand-in for Windows' `msvcrt` handed to `locks` (every
lock taken is released), once with neither (no locking, one warning).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import IO

import pandas as pd
import pytest

from sensequant_assets import locks

WITHOUT_POSIX = """
import os, sys, types
sys.modules["fcntl"] = None  # `import fcntl` raises ImportError, as on Windows
del os.fork
calls = []
if FAKE_MSVCRT:  # given to locks only: in sys.modules it would make `subprocess` believe it is on Windows
    import sensequant_assets.locks

    msvcrt = types.ModuleType("msvcrt")
    msvcrt.LK_UNLCK, msvcrt.LK_LOCK, msvcrt.LK_NBLCK = 0, 1, 2
    msvcrt.locking = lambda fd, mode, nbytes: calls.append((fd, mode, nbytes))
    sensequant_assets.locks.msvcrt = msvcrt
"""

SCRIPT = """
import json, warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", RuntimeWarning)
    from sensequant_assets import locks, registry
    from sensequant_assets.artifacts import StudentArtifact, TeacherArtifact
    from sensequant_assets.assets.workers import run_workers
    from sensequant_assets.definitions import defs
    from sensequant_assets.io_manager import ArtifactStore, codec_for
    from sensequant_assets.sources.breeze_state import StateFile

    assert locks.fcntl is None and "train_job" in {job.name for job in defs.jobs}
    base = Path(BASE)
    store = ArtifactStore(base)
    keys = ["RELIANCE|2023-07-01", "RELIANCE|2024-01-01"]
    for seed, key in enumerate(keys, start=1):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(40, 3))
        y = (x[:, 0] > 0).astype(int)
        teacher = TeacherArtifact(
            model=LogisticRegression().fit(x, y),
            metadata={"partition_key": key, "seed": seed},
            importance=pd.DataFrame({"feature": ["a"], "importance": [1.0]}),
        )
        store.write(key, codec_for("teacher_model"), teacher)
        student = StudentArtifact(
            model=LogisticRegression(C=0.5).fit(x, y),
            metrics={"auc": 0.5 + seed / 100},
            metadata={"partition_key": key, "teacher": "model.pkl", "config_id": "aaaaaaaaaaaa"},
        )
        store.write(key, codec_for("student_model"), student)
        store.write(key, codec_for("student_model"), student)  # over an existing directory
        back = store.read(key, codec_for("teacher_model"), "teacher_model")
        assert back.metadata["seed"] == seed, back.metadata
        np.testing.assert_array_equal(back.model.coef_, teacher.model.coef_)

    gates = {"ic_fdr": {"value": 0.004, "threshold": 0.05, "op": "<=", "passed": True}}
    times = [datetime(2026, 11, day, 9, 0, tzinfo=UTC) for day in (26, 27, 28)]
    registry.promote(base, "RELIANCE", keys[0], "PROMOTE", gates, now=times[0])
    registry.promote(base, "RELIANCE", keys[1], "PROMOTE", gates, now=times[1])
    assert registry.current(base, "RELIANCE").partition_key == keys[1]
    assert registry.rollback(base, "RELIANCE", now=times[2]).partition_key == keys[0]
    assert registry.load_current_model(base, "RELIANCE").coef_.shape == (1, 3)

    state = StateFile(base / "breeze")
    with state.locked():
        pass

print(json.dumps({
    "workers": run_workers(),
    "history": [e["action"] for e in registry.history(base, "RELIANCE")],
    "calls": calls,
    "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)],
}))
"""


def run_without_posix(tmp_path: Path, fake_msvcrt: bool) -> dict:
    prelude = f"FAKE_MSVCRT = {fake_msvcrt}\nBASE = {str(tmp_path / 'artifacts')!r}\n"
    code = prelude + textwrap.dedent(WITHOUT_POSIX) + textwrap.dedent(SCRIPT)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_with_windows_locks_the_store_and_registry_work_and_every_lock_is_released(tmp_path: Path) -> None:
    result = run_without_posix(tmp_path, fake_msvcrt=True)
    assert result["history"] == ["promote", "promote", "rollback"]
    assert result["workers"] == 1  # no fork: steps compute in-process
    assert result["warnings"] == []
    calls = result["calls"]
    taken = [(fd, n) for fd, mode, n in calls if mode == 1]
    assert len(taken) >= 10  # the store's writes and reads, the registry, the Breeze state
    assert [(fd, n) for fd, mode, n in calls if mode == 0] == taken  # each released, in order
    assert [mode for _, mode, _ in calls] == [1, 0] * len(taken)  # never two held at once here


def test_with_no_locking_at_all_it_still_works_and_warns_once(tmp_path: Path) -> None:
    result = run_without_posix(tmp_path, fake_msvcrt=False)
    assert result["history"] == ["promote", "promote", "rollback"]
    assert result["calls"] == []
    [warning] = result["warnings"]
    assert "no file locking on this platform" in warning


@pytest.mark.skipif(locks.fcntl is None, reason="fcntl only")
def test_fcntl_locks_exclude_other_processes(tmp_path: Path) -> None:
    """Where fcntl exists the lock is flock: a second process cannot take it while it is held."""
    path = tmp_path / "x.lock"
    probe = (
        "import fcntl, sys\n"
        "fh = open(sys.argv[1], 'a')\n"
        "try:\n    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept OSError:\n    print('busy')\n"
        "else:\n    print('free')\n"
    )

    def other() -> str:
        return subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True).stdout

    with path.open("a") as fh:
        with locks.locked(fh):
            assert other().strip() == "busy"
        assert other().strip() == "free"
        with locks.locked(fh, shared=True):
            assert other().strip() == "busy"


@pytest.mark.skipif(locks.fcntl is None, reason="fcntl only")
def test_commits_still_call_fcntl_flock_with_the_lock_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """test_crash pauses a commit by wrapping `fcntl.flock` and reading the locked file's name."""
    import fcntl

    from sensequant_assets.io_manager import ArtifactStore, codec_for

    seen: list[tuple[str, int]] = []
    real = fcntl.flock

    def flock(fh: IO[str], operation: int) -> None:
        seen.append((Path(fh.name).relative_to(tmp_path).as_posix(), operation))
        real(fh, operation)

    monkeypatch.setattr(fcntl, "flock", flock)
    bars = pd.DataFrame({"close": [1.0, 2.0]}, index=pd.date_range("2023-01-02", periods=2, name="timestamp"))
    ArtifactStore(tmp_path).write("RELIANCE|2023-01-01", codec_for("market_bars"), bars)
    lock = ".locks/RELIANCE_2023-01-01_to_2023-06-30.lock"
    assert seen == [(lock, fcntl.LOCK_EX), (lock, fcntl.LOCK_UN)]
