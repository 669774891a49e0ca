"""SenseQuant: per-symbol, per-window teacher and student market models as a Dagster asset graph."""

__version__ = "0.1.0"
