"""How many CPUs this process may really use.

`os.cpu_count()` is the machine's cores; inside a container or under `taskset` that over-counts,
and one worker per counted core over-subscribes the CPU quota (and multiplies memory until the
OOM killer steps in). The usable count is the smallest of the process's CPU affinity and its
cgroup CPU quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`, along the process's
cgroup path up to the root, so a limit set on a parent counts too), rounded down, at least 1.
A cgroup file that is missing, unreadable or malformed is read as no limit.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

PROC = Path("/proc")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cpus(proc: Path = PROC, cgroup_root: Path = CGROUP_ROOT) -> int:
    """Whole CPUs this process may use (the roots are parameters for tests)."""
    count = os.cpu_count() or 1
    getaffinity = getattr(os, "sched_getaffinity", None)  # Linux only
    if getaffinity is not None:
        count = min(count, len(getaffinity(0)) or count)
    limit = cgroup_cpu_limit(proc, cgroup_root)
    if limit is not None:
        count = min(count, math.floor(limit))
    return max(1, count)


def cgroup_cpu_limit(proc: Path = PROC, cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """The tightest CPU quota (in CPUs) on this process's cgroups and their ancestors; None if none."""
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None  # not Linux, or no cgroups
    limits: list[float] = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":  # v2: "0::/path"
            limits += [q for d in _upwards(cgroup_root, path) if (q := _v2_quota(d)) is not None]
        elif "cpu" in controllers.split(","):  # v1: "N:cpu,cpuacct:/path"
            for mount in dict.fromkeys([cgroup_root / controllers, cgroup_root / "cpu"]):
                limits += [q for d in _upwards(mount, path) if (q := _v1_quota(d)) is not None]
    return min(limits, default=None)


def _upwards(mount: Path, path: str) -> list[Path]:
    """`mount/path` and each parent up to `mount` itself. A path that does not exist under the mount
    (a container that sees its own cgroup as the root) still ends at the mount, whose limit is its own."""
    parts = [p for p in path.strip().split("/") if p and p != ".."]
    return [mount.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _v2_quota(directory: Path) -> float | None:
    """`cpu.max` holds "<quota> <period>" or "max <period>" (no limit)."""
    text = _read(directory / "cpu.max")
    if text is None:
        return None
    quota, _, period = text.partition(" ")
    return _ratio(quota, period or "100000")


def _v1_quota(directory: Path) -> float | None:
    """`cpu.cfs_quota_us` is -1 when there is no limit."""
    quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
    if quota is None or period is None:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None  # "max", or garbage
    return q / p if q > 0 and p > 0 else None
