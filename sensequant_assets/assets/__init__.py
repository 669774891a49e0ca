"""Thin Dagster wiring over sources/ and ml/: one module per step of the graph."""
