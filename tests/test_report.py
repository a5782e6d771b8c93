"""fclens.report without a browser: overlays, figures, saved folders, and the two HTML pages."""

from __future__ import annotations

import dataclasses
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import synthetic_scan
from fclens.ald import ALDFit, fit_ald
from fclens.cli import main
from fclens.explaining import Explanation, explain
from fclens.models import Classifier
from fclens.report import (
    CHAIN_FILE,
    DONE_MARKER,
    IMAGE_FILE,
    MAPS_FILE,
    chain_figure,
    default_classes,
    explanations_page,
    figures,
    fit_plot,
    node_filename,
    overlay,
    r2_histogram,
    save_explanation,
    save_figure,
    slope_intercept,
    weights_page,
)
from fclens.report import files as report_files

HOSTILE = "<img src=x onerror=alert(1)>.jpg"
QUOTES = '" onmouseover="alert(2)" x=\'.jpg'
KINDS = ("activation", "contribution")


# ---------------------------------------------------------------------------------------------------------
# Fixtures: real explanations of the sample photos by the embedded model
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def explanation(classifier: Classifier, chelsea: Path) -> Explanation:
    found = explain(classifier, chelsea, maps=KINDS)
    return found


@pytest.fixture(scope="session")
def full_tree(classifier: Classifier, coffee: Path) -> Explanation:
    found = explain(classifier, coffee, maps=KINDS, mode="full", min_size=80)
    return found


@pytest.fixture(scope="session")
def fit(classifier: Classifier) -> ALDFit:
    return fit_ald(classifier.head.weight)


@pytest.fixture(scope="session")
def batch_page(explanation: Explanation, full_tree: Explanation) -> str:
    hostile = dataclasses.replace(full_tree, source=HOSTILE)
    quoted = dataclasses.replace(explanation, source=QUOTES, model_name="<b>model</b>")
    return explanations_page([explanation, hostile, quoted], skipped=[(HOSTILE, "<script>alert(3)</script>")])


@pytest.fixture(scope="session")
def weights_html(classifier: Classifier, fit: ALDFit) -> str:
    names = list(classifier.class_names)
    names[5] = HOSTILE
    return weights_page("<i>lite0</i>", fit, names, classifier.head.weight, classes_to_plot=[5, 285])


