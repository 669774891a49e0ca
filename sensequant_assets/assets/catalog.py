"""What the UI shows about each asset before it runs: column schemas, kinds and owners.

The schemas are declared from the same column lists the code writes (`BAR_COLUMNS`,
`DATASET_COLUMNS`), so the catalog cannot drift from the files; a test compares them with a
materialised partition's files.
"""

from __future__ import annotations

import pandas as pd
from dagster import MetadataValue, TableColumn, TableRecord, TableSchema

from sensequant_assets.ml.dataset import DATASET_COLUMNS
from sensequant_assets.ml.features import BAR_COLUMNS, FEATURE_COLUMNS, MODEL_FEATURES

OWNERS = ["team:sensequant"]

_DESCRIBED = {
    "ts": ("string", "bar date (ISO 8601, Asia/Kolkata)"),
    "symbol": ("string", "NSE symbol"),
    "label": ("int64", "1 when the forward return meets the label rule (default: positive)"),
    "forward_return": ("float64", "close-to-close return over the next `h` bars"),
    "teacher_proba": ("float64", "the teacher's out-of-fold probability of label 1 (the student's target)"),
}


def _kind_of(column: str) -> str:
    if column in BAR_COLUMNS:
        return "daily bar"
    if column in FEATURE_COLUMNS:
        return "indicator on raw prices"
    if column in MODEL_FEATURES:
        return "model input (scale-free)"
    return ""


BARS_SCHEMA = TableSchema(
    columns=[
        TableColumn("timestamp", "datetime64[ns, Asia/Kolkata]", description="the index: bar date"),
        *(TableColumn(c, "float64", description="daily bar") for c in BAR_COLUMNS),
    ]
)
LABELS_SCHEMA = TableSchema(
    columns=[
        TableColumn(c, *_DESCRIBED[c]) if c in _DESCRIBED else TableColumn(c, "float64", _kind_of(c))
        for c in [*DATASET_COLUMNS, "teacher_proba"]
    ]
)


def column_schema(schema: TableSchema) -> dict:
    """Definition metadata that shows `schema` on the asset's page (Dagster's documented key)."""
    return {"dagster/column_schema": schema}


TOP_FEATURES_SCHEMA = TableSchema(
    columns=[
        TableColumn("feature", "string", description="model input"),
        TableColumn("gain", "float", description="LightGBM split gain, summed over the trees"),
        TableColumn("share", "float", description="its part of the total gain"),
    ]
)


def top_features_table(importance: pd.DataFrame, n: int = 5) -> MetadataValue:
    """The `n` features with the largest gain, as a Dagster table (sortable in the UI)."""
    total = float(importance["importance"].sum()) or 1.0
    records = [
        TableRecord(
            {"feature": str(row.feature), "gain": float(row.importance), "share": row.importance / total}
        )
        for row in importance.head(n).itertuples()
    ]
    return MetadataValue.table(records, schema=TOP_FEATURES_SCHEMA)
