"""In-memory artifact objects handed between assets and the IO manager (no paths here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass
class TeacherArtifact:
    """A trained teacher: the model, what it learnt from, and how it scored."""

    model: Any
    metadata: dict[str, Any]
    importance: pd.DataFrame


@dataclass
class StudentArtifact:
    """A trained student with its fidelity/accuracy metrics and a pointer back to its teacher."""

    model: Any
    metrics: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
