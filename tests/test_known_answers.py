"""Evidence on a data set whose answers are known by construction (tests/known_answers.py).

Class A's images hold a small square of A's partner B: the contrast of A with its runner-up must find
that square at least as well as Grad-CAM of the runner-up, and the discriminative map the large square.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import known_answers as ka
from fclens.atlasing import atlas
from fclens.scanning import LocalEngine, scan


def test_the_data_set_is_seeded_and_its_boxes_are_apart() -> None:
    first, again, other = ka.make(5, seed=3), ka.make(5, seed=3), ka.make(5, seed=4)
    assert torch.equal(first.images, again.images) and not torch.equal(first.images, other.images)
    assert first.images.shape == (30, 3, ka.SIZE, ka.SIZE) and sorted(first.labels.tolist()) == sorted(
        list(range(6)) * 5
    )
    for i in first.with_partner:
        assert ka._apart(first.main[i], first.small[i], 2)
    assert 0 < len(first.with_partner) < len(first)
    assert {ka.partner(c) for c in range(6)} == set(range(6)) and all(
        ka.partner(ka.partner(c)) == c for c in range(6)
    )


@pytest.mark.slow
def test_contrast_points_at_the_partner_object_at_least_as_well_as_gradcam() -> None:
    found = ka.evidence()
    assert found.images > 100 and found.rival_is_partner >= 0.85
    pointing, energy = found.contrast
    assert pointing >= found.gradcam_rival[0] and energy >= found.gradcam_rival[1]
    assert pointing >= 0.85
    assert found.discriminative[0] >= 0.95  # the discriminative map finds the main object


def test_in_box_scores_the_maximum_and_the_mass() -> None:
    heat = np.zeros((ka.SIZE, ka.SIZE))
    heat[10, 10] = 3.0
    heat[30, 30] = 1.0
    assert ka.in_box(heat, np.array([8, 8, 12, 12])) == (True, 0.75)
    assert ka.in_box(heat, np.array([28, 28, 32, 32])) == (False, 0.25)
    assert ka.in_box(heat, np.array([12, 12, 14, 14]), tolerance=3)[0]


@pytest.mark.slow
def test_scan_and_atlas_find_the_designed_partners(tmp_path: Path) -> None:
    """Scanned as a torch Dataset and atlased: every class's top rival is its partner, and the images with
    the most evidence for it are ones that hold the partner's square (four images in five do here: the
    model is confident, so the partner must be the runner-up of most images to lead the soft confusion)."""
    data = ka.make(30, seed=2, partner_share=0.8)
    scanned = scan(
        ka.classifier(), ka.KnownAnswersDataset(data), tmp_path / "scan", min_size=ka.MIN_SIZE, engine=LocalEngine(workers=0),
        batch_size=32, progress=False,
    )  # fmt: skip
    assert scanned.manifest.counts["ok"] == len(data)
    found = atlas(scanned, top_k=5)
    assert [c.index for c in found.classes] == list(range(len(ka.CLASS_NAMES)))
    holds_partner = set(data.with_partner.tolist())
    for c in found.classes:
        assert c.n == 30 and c.accuracy is not None and c.accuracy >= 0.9
        assert c.rivals[0].index == ka.partner(c.index), c.name
        assert len(c.rival_images) == 5 and all(i.rival == ka.partner(c.index) for i in c.rival_images)
        assert {i.index for i in c.rival_images} <= holds_partner, c.name
        assert c.confusing is not None and c.confusing_images
    # The data-set ranking agrees with every class's own: the first pair of each class is its partner.
    # (Across classes, two pairs may stand within 1e-4 of each other: their order there means nothing.)
    first = {}
    for p in found.pairs:
        first.setdefault(p.a, p.b)
    assert first == {k: ka.partner(k) for k in range(6)}
