"""Usable CPUs: the process's affinity and cgroup quota, not the machine's cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sensequant_assets import cpus
from sensequant_assets.assets.workers import run_workers
from sensequant_assets.cpus import cgroup_cpu_limit, usable_cpus


def fake(tmp_path: Path, self_cgroup: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A fake `/proc` (only `self/cgroup`) and cgroup mount holding `files`."""
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(self_cgroup)
    root.mkdir()
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return proc, root


@pytest.fixture
def many_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 64-core machine with every core in the affinity mask, so only the cgroup limits."""
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(64)), raising=False)


@pytest.mark.usefixtures("many_cores")
def test_cgroup_v2_nested_limits_take_the_tightest_ancestor(tmp_path: Path) -> None:
    proc, root = fake(
        tmp_path,
        "0::/kubepods/pod1/container\n",
        {
            "cpu.max": "max 100000\n",
            "kubepods/cpu.max": "800000 100000\n",  # 8 CPUs for all pods
            "kubepods/pod1/cpu.max": "250000 100000\n",  # 2.5 for this pod: rounded down
            "kubepods/pod1/container/cpu.max": "max 100000\n",
        },
    )
    assert cgroup_cpu_limit(proc, root) == 2.5
    assert usable_cpus(proc, root) == 2


@pytest.mark.usefixtures("many_cores")
def test_cgroup_v2_inside_a_container_reads_its_own_root(tmp_path: Path) -> None:
    """With a cgroup namespace the container's cgroup is "/" and the limit sits on the mount itself;
    without one the path names directories the container cannot see, and the mount still holds it."""
    for path in ("/", "/system.slice/docker-abc.scope"):
        proc, root = fake(
            tmp_path / path.strip("/").replace("/", "_"), f"0::{path}\n", {"cpu.max": "300000 100000"}
        )
        assert usable_cpus(proc, root) == 3


@pytest.mark.usefixtures("many_cores")
def test_cgroup_v1_quota_and_period(tmp_path: Path) -> None:
    proc, root = fake(
        tmp_path,
        "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n",
        {
            "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
            "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
            "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "150000\n",
            "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "50000\n",
        },
    )
    assert usable_cpus(proc, root) == 3


@pytest.mark.usefixtures("many_cores")
def test_no_limit_leaves_the_affinity(tmp_path: Path) -> None:
    v2 = fake(tmp_path / "v2", "0::/user.slice\n", {"cpu.max": "max 100000", "user.slice/cpu.max": "max"})
    v1 = fake(
        tmp_path / "v1",
        "2:cpu:/\n",
        {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"},
    )
    nothing = fake(tmp_path / "none", "0::/\n", {})
    for proc, root in (v2, v1, nothing):
        assert cgroup_cpu_limit(proc, root) is None
        assert usable_cpus(proc, root) == 64
    assert usable_cpus(tmp_path / "no-proc", tmp_path / "no-cgroup") == 64  # not Linux


@pytest.mark.usefixtures("many_cores")
def test_unreadable_or_malformed_files_are_no_limit(tmp_path: Path) -> None:
    proc, root = fake(
        tmp_path,
        "garbage line\n0::/a/b\n",
        {"a/b/cpu.max": "lots 100000", "a/cpu.max/keep": "a directory, not a file", "cpu.max": "0 100000"},
    )
    assert cgroup_cpu_limit(proc, root) is None
    (proc / "self" / "cgroup").unlink()
    (proc / "self" / "cgroup").mkdir()  # unreadable as a file
    assert usable_cpus(proc, root) == 64


def test_a_limit_below_one_cpu_still_gives_one_worker(tmp_path: Path) -> None:
    proc, root = fake(tmp_path, "0::/\n", {"cpu.max": "50000 100000"})
    assert usable_cpus(proc, root) == 1


def test_the_affinity_mask_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proc, root = fake(tmp_path, "0::/\n", {})
    if hasattr(os, "sched_getaffinity"):
        assert usable_cpus(proc, root) == len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 5, 9}, raising=False)  # taskset -c 0,5,9
    assert usable_cpus(proc, root) == 3
    monkeypatch.delattr(os, "sched_getaffinity")  # macOS, Windows: the machine's count
    assert usable_cpus(proc, root) == 64


def test_run_workers_default_to_usable_cpus_and_the_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda *_: 2.0)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(64)), raising=False)
    monkeypatch.setenv("SENSEQUANT_RUN_WORKERS", "0")
    assert run_workers() == 2
    monkeypatch.setenv("SENSEQUANT_RUN_WORKERS", "5")
    assert run_workers() == 5
    monkeypatch.delattr(os, "fork", raising=False)  # Windows: nothing to fork workers with
    assert run_workers() == 1
