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
    # The window's teacher_labels, handed along so that the IO manager commits the model and its
    # labels in one swap (two runs on one partition must not leave one's model beside the other's
    # labels); never stored with the model nor loaded back.
    labels: pd.DataFrame | None = field(default=None, compare=False, repr=False)


@dataclass
class StudentArtifact:
    """A trained student with its fidelity/accuracy metrics and a pointer back to its teacher."""

    model: Any
    metrics: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvaluationArtifact:
    """A student's out-of-sample evaluation on the window after the one it was trained on.

    ``reliability_png`` is the window's reliability diagram; empty for an evaluation stored before
    the diagram existed.
    """

    metrics: dict[str, Any]
    predictions: pd.DataFrame
    equity: pd.DataFrame
    equity_png: bytes
    reliability_png: bytes = b""


@dataclass
class BriefingArtifact:
    """The promotion briefing: one decision per symbol with the numbers and gates behind it."""

    generated_at: str
    symbols: list[dict[str, Any]]
    markdown: str
    # symbol -> {"digest", "statistics", "left_out", "judged_windows", "excess"}: what the next
    # briefing reuses for symbols whose evaluations did not change (see assets/briefing.py)
    cache: dict[str, dict[str, Any]] = field(default_factory=dict)

    def decision(self, symbol: str) -> str | None:
        return next((b["decision"] for b in self.symbols if b["symbol"] == symbol), None)
