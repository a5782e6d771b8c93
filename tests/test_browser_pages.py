"""Every page fclens writes, built as a user builds it and opened in headless Chromium at 1280 px.

The pages come from real scans of the sample photos by the embedded EfficientNet-Lite0 (``sample_scans``
in conftest.py), through the commands and public functions a user calls: the atlas index and a class page
without and with ``--causal``, a class page of a scan with ``--curves`` (its faithfulness table), weights,
prune, rebalance, and the explanations page (with curves). Each must fit the
window (no horizontal scrolling, with every collapsed section opened), decode every picture, log no
console error and request nothing from the network. A screenshot of each goes to test-artifacts/.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atlas_json import unchanged
from browsing import Visit
from conftest import FIXTURE_PHOTOS
from fclens.cli import main
from fclens.explaining import explain
from fclens.models import Classifier
from fclens.report import explanations_page
from fclens.report.atlas import class_page_name

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TABBY = 281
PAGES = [
    "atlas/index.html",
    f"atlas/{class_page_name(TABBY)}",
    "atlas-causal/index.html",
    f"atlas-causal/{class_page_name(TABBY)}",
    f"atlas-curves/{class_page_name(TABBY)}",
    "weights/weights.html",
    "prune/prune.html",
    "rebalance/rebalance.html",
    "explanations.html",
]


@pytest.fixture(scope="module")
def every_page(
    sample_scans: dict[str, Path],
    classifier: Classifier,
    chelsea: Path,
    coffee: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The folder of every page, each written by the command (or the function) a user calls."""
    out = tmp_path_factory.mktemp("every-page")
    train, evaluation = str(sample_scans["train"]), str(sample_scans["eval"])
    commands = [
        ["atlas", train, "--out", str(out / "atlas"), "--html"],
        ["atlas", train, "--out", str(out / "atlas-causal"), "--html", "--causal"],
        ["weights", "--html", "--out", str(out / "weights")],
        ["prune", train, "--out", str(out / "prune"), "--html", "--sparsity", "0.5,0.9"],
        ["rebalance", train, "--eval", evaluation, "--out", str(out / "rebalance"), "--html",
         "--methods", "ce,logit-adjust,tau-norm"],
    ]  # fmt: skip
    curves = out / "scan-curves"  # six photos: the faithfulness columns without a long scan
    assert main(["scan", str(FIXTURE_PHOTOS), "--out", str(curves), "--curves", "--workers", "0"]) == 3
    commands.append(["atlas", str(curves), "--out", str(out / "atlas-curves"), "--html"])
    for command in commands:
        assert main(command) == 0, command
    explained = explain(classifier, [chelsea, coffee], maps=("activation", "contribution"), curves=True)
    page = explanations_page(explained)
    (out / "explanations.html").write_text(page, encoding="utf-8")
    return out


@pytest.fixture
def opened(request: pytest.FixtureRequest, browser: Any, every_page: Path) -> Iterator[Visit]:
    visit = Visit(browser, every_page / request.param, width=1280)
    yield visit
    visit.close()


@pytest.mark.parametrize("opened", PAGES, indirect=True, ids=PAGES)
def test_every_page_fits_1280_px_shows_every_picture_and_stays_offline(
    opened: Visit, request: pytest.FixtureRequest
) -> None:
    page = opened.page
    page.evaluate("() => document.querySelectorAll('details').forEach((d) => { d.open = true; })")
    assert opened.overflow() == 0, "the page scrolls sideways"
    assert opened.broken_images() == [], "pictures that did not decode"
    assert opened.outside == [], f"the page tried to reach {opened.outside}"
    assert opened.errors == [] and opened.dialogs == []
    name = request.node.callspec.params["opened"].removesuffix(".html").replace("/", "-")
    opened.screenshot(f"page-{name}.png", full_page=True)


def test_a_class_page_leads_with_pictures_and_keeps_the_causal_tables_closed(
    browser: Any, every_page: Path
) -> None:
    visit = Visit(browser, every_page / "atlas-causal" / class_page_name(TABBY), width=1280)
    try:
        page = visit.page
        tops = {
            section: page.locator(f"#{section}").bounding_box()["y"]
            for section in ("tree", "confusing", "rival-images", "rivals", "causal")
        }
        assert list(tops) == sorted(tops, key=tops.get)  # pictures first, then the rivals, then the test
        assert tops["confusing"] < 1600  # the images start within about a screen and a half
        closed = page.locator("details.causal-pair")
        assert closed.count() >= 1 and not closed.first.evaluate("(d) => d.open")
        assert not page.locator("table.causal").first.is_visible()
        # A rival's "tested ↓" link opens its section and shows its chart and table.
        page.locator("#rivals a", has_text="tested ↓").first.click()
        opened = page.locator("details.causal-pair[open]")
        assert opened.count() == 1
        assert opened.locator("svg.chart").count() == 2 and opened.locator("table.causal").is_visible()
        # Rivals where no edit changed anything are one line each, not a table (the JSON agrees).
        data = json.loads((every_page / "atlas-causal" / "atlas.json").read_text("utf-8"))
        rivals = {r["class"] for c in data["classes"] if c["class"] == TABBY for r in c["rivals"]}
        tested = [p["causal"] for p in data["pairs"] if p["causal"] and p["a"] == TABBY and p["b"] in rivals]
        quiet = {
            t["rival"]
            for t in tested
            if all(unchanged(x[edit], t["before"]) for x in t["trials"] for edit in ("equalise", "partial"))
        }
        assert quiet and len(quiet) < len(tested)
        assert {int(i.removeprefix("causal-")) for i in page.locator("ul.quiet li").evaluate_all(
            "(items) => items.map((i) => i.id)")} == quiet  # fmt: skip
        # Captions name the file; the whole path is on hover.
        caption = page.locator("#confusing figcaption .source").first
        assert "/" not in caption.inner_text() and caption.get_attribute("title").endswith(
            caption.inner_text()
        )
        assert visit.errors == [] and visit.outside == []
    finally:
        visit.close()