class Elements(HTMLParser):
    """Every start tag of a page with its attributes, and its text."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def attribute(self, name: str) -> list[str]:
        return [attrs[name] or "" for _, attrs in self.tags if name in attrs]


def gradient(picture: np.ndarray) -> np.ndarray:
    """Horizontal and vertical differences of a greyscale picture: its edges and texture."""
    grey = picture.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.concatenate([np.diff(grey, axis=0).ravel(), np.diff(grey, axis=1).ravel()])


# ---------------------------------------------------------------------------------------------------------
# Overlays
# ---------------------------------------------------------------------------------------------------------
def test_overlay_keeps_the_photo_visible_and_shows_the_map(explanation: Explanation):
    photo = explanation.image
    heat = torch.zeros(7, 7)
    heat[1:3, 4:6] = 1.0  # a hot spot, upper right
    result = overlay(photo, heat)
    assert result.size == photo.size and result.mode == "RGB"
    before, after = np.asarray(photo, dtype=np.float64), np.asarray(result, dtype=np.float64)
    # The photo's edges survive: the heatmap is smooth, so the overlay's texture is the photo's, dimmed.
    assert np.corrcoef(gradient(before), gradient(after))[0, 1] > 0.95
    assert 0.4 < np.abs(gradient(after)).mean() / np.abs(gradient(before)).mean() < 0.9
    assert np.abs(after - before).mean() < 60
    # Hot pixels lean towards the colour map's top (viridis yellow), cold ones do not.
    yellow = np.array([253.0, 231.0, 37.0])
    hot, cold = after[40:80, 140:180], after[170:210, 20:60]
    hot_shift = np.abs(hot - before[40:80, 140:180] - (yellow - before[40:80, 140:180]) * 0.5).mean()
    cold_shift = np.abs(cold - before[170:210, 20:60] - (yellow - before[170:210, 20:60]) * 0.5).mean()
    assert hot_shift < cold_shift


def test_overlay_accepts_numpy_any_size_and_constant_maps(explanation: Explanation):
    photo = explanation.image
    a = overlay(photo, np.random.default_rng(0).random((5, 9)))
    b = overlay(photo, np.ones((7, 7)))
    c = overlay(photo, torch.full((7, 7), float("nan")))
    assert a.size == b.size == c.size == photo.size
    assert np.isfinite(np.asarray(c, dtype=float)).all()
    with pytest.raises(ValueError, match="2-D"):
        overlay(photo, np.zeros((1, 7, 7)))


def test_overlay_caption_goes_below_the_photo(explanation: Explanation):
    photo = explanation.image
    heat = explanation.nodes[0].map
    plain = overlay(photo, heat)
    captioned = overlay(photo, heat, "+++ | 117 neurons | score 0.530 | a rather long map kind name")
    assert captioned.width == plain.width and captioned.height > plain.height
    np.testing.assert_array_equal(np.asarray(captioned)[: plain.height], np.asarray(plain))
    strip = np.asarray(captioned)[plain.height :]
    assert (strip < 128).any() and (strip > 250).mean() > 0.5  # dark text on white


# ---------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "kind", "name"),
    [
        ("", None, "node-root.png"),
        ("+", None, "node-p.png"),
        ("++", None, "node-pp.png"),
        ("-", None, "node-m.png"),
        ("--", "contribution", "node-mm-contribution.png"),
        ("+-+", None, "node-pmp.png"),
        ("+", "smooth-gradcam++", "node-p-smooth-gradcampp.png"),
        ("", "a/b c", "node-root-a_b_c.png"),
    ],
)
def test_node_file_names(path: str, kind: str | None, name: str):
    assert node_filename(path, kind) == name


@pytest.mark.parametrize("path", ["../x", "root", "+ ", "+/"])
def test_node_file_names_refuse_anything_but_a_path(path: str):
    with pytest.raises(ValueError, match="'\\+' and '-'"):
        node_filename(path)


@pytest.fixture
def recorded_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, bool]]:
    """Every file save_explanation writes, in order, and whether the done-marker existed before it."""
    order: list[tuple[Path, bool]] = []

    def recording(write):
        def wrapped(path, data):
            path = Path(path)
            order.append((path, (path.parent / DONE_MARKER).exists()))
            return write(path, data)

        return wrapped

    monkeypatch.setattr(report_files, "atomic_write_bytes", recording(report_files.atomic_write_bytes))
    monkeypatch.setattr(report_files, "atomic_write_text", recording(report_files.atomic_write_text))
    return order


@pytest.mark.parametrize("overlays", [False, True])
def test_save_explanation_writes_everything_and_the_json_last(
    explanation: Explanation, tmp_path: Path, recorded_writes: list[tuple[Path, bool]], overlays: bool
):
    folder = tmp_path / "out" / "chelsea"
    save_explanation(explanation, folder, overlays=overlays)
    recorded_writes.clear()
    written = save_explanation(explanation, folder, overlays=overlays)  # again, over a finished folder

    names = [p.name for p in written]
    pngs = {node_filename(n.path) for n in explanation.nodes} | {
        node_filename(n.path, "contribution") for n in explanation.nodes
    }
    assert set(names) == (pngs if overlays else set()) | {IMAGE_FILE, CHAIN_FILE, MAPS_FILE, DONE_MARKER}
    assert len(names) == len(set(names)) == (2 * len(explanation.nodes) if overlays else 0) + 4
    assert names[-1] == DONE_MARKER and [path.name for path, _ in recorded_writes] == names
    assert not any(existed for _, existed in recorded_writes)  # the marker appears only with the last write
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)  # no temporary files left
    for path in written:
        if path.suffix in (".png", ".jpg"):
            with Image.open(path) as picture:
                assert picture.format == ("PNG" if path.suffix == ".png" else "JPEG")
                assert picture.width >= explanation.image.width


def test_saved_json_and_maps_hold_the_explanation(explanation: Explanation, tmp_path: Path):
    save_explanation(explanation, tmp_path)
    record = json.loads((tmp_path / DONE_MARKER).read_text("utf-8"))
    full = json.loads(explanation.to_json())
    assert [node.pop("maps") for node in full["nodes"]]
    shape = [len(explanation.nodes), *explanation.nodes[0].map.shape]
    assert record == {**full, "maps": {"file": MAPS_FILE, "shape": shape}}
    with np.load(tmp_path / MAPS_FILE) as maps:
        assert sorted(maps.files) == sorted(KINDS)
        for kind in KINDS:
            assert maps[kind].dtype == np.float16 and list(maps[kind].shape) == shape
            expected = torch.stack([node.maps[kind] for node in explanation.nodes]).numpy()
            np.testing.assert_allclose(maps[kind], expected, rtol=1e-3, atol=1e-6 * np.abs(expected).max())


def test_maps_beyond_float16_stay_float32(explanation: Explanation, tmp_path: Path):
    nodes = [
        dataclasses.replace(n, maps={"activation": n.maps["activation"] * 1e6}) for n in explanation.nodes
    ]
    huge = dataclasses.replace(explanation, nodes=nodes, map_kinds=["activation"], primary="activation")
    save_explanation(huge, tmp_path)
    with np.load(tmp_path / MAPS_FILE) as maps:
        assert maps["activation"].dtype == np.float32 and np.isfinite(maps["activation"]).all()


def test_a_saved_folder_is_small(explanation: Explanation, tmp_path: Path):
    """At most 300 KB per image by default: the chain figure as JPEG, the maps as float16."""
    save_explanation(explanation, tmp_path)
    assert sum(path.stat().st_size for path in tmp_path.iterdir()) < 300_000


def test_save_figure_is_a_png(fit: ALDFit, tmp_path: Path):
    path = save_figure(r2_histogram(fit), tmp_path / "r2.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r2.png"]


# ---------------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------------
def test_fit_plot_is_the_authors_figure(classifier: Classifier, fit: ALDFit):
    fig = fit_plot(classifier.head.weight[285], "Egyptian cat")
    left, right = fig.axes
    r2_pos, r2_neg = fit.pos.r2[285], fit.neg.r2[285]
    assert left.get_title() == f"Class: Egyptian cat, R²: {r2_pos:.3f}"
    assert right.get_title() == f"Class: Egyptian cat, R²: {r2_neg:.3f}"
    for ax in (left, right):
        assert "rank" in ax.get_xlabel() and ax.get_ylabel().startswith("ln ")
        points, line = ax.get_lines()
        assert len(points.get_xdata()) > 500 and len(line.get_xdata()) == len(points.get_xdata())
    # The drawn line is the paper's fit: ald.regression_fit of the same values.
    slope = np.polyfit(left.get_lines()[1].get_xdata(), left.get_lines()[1].get_ydata(), 1)[0]
    assert slope == pytest.approx(fit.pos.slope[285], rel=1e-6)


def test_fit_plot_of_a_row_without_negative_weights():
    fig = fit_plot(np.linspace(0.01, 1.0, 50), "all positive")
    assert "no fit" in fig.axes[1].texts[0].get_text()
    assert fig.axes[1].get_title() == "Class: all positive, R²: n/a"


def test_weight_figures_are_labelled(classifier: Classifier, fit: ALDFit):
    hist = r2_histogram(fit).axes[0]
    assert "R²" in hist.get_xlabel() and hist.get_ylabel() == "number of classes"
    scatter_fig = slope_intercept(fit, classifier.class_names)
    scatter = scatter_fig.axes[0]
    assert "slope" in scatter.get_xlabel() and "intercept" in scatter.get_ylabel()
    labels = {text.get_text() for text in scatter.texts}
    assert len(labels) == 6 and labels <= set(classifier.class_names)
    legend = {t.get_text() for t in scatter_fig.legends[0].get_texts()}
    assert legend == {"positive weights", "negative weights"}


def chain_panels(explanation: Explanation, figure: Image.Image) -> dict[tuple[int, int], np.ndarray]:
    """The chain figure's cells (row, column) → pixels, where the figure's grid puts a panel."""
    grid = figures._ChainGrid.of(explanation)
    assert figure.size == grid.size
    side = explanation.image.size
    cells = {}
    for row in range(3):
        for column in range(grid.columns):
            left, top = grid.box(row, column, side)
            cells[row, column] = np.asarray(figure)[top : top + side[1], left : left + side[0]]
    return cells


def test_chain_figure_shows_each_chain_in_its_row(explanation: Explanation):
    figure = chain_figure(explanation)
    cells = chain_panels(explanation, figure)
    top = [explanation.nodes[0], *(explanation.node(n.path) for n in explanation.tree.chain("+"))]
    bottom = [explanation.node(n.path) for n in explanation.tree.chain("-")]
    for row, chain in ((0, top), (2, bottom)):
        for column, node in enumerate(chain):
            expected = np.asarray(overlay(explanation.image, node.shown()), dtype=np.int16)
            assert np.abs(cells[row, column] - expected).max() <= 1, (row, node.path)
    # Titles in the chain's colour above the panels: blue over the + chain, vermillion over the − chain.
    pixels = np.asarray(figure, dtype=np.int16)
    panel_top = figures._ChainGrid.of(explanation).box(0, 0, explanation.image.size)[1]
    blue = np.abs(pixels - np.array([0, 114, 178])).sum(axis=2) < 60
    vermillion = np.abs(pixels - np.array([213, 94, 0])).sum(axis=2) < 60
    assert blue[:panel_top].sum() > 200 and vermillion[:panel_top].sum() == 0
    assert vermillion[panel_top + 2 * explanation.image.height :].sum() > 200
    assert figure.width > len(top) * explanation.image.width  # plus the colour bar


def test_chain_figure_of_an_unsplit_root(classifier: Classifier, chelsea: Path):
    unsplit = explain(classifier, chelsea, min_size=5000)
    assert unsplit.discriminative is None and unsplit.confusing is None
    figure = chain_figure(unsplit)
    cells = chain_panels(unsplit, figure)
    root = np.asarray(overlay(unsplit.image, unsplit.nodes[0].shown()), dtype=np.int16)
    assert np.abs(cells[0, 0] - root).max() <= 1 and (cells[2, 0] == 255).all()
    assert figure.width > 2 * unsplit.image.width  # wide enough for the heading, not one panel wide
    assert "root" in explanations_page([unsplit])


# ---------------------------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["batch_page", "weights_html"])
def test_pages_reach_nothing_outside_themselves(which: str, request: pytest.FixtureRequest):
    page = request.getfixturevalue(which)
    elements = Elements(page)
    for value in elements.attribute("src"):
        assert value.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")), value[:60]
    ids = set(elements.attribute("id"))
    for value in elements.attribute("href"):
        assert value.startswith("#") and value[1:] in ids, value
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import|url\(", page, re.IGNORECASE)
    assert not {tag for tag, _ in elements.tags} & {"link", "iframe", "object", "embed", "base"}
    assert all(not attrs.get("src") for tag, attrs in elements.tags if tag == "script")


def test_hostile_names_are_text_in_the_explanations_page(batch_page: str):
    assert (
        HOSTILE not in batch_page
        and "<script>alert(3)" not in batch_page
        and "<b>model</b>" not in batch_page
    )
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in batch_page
    elements = Elements(batch_page)
    text = "".join(elements.text)
    assert HOSTILE in text and "<script>alert(3)</script>" in text and "<b>model</b>" in text
    assert not [attrs for _, attrs in elements.tags if "onerror" in attrs or "onmouseover" in attrs]
    assert elements.attribute("alt").count(QUOTES) >= 1  # the quotes stayed inside the attribute
    assert all(re.fullmatch(r"[A-Za-z0-9-]+", i) for i in elements.attribute("id"))


def test_hostile_names_are_text_in_the_weights_page(weights_html: str):
    assert HOSTILE not in weights_html and "<i>lite0</i>" not in weights_html
    elements = Elements(weights_html)
    text = "".join(elements.text)
    assert HOSTILE in text and "<i>lite0</i>" in text
    assert not [attrs for _, attrs in elements.tags if "onerror" in attrs]
    assert HOSTILE.lower() in elements.attribute("data-search")


def test_explanations_page_sections(batch_page: str, explanation: Explanation, full_tree: Explanation):
    elements = Elements(batch_page)
    sections = [
        a["id"] for tag, a in elements.tags if tag == "section" and "explanation" in (a.get("class") or "")
    ]
    assert len(sections) == 3 and len(set(sections)) == 3
    index_links = [
        a["href"] for tag, a in elements.tags if tag == "a" and a.get("href", "").startswith("#image-")
    ]
    assert sorted(set(index_links)) == sorted(f"#{s}" for s in sections)
    radios = [a for tag, a in elements.tags if tag == "input" and a.get("name") == "map-kind"]
    assert [r["value"] for r in radios] == ["0", "1"]
    overlays = [a for tag, a in elements.tags if tag == "img" and "ov" in (a.get("class") or "").split()]
    nodes = 2 * len(explanation.nodes) + len(full_tree.nodes)
    # Every node in every kind, plus the two terminal maps of each image in every kind.
    assert len(overlays) == 2 * (nodes + 2 * 3)
    assert {a["data-k"] for a in overlays} == {"0", "1"}
    assert sum(1 for tag, a in elements.tags if tag == "button" and "card" in (a.get("class") or "")) == nodes
    assert "Skipped" in "".join(elements.text) and 'id="lightbox"' in batch_page
    badges = re.findall(r'<span class="path">([^<]*)</span><span class="badge">([^<]*)</span>', batch_page)
    ends = [(e.discriminative.path, e.confusing.path) for e in (explanation, full_tree, explanation)]
    assert badges == [
        pair for d, c in ends for pair in sorted([(d, "most discriminative"), (c, "most confusing")])
    ]


def test_single_explanation_page_has_no_index(explanation: Explanation):
    page = explanations_page([explanation])
    assert 'id="index"' not in page and 'id="skipped"' not in page
    assert page.count('class="explanation"') == 1 and explanation.target.name in page


def test_weights_page_contents(weights_html: str, fit: ALDFit, classifier: Classifier):
    elements = Elements(weights_html)
    rows = [a for tag, a in elements.tags if tag == "tr" and "data-index" in a]
    assert [int(a["data-index"]) for a in rows] == list(range(fit.n_classes))
    assert {"class-5", "class-285", "class-filter", "class-table"} <= set(elements.attribute("id"))
    text = " ".join(elements.text)
    assert "Beyond the paper" in text and "not in the paper" in text
    assert "Class: Egyptian cat, R²" not in text  # figure titles live in the PNGs, not as page text
    assert f"{fit.marginal_mean_pos:.4g}" in text
    assert "#285 Egyptian cat" in text
    assert weights_html.count('class="badge">most discriminative<') == 2


def test_default_classes_span_the_r2_ranking(fit: ALDFit):
    picked = default_classes(fit)
    assert len(picked) == 12 and picked == sorted(set(picked))
    assert int(np.nanargmin(fit.pos.r2)) in picked and int(np.nanargmax(fit.pos.r2)) in picked


def test_figures_take_dollar_signs_in_names_as_text(
    explanation: Explanation, classifier: Classifier, tmp_path: Path
):
    """A file or class name with "$" must not reach matplotlib's math parser (it would abort a batch)."""
    hostile = dataclasses.replace(explanation, source=r"a$\frac$b.jpg", model_name=r"net$_x")
    save_explanation(hostile, tmp_path)
    save_figure(fit_plot(classifier.head.weight[0], r"class$\frac$"), tmp_path / "fit.png")
    assert (tmp_path / CHAIN_FILE).stat().st_size > 0 and (tmp_path / "fit.png").stat().st_size > 0


