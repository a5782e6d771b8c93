"""The HTML pages in a real browser: headless Chromium, opened from disk, with the network blocked
(tests/browsing.py). Without Playwright and Chromium these tests fail and say what to install;
FCLENS_SKIP_BROWSER=1 skips them (loudly), whether or not a browser is there."""

from __future__ import annotations

import dataclasses
import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from browsing import HOSTILE, Visit
from fclens.ald import fit_ald
from fclens.explaining import Explanation, explain
from fclens.images import load_image, sample_folder
from fclens.models import Classifier
from fclens.report import explanations_page, weights_page
from fclens.report.html import CLASS_TABLE_PAGE, PAGE_SIZE, report_pages

pytestmark = pytest.mark.browser


@pytest.fixture(scope="session")
def pages(
    tmp_path_factory: pytest.TempPathFactory, classifier: Classifier, chelsea: Path, coffee: Path
) -> dict[str, Path]:
    """The two pages as files: a batch (a hostile file name, a skipped file, contrasts with the runner-up)
    and the weights page."""
    cat, cup = explain(
        classifier, [chelsea, coffee], maps=("activation", "contribution"), contrast="runner-up"
    )
    assert isinstance(cat, Explanation)
    folder = tmp_path_factory.mktemp("pages")
    batch = explanations_page(
        [cat, dataclasses.replace(cup, source=HOSTILE)], skipped=[("broken.jpg", "<b>not an image</b>")]
    )
    weight = classifier.head.weight
    names = list(classifier.class_names)
    names[3] = HOSTILE
    weights = weights_page(classifier.name, fit_ald(weight), names, weight, classes_to_plot=[3, 282, 285])
    written = {"explanations": folder / "explanations.html", "weights": folder / "weights.html"}
    written["explanations"].write_text(batch, encoding="utf-8")
    written["weights"].write_text(weights, encoding="utf-8")
    return written


@pytest.fixture
def explanations(browser: Any, pages: dict[str, Path]) -> Iterator[Visit]:
    visit = Visit(browser, pages["explanations"])
    yield visit
    visit.close()


@pytest.fixture
def weights(browser: Any, pages: dict[str, Path]) -> Iterator[Visit]:
    visit = Visit(browser, pages["weights"])
    yield visit
    visit.close()


def test_explanations_page_loads_offline_and_shows_everything(explanations: Visit):
    page = explanations.page
    explanations.check_clean()
    assert page.locator("h1").is_visible()
    assert page.locator("table.index tbody tr").count() == 2
    assert page.locator("section.explanation").count() == 2
    first = page.locator("section.explanation").first
    assert first.locator("ol.top5 li").count() == 5
    assert first.locator("figure.big img:visible").count() == 4  # input, discriminative, confusing, contrast
    assert first.locator(".tree button.card").first.is_visible()
    assert page.locator("#skipped").is_visible()
    assert page.get_by_text(HOSTILE).first.is_visible()  # the hostile name is text, not an element
    assert page.locator('img[src="x"]').count() == 0
    assert page.get_by_text("<b>not an image</b>").is_visible()
    explanations.screenshot("explanations.png", full_page=True)


def test_index_links_jump_to_their_section(explanations: Visit):
    page = explanations.page
    page.locator("table.index tbody tr").nth(1).locator("a").last.click()
    target = page.locator("section.explanation").nth(1)
    assert page.evaluate("location.hash") == "#" + target.get_attribute("id")
    box = target.locator("h2").bounding_box()
    assert box is not None and 0 <= box["y"] < 500
    assert target.locator("h2").inner_text() == HOSTILE


def test_clicking_a_node_enlarges_it_and_escape_closes(explanations: Visit):
    page = explanations.page
    dialog = page.locator("#lightbox")
    assert not dialog.is_visible()
    node = page.locator("section.explanation").first.locator(".tree button.card").nth(2)
    thumbnail = node.locator("img.ov:visible")
    small = thumbnail.bounding_box()
    node.click()
    assert dialog.is_visible()
    large = page.locator("#lightbox-image")
    assert large.get_attribute("src") == thumbnail.get_attribute("src")
    assert large.bounding_box()["width"] > 2 * small["width"]
    assert node.get_attribute("data-caption") in page.locator("#lightbox-caption").inner_text()
    explanations.screenshot("explanations-enlarged.png")
    page.keyboard.press("Escape")
    assert not dialog.is_visible()
    explanations.check_clean()


