"""Test isolation: no SENSEQUANT_* setting of the developer's shell leaks into the suite."""

from __future__ import annotations

import os

for _name in [n for n in os.environ if n.startswith("SENSEQUANT_")]:
    del os.environ[_name]
os.environ["DAGSTER_DISABLE_TELEMETRY"] = "1"
