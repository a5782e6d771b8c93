"""The Ray engine on a local two-node cluster: the local engine's rows, a model actor lost mid-scan, no Ray."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import fclens
from crops import make_photo_folder
from fclens.errors import FclensError
from fclens.scanning import LocalEngine, RayEngine, scan

MIB = 1 << 20


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A head and one worker node of one CPU each (Ray's test cluster), stopped when the module ends."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 150 * MIB})
    cluster.add_node(num_cpus=1, object_store_memory=150 * MIB)
    yield cluster
    cluster.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 photos (crops and flips in labelled subfolders, four scikit-image photos unlabelled) and two bad files."""
    from skimage import data

    root = make_photo_folder(tmp_path_factory.mktemp("photos"), copies=10)
    for name in ("rocket", "astronaut", "camera", "coffee"):
        picture = getattr(data, name)()
        Image.fromarray(picture[::-1] if name == "coffee" else picture).convert("RGB").save(
            root / f"{name}.jpg"
        )
    return root


def rows(directory: Path) -> dict[str, list]:
    return fclens.read_scan(directory).table.to_pydict()


def flat(column: list) -> np.ndarray:
    """A list column of ok rows as one float array (maps and contributions)."""
    return np.concatenate(
        [np.asarray(value, dtype=np.float32).reshape(-1) for value in column if value is not None]
    )


@pytest.mark.slow
def test_ray_engine_on_two_nodes_writes_the_local_engines_rows(
    cluster: Any, photos: Path, classifier: fclens.Classifier, tmp_path: Path
) -> None:
    local = scan(
        classifier, photos, tmp_path / "local", batch_size=4, engine=LocalEngine(workers=1), progress=False
    )
    remote = scan(  # one model actor per CPU: one on each node
        classifier,
        photos,
        tmp_path / "ray",
        batch_size=4,
        engine=RayEngine(address=cluster.address, workers=1),
        progress=False,
    )
    assert remote.manifest.counts == local.manifest.counts == {"images": 26, "ok": 24, "skipped": 2}
    assert remote.manifest.complete and remote.manifest.feature_grid == local.manifest.feature_grid
    ours, theirs = rows(tmp_path / "ray"), rows(tmp_path / "local")
    for column in (
        "index",
        "path",
        "status",
        "reason",
        "label",
        "pred",
        "top5",
        "target",
        "rival",
        "label_name",
        "pred_name",
        "target_name",
        "rival_name",
        "node_path",
    ):
        assert ours[column] == theirs[column], column
    skipped = {
        Path(path).name: reason for path, reason in zip(ours["path"], ours["reason"], strict=True) if reason
    }
    assert skipped.keys() == {"broken.jpg", "notes.png"} and "truncated" in skipped["broken.jpg"]
    for column in ("prob", "logit_target", "logit_rival", "node_contribution"):
        np.testing.assert_allclose(flat(ours[column]), flat(theirs[column]), atol=1e-4, err_msg=column)
    for column in ("node_map", "contrast_map"):  # float16 on disk: equal within 1e-4 or one float16 step
        np.testing.assert_allclose(
            flat(ours[column]), flat(theirs[column]), rtol=2**-10, atol=1e-4, err_msg=column
        )
    assert cluster.remaining_processes_alive()  # a joined cluster is left running


class DiesOnce(nn.Module):
    """A model whose process exits on its second forward, unless ``marker`` exists (it creates it first)."""

    def __init__(self, module: nn.Module, marker: Path) -> None:
        super().__init__()
        self.module, self.marker, self.calls = module, str(marker), 0
        self.pretrained_cfg = module.pretrained_cfg

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 2 and not os.path.exists(self.marker):
            Path(self.marker).touch()
            os._exit(1)  # the actor's process dies as a crashed or preempted worker does
        return self.module(images)


@pytest.mark.slow
def test_a_model_actor_lost_mid_scan_costs_no_image_and_repeats_none(
    cluster: Any, photos: Path, classifier: fclens.Classifier, tmp_path: Path
) -> None:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import this test file
    marker = tmp_path / "died"
    model = fclens.load_model(DiesOnce(classifier.module, marker), class_names=classifier.class_names)
    model.module.calls = 0  # finding the head ran one forward here
    result = scan(
        model,
        photos,
        tmp_path / "scan",
        batch_size=4,
        engine=RayEngine(address=cluster.address, actors=1),
        progress=False,
    )
    assert marker.exists()  # an actor did die
    assert sorted(result.table.column("index").to_pylist()) == list(range(26))  # each image exactly once
    assert result.manifest.complete and result.manifest.counts == {"images": 26, "ok": 24, "skipped": 2}


@pytest.mark.slow
def test_a_ray_dataset_is_scanned_in_its_row_order_with_its_labels(
    cluster: Any, photos: Path, classifier: fclens.Classifier, tmp_path: Path
) -> None:
    import ray

    names = [
        "rocket.jpg",
        "espresso/coffee-1.jpg",
        "Tiger_Cat/chelsea-0.jpg",
        "espresso/coffee-0.jpg",
        "camera.jpg",
    ]
    paths = [str(photos / name) for name in names]  # not in sorted order: the Dataset's order is kept
    ray.init(address=cluster.address)
    try:
        dataset = ray.data.from_items(
            [{"path": path, "label": "espresso" if "espresso/" in path else None} for path in paths]
        )
        result = scan(
            classifier, dataset, tmp_path / "scan", batch_size=4, engine=RayEngine(actors=1), progress=False
        )
    finally:
        ray.shutdown()
    table = result.table.to_pydict()
    assert table["path"] == paths and table["index"] == list(range(5))
    assert table["label"] == [None, 967, None, 967, None] and table["target"][1] == table["target"][3] == 967


@pytest.mark.slow
def test_more_actors_than_the_cluster_holds_is_one_line(
    cluster: Any, photos: Path, classifier: fclens.Classifier, tmp_path: Path
) -> None:
    with pytest.raises(FclensError) as error:
        scan(classifier, photos, tmp_path / "scan", engine=RayEngine(address=cluster.address, actors=3))
    assert str(error.value) == (
        "3 model actors asked for, but the Ray cluster has 2 CPUs; use RayEngine(actors=2) or fewer"
    )


def test_without_ray_the_ray_engine_is_one_line_saying_how_to_install_it(
    classifier: fclens.Classifier, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    with pytest.raises(FclensError) as error:
        scan(classifier, photos, tmp_path / "scan", engine=RayEngine(), progress=False)
    assert str(error.value) == "the ray engine needs Ray: pip install 'fclens[ray]'"


def test_fclens_and_its_scan_do_not_import_ray() -> None:
    code = "import sys, fclens, fclens.scanning; fclens.scan; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
