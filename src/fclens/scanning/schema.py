"""The row schema of a scan (README.md, "Scan a data set"): its version, its columns, its skipped rows.

Kept apart from the per-batch core so that readers (the reader, atlas, prune, the CLI) get the schema without
importing the scanning machinery.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from fclens.options import Options
from fclens.scanning.sources import Item

__all__ = ["CLASS_NAMES", "SCHEMA_VERSION", "class_name_column", "scan_schema", "skipped_rows"]

SCHEMA_VERSION = 3
"""Version of the row schema and manifest; bumped whenever a column changes meaning or type. 3: the class
names beside the indices (:data:`CLASS_NAMES`). 2: one ``options`` in ``_manifest.json`` (beside
``_head.safetensors``), absolute ``path``s. 1 and 2 are still read (the reader derives the names)."""

CLASS_NAMES = {"label_name": "label", "pred_name": "pred", "target_name": "target", "rival_name": "rival"}
"""Each class-name column and the class-index column it names, so that a DataFrame, DuckDB or a FiftyOne
view reads the classes without a join on the manifest's ``class_names``."""


def scan_schema(options: Options) -> pa.Schema:
    """The Arrow schema of a scan's rows (README.md, "Scan a data set")."""
    half = pa.list_(pa.float16())
    name = pa.dictionary(pa.int32(), pa.string())
    fields = [
        ("index", pa.int64()),
        ("path", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("label", pa.int32()),
        ("label_name", name),
        ("pred", pa.int32()),
        ("pred_name", name),
        ("prob", pa.float32()),
        ("top5", pa.list_(pa.int32())),
        ("top5_prob", pa.list_(pa.float32())),
        ("target", pa.int32()),
        ("target_name", name),
        ("rival", pa.int32()),
        ("rival_name", name),
        ("prob_target", pa.float32()),
        ("prob_rival", pa.float32()),
        ("logit_target", pa.float32()),
        ("logit_rival", pa.float32()),
        ("node_path", pa.list_(pa.string())),
        ("node_size", pa.list_(pa.int32())),
        ("node_contribution", pa.list_(pa.float32())),
        ("node_map", pa.list_(half)),
        ("contrast_map", half),
    ]
    if options.features:
        fields.append(("features", half))
    if options.scores != "none":
        fields.append(("node_score", pa.list_(pa.float32())))
    if options.curves:
        fields += [
            ("node_deletion_auc", pa.list_(pa.float32())),
            ("node_insertion_auc", pa.list_(pa.float32())),
            ("random_deletion_auc", pa.float32()),
            ("random_insertion_auc", pa.float32()),
        ]
    return pa.schema(fields, metadata={"fclens_schema_version": str(SCHEMA_VERSION)})


def class_name_column(indices: Any, class_names: pa.Array) -> Any:
    """The names of class ``indices`` (an Arrow or numpy array; null where the index is null),
    dictionary-encoded so that each name is stored once per batch."""
    return pc.take(class_names, indices).dictionary_encode()


def skipped_rows(
    items: Sequence[Item], reasons: Sequence[str], schema: pa.Schema, class_names: pa.Array
) -> pa.RecordBatch:
    """Rows for images that could not be scanned: where they are, why not, their label; the rest null."""
    known = {
        "index": [item.index for item in items],
        "path": [item.path for item in items],
        "status": ["skipped"] * len(items),
        "reason": list(reasons),
        "label": [item.label for item in items],
    }
    columns = [
        pa.array(known[field.name], field.type) if field.name in known else pa.nulls(len(items), field.type)
        for field in schema
    ]
    label = schema.get_field_index("label")
    columns[schema.get_field_index("label_name")] = class_name_column(columns[label], class_names)
    return pa.RecordBatch.from_arrays(columns, schema=schema)
