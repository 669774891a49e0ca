"""Pure ML: features, labels, splits, teacher, student, metrics (no Dagster, no file I/O)."""