def test_map_kind_switch_changes_the_shown_maps(explanations: Visit):
    page = explanations.page

    def shown() -> list[str]:
        return page.locator(".tree img.ov:visible").evaluate_all("(images) => images.map((i) => i.src)")

    before = shown()
    assert before and page.locator(".tree img.ov:visible[data-k='0']").count() == len(before)
    page.get_by_label("contribution").check()
    after = shown()
    assert len(after) == len(before) and not set(after) & set(before)
    assert page.locator(".tree img.ov:visible[data-k='1']").count() == len(after)
    # The enlarged view follows the switch too.
    page.locator(".tree button.card").first.click()
    assert page.locator("#lightbox-image").get_attribute("src") == after[0]
    assert "contribution" in page.locator("#lightbox-caption").inner_text()
    page.keyboard.press("Escape")
    explanations.screenshot("explanations-contribution.png")
    page.get_by_label("activation").check()
    assert shown() == before
    explanations.check_clean()


def test_explanations_page_at_1280_px_shows_its_colour_scale_and_reads_its_contrast(
    browser: Any, pages: dict[str, Path]
):
    """No horizontal scroll; the colour scale in view while scrolling and in the enlarged view of a map;
    the top-5 box on the maps' row with its values beside their bars; the logit gap said in words."""
    visit = Visit(browser, pages["explanations"], width=1280)
    try:
        page = visit.page
        visit.check_clean()
        assert visit.overflow() == 0
        scale = page.locator(".toolbar .colour-scale")
        assert scale.is_visible() and "low" in scale.inner_text() and "high" in scale.inner_text()
        page.evaluate("window.scrollTo(0, 3000)")
        assert scale.is_visible() and scale.bounding_box()["y"] < 100  # sticky: in view while scrolling
        page.evaluate("window.scrollTo(0, 0)")
        section = page.locator("section.explanation").first

        figure = section.locator("figure.big").first.bounding_box()
        box = section.locator(".predictions").bounding_box()
        assert abs(box["y"] - figure["y"]) < 2 and box["x"] + box["width"] <= 1280  # beside the maps
        top = section.locator("ol.top5 li").first
        assert top.locator(".num").bounding_box()["x"] - top.locator(".bar").bounding_box()["x"] < 320
        caption = section.locator("figure.contrast figcaption").inner_text()
        assert "Logit gap" in caption and "= logit of Egyptian cat − logit of tiger cat" in caption
        assert "below zero: tiger cat scores higher" in caption
        visit.screenshot("explanations-1280.png")

        section.locator("figure.contrast button.zoom").click()
        assert page.locator("#lightbox-scale .colour-bar").is_visible()
        page.keyboard.press("Escape")
        section.locator("figure.big").first.locator("button.zoom").click()  # the input: no colours to read
        assert page.locator("#lightbox").is_visible() and not page.locator("#lightbox-scale").is_visible()
        page.keyboard.press("Escape")
        visit.check_clean()
    finally:
        visit.close()


@pytest.fixture(scope="module")
def report_of_500(tmp_path_factory: pytest.TempPathFactory, classifier: Classifier) -> Path:
    """The index and the first page of a report of 500 real photo crops (fclens.sample_folder).

    The first page's ten crops are explained; explaining all 500 would take many minutes, so the index's
    other rows borrow their numbers and maps from those ten, each with its own crop: the pages weigh
    what a real report of 500 weighs.
    """
    folder = tmp_path_factory.mktemp("report-500")
    crops = sorted(sample_folder(folder / "crops", 500).rglob("*.jpg"))
    real = explain(classifier, crops[:PAGE_SIZE], scores="none", contrast="runner-up")

    def load(i: int) -> Explanation:
        if i < PAGE_SIZE:
            return real[i]
        picture = classifier.preprocessing.display(load_image(crops[i]))
        return dataclasses.replace(real[i % PAGE_SIZE], source=str(crops[i]), image=picture)

    for name, page in itertools.islice(report_pages(len(crops), load), 2):
        (folder / name).write_text(page, encoding="utf-8")
    return folder


def _seconds_to_load(page: Any) -> float:
    """From the start of the page's navigation to the end of its load event (all pictures decoded), as
    the browser measured it: what a person waits for once the browser runs."""
    return page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd") / 1000


def test_a_report_of_500_images_opens_in_under_2_s(browser: Any, report_of_500: Path):
    """Issue 22: a report of 101 images was one 23 MB page; now an index, and a page per ten images."""
    visit = Visit(browser, report_of_500 / "report.html", width=1280)
    try:
        page = visit.page
        opened = _seconds_to_load(page)
        assert opened < 2.0, f"the index of 500 images took {opened:.2f} s to open"
        visit.check_clean()
        assert visit.overflow() == 0
        assert page.locator("table.index tbody tr").count() == 500
        visit.screenshot("report-500-index.png")

        page.locator("table.index tbody tr").nth(1).locator("a").last.click()
        page.wait_for_load_state("load")
        opened = _seconds_to_load(page)
        assert opened < 2.0, f"a page of {PAGE_SIZE} explanations took {opened:.2f} s to open"
        assert page.url.endswith(
            "report-1.html#" + page.locator("section.explanation").nth(1).get_attribute("id")
        )
        assert page.locator("section.explanation").count() == PAGE_SIZE
        visit.check_clean()
        assert visit.overflow() == 0
        visit.screenshot("report-500-page-1.png")
    finally:
        visit.close()


