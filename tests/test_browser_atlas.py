"""The atlas pages and the contrast on the explanation page, in headless Chromium (see test_browser.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import synthetic_scan as synthetic
from browsing import HOSTILE, Visit
from fclens.atlasing import atlas
from fclens.explaining import explain
from fclens.models import Classifier
from fclens.report import explanations_page
from fclens.report.atlas import class_page_name, write_atlas_pages
from fclens.samples import sample_image

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def atlas_pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four classes, class 0 named like an attack, every fifth image's file gone, one hostile file name."""
    root = tmp_path_factory.mktemp("atlas")
    photos = [str(sample_image("chelsea" if i % 2 else "coffee")) for i in range(240)]
    for i in range(0, 240, 5):
        photos[i] = str(root / f"gone-{i}.jpg")
    photos[1] = str(root / HOSTILE)
    synthetic.write(root / "scan", 240, classes=4, paths=photos)
    path = next((root / "scan").glob("*manifest.json"))  # _manifest.json from schema version 2 on
    manifest = json.loads(path.read_text())
    manifest["class_names"][0] = HOSTILE
    path.write_text(json.dumps(manifest))
    write_atlas_pages(atlas(root / "scan", top_k=8), root / "pages")
    return root / "pages"


@pytest.fixture
def index(browser: Any, atlas_pages: Path) -> Iterator[Visit]:
    visit = Visit(browser, atlas_pages / "index.html")
    yield visit
    visit.close()


def assert_quiet(visit: Visit) -> None:
    """No request left the page, no error, no injected script (the index has no pictures to decode)."""
    assert visit.outside == [] and visit.errors == [] and visit.dialogs == []


def percent(text: str) -> float:
    """An accuracy as every page prints it, "85.2%", read back."""
    assert text.endswith("%") and text.count(".") == 1 and len(text.split(".")[1]) == 2, text
    return float(text.removesuffix("%"))


def column(visit: Visit, n: int) -> list[str]:
    return visit.page.locator(f"#class-table tbody tr:visible td:nth-child({n})").all_inner_texts()


def test_index_sorts_filters_and_escapes(index: Visit) -> None:
    page = index.page
    assert_quiet(index)
    assert column(index, 1) == ["0", "1", "2", "3"]
    assert page.get_by_text(HOSTILE).first.is_visible() and page.locator('img[src="x"]').count() == 0
    page.locator("#class-table th", has_text="accuracy").locator("button").click()
    ascending = [percent(a) for a in column(index, 4)]
    assert ascending == sorted(ascending)
    page.locator("#class-table th", has_text="accuracy").locator("button").click()
    assert [percent(a) for a in column(index, 4)] == sorted(ascending, reverse=True)
    page.locator("#class-table th", has_text="class").first.locator("button").click()
    names = column(index, 2)
    assert names == sorted(names, key=str.lower)
    page.fill("#class-filter", "onerror")
    assert column(index, 2) == [HOSTILE]
    page.fill("#class-filter", "2")
    assert column(index, 1) == ["2"]
    page.fill("#class-filter", "")
    assert page.locator("#pairs tbody tr").count() == 12  # 4 classes × 3 others
    index.screenshot("atlas-index.png", full_page=True)
    assert_quiet(index)


def test_class_page_draws_the_top_images_and_marks_missing_files(index: Visit, atlas_pages: Path) -> None:
    page = index.page
    page.locator("#class-table a", has_text=HOSTILE).click()
    page.wait_for_load_state("load")
    assert page.url.endswith(class_page_name(0))
    index.check_clean()  # every overlay decodes
    assert page.locator("#rivals tbody tr").first.inner_text().startswith("class <1>")
    assert page.locator("#tree .card").count() >= 3
    shots = page.locator("#confusing figure.shot")
    assert shots.count() == 8 and page.locator("#rival-images figure.shot").count() > 0
    missing = page.locator(".missing-file")
    assert missing.count() > 0 and "not shown" in missing.first.inner_text()
    for source in page.locator("figure.shot .source").all():  # the file's name, its whole path on hover
        path = source.get_attribute("title")
        assert Path(path).is_absolute() and source.inner_text() == Path(path).name
    gaps = page.locator("#rival-images figure.shot figcaption").all_inner_texts()
    argued = [float(text.split("logit gap ")[1]) for text in gaps]
    assert argued and argued[: len([g for g in argued if g > 0])] == [g for g in argued if g > 0]
    assert page.locator("figure.shot img").count() + missing.count() == page.locator("figure.shot").count()
    page.locator("#confusing figure.shot button.zoom").first.click()
    assert page.locator("#lightbox").is_visible()
    page.keyboard.press("Escape")
    index.screenshot("atlas-class.png", full_page=True)
    page.get_by_text("← every class").click()
    assert page.url.endswith("index.html")
    assert_quiet(index)


def test_every_class_page_is_clean(browser: Any, atlas_pages: Path) -> None:
    for k in range(4):
        visit = Visit(browser, atlas_pages / class_page_name(k))
        try:
            visit.check_clean()
        finally:
            visit.close()


def test_a_class_page_fits_1280_px_and_says_what_the_colours_mean(browser: Any, atlas_pages: Path) -> None:
    visit = Visit(browser, atlas_pages / class_page_name(0), width=1280)
    try:
        page = visit.page
        assert visit.overflow() == 0
        scales = page.locator("#confusing .colour-scale")
        assert scales.is_visible() and scales.inner_text().startswith("low") and "high" in scales.inner_text()
        bar = page.locator("#confusing .colour-bar")
        assert "linear-gradient" in bar.evaluate("(e) => getComputedStyle(e).backgroundImage")
        assert bar.bounding_box()["width"] >= 100
        node = page.locator("dt", has_text="most confusing node").locator("xpath=following-sibling::dd[1]")
        assert "down the negative chain" in node.inner_text() and "neurons" in node.inner_text()
        visit.screenshot("atlas-class-1280.png", full_page=True)
    finally:
        visit.close()


def test_explanation_page_shows_the_contrast(
    browser: Any,
    classifier: Classifier,
    chelsea: Path,
    tmp_path: Path,
) -> None:
    cat = explain(classifier, chelsea, maps=("activation", "contribution"), contrast="runner-up")
    path = tmp_path / "contrast.html"
    path.write_text(explanations_page([cat]), encoding="utf-8")
    visit = Visit(browser, path)
    try:
        visit.check_clean()
        page = visit.page
        assert (
            page.locator("figure.big img:visible").count() == 4
        )  # input, discriminative, confusing, contrast
        assert (
            page.locator("figure.contrast figcaption")
            .inner_text()
            .startswith(f"Why not {cat.contrast.rival.name}")
        )
        assert page.locator("table.pair button.card").count() == 4
        page.get_by_label("contribution").check()
        assert page.locator("table.pair img.ov:visible[data-k='1']").count() == 4
        page.locator("figure.contrast button.zoom").click()
        assert "Why not" in page.locator("#lightbox-caption").inner_text()
        page.keyboard.press("Escape")
        visit.screenshot("explanation-contrast.png", full_page=True)
    finally:
        visit.close()
