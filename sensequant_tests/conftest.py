"""Test isolation: no SENSEQUANT_* setting of the developer's shell leaks into the suite."""

from __future__ import annotations

import os

for _name in [n for n in os.environ if n.startswith("SENSEQUANT_")]:
    del os.environ[_name]
os.environ["DAGSTER_DISABLE_TELEMETRY"] = "1"

# The longest files first (seconds on 2026-12-01, two workers): `make test` hands whole files to two
# pytest-xdist workers in collection order, and a long file left for the end runs alone on one core.
LONGEST_FIRST = (
    "test_daemon.py",  # 130
    "test_crash.py",  # 115
    "test_cli.py",  # 100
    "test_ui_browser.py",  # 95
    "test_evaluation_pipeline.py",  # 40
    "test_methodology_fast.py",  # 40
    "test_calibration.py",  # 35
    "test_follow_upstream.py",  # 35
    "test_run_launcher.py",  # 35
)


def pytest_collection_modifyitems(items: list) -> None:
    """Longest files first; the others, and the tests within each file, in their usual order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


pytest_plugins = ["sensequant_tests.object_storage"]
