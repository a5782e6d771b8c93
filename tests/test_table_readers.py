"""The scan table as readers without fclens see it: README's lines run as written, class names in the rows."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset
import pyarrow.parquet as pq
import pytest

import fclens
from fclens.options import SCAN_DEFAULTS
from fclens.scanning.manifest import MANIFEST
from fclens.scanning.schema import CLASS_NAMES, scan_schema

README = Path(__file__).parents[1] / "README.md"
V1 = Path(__file__).parent / "fixtures" / "scan-v1"
NAME = pa.dictionary(pa.int32(), pa.string())


def readme_line(start: str) -> str:
    """The line of README's "**Output.**" example that starts with ``start`` (its comment dropped)."""
    block = README.read_text("utf-8").split("**Output.**", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    (line,) = [line for line in block.splitlines() if line.startswith(start)]
    return line.split("  #", 1)[0].strip()


def run(line: str, directory: Path) -> object:
    """README's ``line`` on ``directory`` in place of ``val-scan/``."""
    readers = {"pd": pd, "duckdb": duckdb, "pl": pl, "pyarrow": pyarrow}
    return eval(line.replace("val-scan/", f"{directory}/"), readers)


def expected_names(scan: fclens.Scan, index: str) -> list[str | None]:
    names = scan.class_names
    return [None if k is None else names[k] for k in scan.rows(["index", index]).column(index).to_pylist()]


def test_the_rows_name_their_classes_beside_the_indices(photo_scan: fclens.Scan) -> None:
    schema = pq.read_schema(photo_scan.dataset.files[0])
    for name, index in CLASS_NAMES.items():
        assert schema.field(name).type == NAME
        assert schema.names.index(name) == schema.names.index(index) + 1
        assert photo_scan.rows(["index", name]).column(name).to_pylist() == expected_names(photo_scan, index)
    columns = ["status", "label", "label_name", "pred_name"]
    skipped = photo_scan.rows(columns, filter=pyarrow.dataset.field("status") == "skipped")
    assert skipped.to_pylist() == [
        {"status": "skipped", "label": 967, "label_name": "espresso", "pred_name": None}
    ]
    assert set(photo_scan.rows(["label_name"]).column("label_name").to_pylist()) == {"tabby", "espresso"}


def test_pandas_reads_the_directory_as_readme_shows(photo_scan: fclens.Scan) -> None:
    frame = run(readme_line("pd.read_parquet("), photo_scan.directory).sort_values("index")
    assert len(frame) == 7 and frame["pred"].dtype == "Int32" and frame["pred"].isna().sum() == 1
    assert isinstance(frame["pred_name"].dtype, pd.CategoricalDtype)
    assert frame["pred_name"].astype(object).where(frame["pred"].notna(), None).tolist() == expected_names(
        photo_scan, "pred"
    )


def test_duckdb_reads_the_shards_as_readme_shows(photo_scan: fclens.Scan) -> None:
    rows = dict(run(readme_line("duckdb.sql("), photo_scan.directory).fetchall())
    ok = photo_scan.rows(["target_name", "prob"], ok_only=True).to_pandas()
    assert rows.pop(None) is None  # the skipped image: no target, no probability
    assert rows == pytest.approx(ok.groupby("target_name", observed=True)["prob"].mean().to_dict())
    assert set(rows) == {"tabby", "espresso"}


def test_polars_reads_the_shards_as_readme_shows(photo_scan: fclens.Scan) -> None:
    frame = run(readme_line("pl.read_parquet("), photo_scan.directory).sort("index")
    assert frame.height == 7 and frame["target_name"].dtype == pl.Categorical
    assert frame["rival_name"].to_list() == expected_names(photo_scan, "rival")


def test_pyarrow_reads_the_directory_as_readme_shows(photo_scan: fclens.Scan) -> None:
    table = run(readme_line("pyarrow.dataset.dataset("), photo_scan.directory).sort_by("index")
    assert table.column_names == ["index", "pred", "pred_name"] and table.num_rows == 7
    assert table.column("pred_name").to_pylist() == expected_names(photo_scan, "pred")


def test_a_scan_before_version_3_gets_its_class_names_from_the_manifest(
    photo_scan: fclens.Scan, tmp_path: Path
) -> None:
    """A version-2 scan (the photo scan as version 2 wrote it) and the version-1 fixture."""
    old = tmp_path / "v2"
    shutil.copytree(photo_scan.directory, old)
    for shard in fclens.read_scan(old).dataset.files:
        table = pq.read_table(shard)
        pq.write_table(table.drop_columns(list(CLASS_NAMES)), shard)
    manifest = json.loads((old / MANIFEST).read_text())
    (old / MANIFEST).write_text(json.dumps({**manifest, "schema_version": 2}))
    v2 = fclens.read_scan(old)
    assert v2.manifest.schema_version == 2 and "pred_name" not in pq.read_schema(v2.dataset.files[0]).names
    assert v2.rows().column_names == photo_scan.rows().column_names  # each name beside its index
    assert v2.rows().select(list(CLASS_NAMES)).equals(photo_scan.rows().select(list(CLASS_NAMES)))
    assert v2.rows(["rival_name"]).column_names == ["rival_name"]
    pieces = list(v2.batches(["index", "pred_name"], ok_only=True))
    assert sum(piece.num_rows for piece in pieces) == 6
    assert all(piece.column_names == ["index", "pred_name"] for piece in pieces)
    assert v2.to_pandas(["label_name"])["label_name"].dtype == "category"

    v1 = fclens.read_scan(V1)
    assert v1.manifest.schema_version == 1
    frame = v1.to_pandas(["index", "label", "label_name", "target_name"])
    names = np.array(v1.class_names, dtype=object)
    labelled = frame["label"].notna()
    assert (frame["label_name"][labelled].astype(str) == names[frame["label"][labelled].astype(int)]).all()
    assert frame["target_name"].notna().sum() == v1.manifest.counts["ok"]


def test_readme_names_every_column_of_the_schema() -> None:
    documented = set(re.findall(r"^\| `([^|]*)` \|", README.read_text("utf-8"), flags=re.MULTILINE))
    columns = {name.strip(" `") for row in documented for name in row.split(",")}
    options = SCAN_DEFAULTS.but(features=True, scores="terminal")
    assert set(scan_schema(options).names) <= columns