# ---------------------------------------------------------------------------------------------------------
# Reruns into the same folder
# ---------------------------------------------------------------------------------------------------------
def test_an_atlas_rerun_leaves_no_page_of_an_earlier_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    synthetic_scan.write(tmp_path / "six", 120, classes=6)
    synthetic_scan.write(tmp_path / "four", 80, classes=4)
    out = tmp_path / "atlas"
    assert main(["atlas", str(tmp_path / "six"), "--out", str(out), "--html"]) == 0
    assert {p.name for p in out.iterdir()} == {f"class-{k}.html" for k in range(6)} | {
        "index.html",
        "atlas.json",
    }
    (out / "class-notes.html").write_text("<p>the user's own page</p>")
    assert main(["atlas", str(tmp_path / "four"), "--out", str(out), "--html"]) == 0
    pages = {f"class-{k}.html" for k in range(4)} | {"index.html", "atlas.json", "class-notes.html"}
    assert {p.name for p in out.iterdir()} == pages  # classes 4 and 5 are gone from the data: their pages too
    capsys.readouterr()
    assert main(["atlas", str(tmp_path / "four"), "--out", str(out)]) == 0  # no --html: no pages at all
    assert {p.name for p in out.iterdir()} == {"atlas.json", "class-notes.html"}
    assert "removed what an earlier run wrote" in capsys.readouterr().out


def test_the_atlas_names_a_node_in_words_not_in_dashes():
    from types import SimpleNamespace

    from fclens.report.atlas import node_in_words

    tree = SimpleNamespace(
        nodes=[SimpleNamespace(path="------", size=13), SimpleNamespace(path="+", size=40)]
    )
    assert node_in_words("------", tree) == "6 splits down the negative chain (− − − − − −), 13 neurons"
    assert node_in_words("+", tree) == "1 split down the positive chain (+), 40 neurons"
    assert node_in_words(None, None) == "none (tree never split)"


def test_explain_to_folder_takes_plain_strings_as_the_readme_shows(classifier, chelsea: Path, tmp_path: Path):
    from fclens.options import EXPLAIN_DEFAULTS
    from fclens.report import explain_to_folder

    out = str(tmp_path / "out")
    done = explain_to_folder(classifier, [str(chelsea)], out, options=EXPLAIN_DEFAULTS.but(scores="none"))
    assert [row["status"] for row in done.rows] == ["ok"] and done.summary.exists()