def test_weights_page_shows_the_plots_first_and_pages_and_filters_the_class_table(weights: Visit):
    page = weights.page
    weights.check_clean()
    tops = [page.locator(f"#{section}").bounding_box()["y"] for section in ("figures", "plotted", "classes")]
    assert tops == sorted(tops)  # the figures, then the selected classes' plots, the table last
    rows = page.locator("#class-table tbody tr")
    visible = page.locator("#class-table tbody tr:visible")
    assert rows.count() == 1000 and visible.count() == CLASS_TABLE_PAGE
    for figure in ("#figures img", "#class-282 img", "#class-285 .tree"):
        assert page.locator(figure).first.is_visible()
    weights.screenshot("weights.png")

    pager = page.locator("#class-pager")
    assert "rows 1–50 of 1000" in pager.inner_text() and pager.locator(".pager-previous").is_disabled()
    pager.locator(".pager-next").click()
    assert page.locator("#class-table tbody tr:visible td:first-child").first.inner_text() == "50"
    assert "page 2 of 20" in pager.inner_text()

    page.fill("#class-filter", "cat")
    names = page.locator("#class-table tbody tr:visible td:nth-child(2)").all_inner_texts()
    assert 3 <= len(names) < 50 and all("cat" in name.lower() for name in names)
    assert "tiger cat" in names and "Egyptian cat" in names  # found on every page, shown on the first
    assert page.locator("#class-count").inner_text() == f"{len(names)} of 1000 classes"
    assert not pager.is_visible()  # one page of hits needs no pager
    weights.screenshot("weights-filtered.png")

    page.fill("#class-filter", "282")
    assert page.locator("#class-table tbody tr:visible td:first-child").all_inner_texts() == ["282"]
    page.fill("#class-filter", "onerror")
    assert page.locator("#class-table tbody tr:visible td:nth-child(2)").all_inner_texts() == [HOSTILE]
    page.fill("#class-filter", "")
    assert visible.count() == CLASS_TABLE_PAGE
    page.locator("#class-table th", has_text="R² +").locator("button").click()  # worst fit first
    r2 = [float(v) for v in page.locator("#class-table tbody tr:visible td:nth-child(3)").all_inner_texts()]
    assert r2 == sorted(r2) and len(r2) == CLASS_TABLE_PAGE and "page 1 of 20" in pager.inner_text()
    page.fill("#class-filter", "Egyptian")
    page.locator("#class-table a[href='#class-285']").click()
    assert page.locator("#class-285").is_visible()
    weights.check_clean()


def test_pages_open_from_a_copy_elsewhere(browser: Any, pages: dict[str, Path], tmp_path: Path):
    """Self-contained: a copy moved to another folder, alone, still shows every picture."""
    copy = tmp_path / "moved" / "page.html"
    copy.parent.mkdir()
    shutil.copy(pages["explanations"], copy)
    visit = Visit(browser, copy)
    try:
        visit.check_clean()
    finally:
        visit.close()


def test_prune_page_fits_a_1280_px_window(browser: Any, tmp_path: Path):
    """The figure is scaled to the page: no horizontal scrolling, every panel in view."""
    import numpy as np

    from fclens.pruning import curve
    from fclens.report.prune import prune_page
    from fclens.scanning.features import Features

    rng = np.random.default_rng(0)
    w = rng.laplace(size=(8, 60)).astype(np.float32)
    z = np.abs(rng.normal(size=(80, 60))).astype(np.float32)
    features = Features.of(z, rng.integers(0, 8, 80), layer=(w, None))
    found = curve(features, methods=["tree", "ald", "magnitude", "random"], sparsities=[0.5, 0.9, 0.99],
                  bias_correction="both")  # fmt: skip
    path = tmp_path / "prune.html"
    path.write_text(prune_page(found, "scan", "model"), encoding="utf-8")
    visit = Visit(browser, path, width=1280)
    try:
        visit.check_clean()
        assert visit.overflow() == 0
        figure = visit.page.locator("#curves figure img").bounding_box()
        assert figure["x"] >= 0 and figure["x"] + figure["width"] <= 1280
        visit.screenshot("prune-1280.png", full_page=True)
    finally:
        visit.close()
