"""fclens in Jupyter: each result's HTML repr and figure, on real results, and the quickstart notebook run
top to bottom on a real kernel."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import fclens
from fclens.report.notebook import LIMIT, ROWS, SCOPE
from fclens.scanning import LocalEngine
from fclens.scanning.features import Features

NOTEBOOK = Path(__file__).parents[1] / "examples" / "quickstart.ipynb"
HOSTILE = "<img src=x onerror=alert(1)>"
QUOTED = '" onmouseover="alert(2)" &amp;'


class Tags(HTMLParser):
    """Every start tag of a repr with its attributes, and the CSS of its <style> elements."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.css = ""
        self._in_style = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.css += data

    def sources(self) -> list[str]:
        return [str(attrs.get("src")) for tag, attrs in self.tags if tag == "img"]


def check_self_contained(html: str) -> Tags:
    """A repr that Jupyter can show anywhere: one scoped div, no script, no request, small."""
    assert len(html) < LIMIT, f"{len(html)} characters"
    tags = Tags(html)
    assert tags.tags[0] == ("div", {"class": SCOPE})
    names = {tag for tag, _ in tags.tags}
    assert not names & {"script", "link", "iframe", "object", "embed", "base"}
    assert all(
        source.startswith(("data:image/jpeg;base64,", "data:image/png;base64,")) for source in tags.sources()
    )
    assert not any(key.startswith("on") for _, attrs in tags.tags for key in attrs)
    assert "url(" not in tags.css and "@import" not in tags.css
    # Every rule stays inside the repr's div: the notebook around it keeps its own look.
    selectors = [s.strip() for rule in re.findall(r"([^{}]+)\{", tags.css) for s in rule.split(",")]
    assert selectors and all(s == f".{SCOPE}" or s.startswith(f".{SCOPE} ") for s in selectors)
    return tags


# ---------------------------------------------------------------------------------------------------------
# Image and weights results (the embedded model, the sample photo)
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def explanation(classifier: fclens.Classifier, chelsea: Path) -> fclens.Explanation:
    return fclens.explain(classifier, chelsea, contrast="runner-up")


@pytest.fixture(scope="module")
def fit(lite0_weight: torch.Tensor) -> fclens.ALDFit:
    return fclens.fit_ald(lite0_weight)


def test_an_explanation_shows_its_tree_with_a_map_per_node_in_the_pages_look(
    explanation: fclens.Explanation,
) -> None:
    html = explanation._repr_html_()
    tags = check_self_contained(html)
    # The photo, one map per node of the chains (drawn as the pages draw a tree), the contrast's map.
    assert len(tags.sources()) == 1 + len(explanation.nodes) + 1
    assert explanation.contrast is not None and f"Why not {explanation.contrast.rival.name}" in html
    cards = [attrs for tag, attrs in tags.tags if tag == "div" and "card" in str(attrs.get("class"))]
    assert len(cards) == len(explanation.nodes)
    assert explanation.target.name in html and "most discriminative" in html and "most confusing" in html
    assert all(p.name in html for p in explanation.top5)
    # The pages' colours and tree, from the pages' one stylesheet.
    assert "--pos: #0072B2" in tags.css and f".{SCOPE} .tree ul" in tags.css


def test_a_hostile_file_or_class_name_is_inert_text(explanation: fclens.Explanation) -> None:
    target = dataclasses.replace(explanation.target, name=HOSTILE)
    hostile = dataclasses.replace(
        explanation, source=QUOTED, target=target, top5=[target, *explanation.top5[1:]], model_name=HOSTILE
    )
    html = hostile._repr_html_()
    tags = check_self_contained(html)
    assert not any(attrs.get("src") == "x" for _, attrs in tags.tags)
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert 'onmouseover="alert(2)"' not in html and "&amp;amp;" in html


def test_an_explanation_plots_any_node_in_any_kind_it_computed(explanation: fclens.Explanation) -> None:
    fig = explanation.plot()
    assert isinstance(fig, Figure)
    assert explanation.discriminative is not None
    assert (
        fig.axes[0]
        .get_title()
        .startswith(f"{explanation.target.name}: node {explanation.discriminative.label} |")
    )
    assert "node -- |" in explanation.plot(node="--").axes[0].get_title()
    assert "node root |" in explanation.plot(node="root").axes[0].get_title()
    with pytest.raises(fclens.FclensError, match=r"no node '\+-'"):
        explanation.plot(node="+-")
    with pytest.raises(fclens.FclensError, match="no 'contribution' maps; it computed activation"):
        explanation.plot(kind="contribution")


@pytest.mark.slow
def test_a_full_tree_draws_the_chains_and_names_every_other_node(
    classifier: fclens.Classifier, coffee: Path
) -> None:
    full = fclens.explain(classifier, coffee, mode="full", min_size=20, scores="none")
    assert len(full.nodes) > 24  # more nodes than a repr draws maps of
    tags = check_self_contained(full._repr_html_())
    chains = 1 + len(full.tree.chain("+")) + len(full.tree.chain("-"))
    assert len(tags.sources()) == 1 + chains
    assert sum(1 for tag, attrs in tags.tags if tag == "div" and "card" in str(attrs.get("class"))) == len(
        full.nodes
    )


def test_a_split_tree_shows_every_node_and_plots_its_splits(lite0_weight: torch.Tensor) -> None:
    tree = fclens.split_tree(lite0_weight[281], class_index=281)
    html = tree._repr_html_()
    check_self_contained(html)
    assert "Split tree of class 281" in html
    assert all(f'<span class="path">{node.label}</span>' in html for node in tree.nodes)
    fig = tree.plot(class_name=HOSTILE)
    assert isinstance(fig, Figure) and HOSTILE in fig.axes[0].get_title()
    assert len(fig.axes[0].lines) == len(tree.chain("+")) + len(tree.chain("-")) - 1  # one per split


def test_an_ald_fit_shows_the_papers_figures_and_ours_and_plots_a_class(
    fit: fclens.ALDFit, lite0_weight: torch.Tensor
) -> None:
    html = fit._repr_html_()
    tags = check_self_contained(html)
    assert "The paper&#39;s regression fit" in html and "Beyond the paper (fclens)" in html
    assert len(tags.sources()) == 1  # the R² histogram
    plot = fit.plot(281, lite0_weight, class_name="tabby")
    assert [ax.get_title()[:13] for ax in plot.axes] == ["Class: tabby,"] * 2
    assert fit.plot(281, lite0_weight[281]).axes[0].get_title().startswith("Class: 281,")
    assert fit.plot().axes[0].get_title().startswith("Goodness of the ALD regression fit")
    with pytest.raises(fclens.FclensError, match=r"pass them, fit.plot\(k, model.head.weight\)"):
        fit.plot(281)
    with pytest.raises(fclens.FclensError, match=r"shape \(3, 1280\); this fit was made from 1000 × 1280"):
        fit.plot(281, lite0_weight[:3])
    with pytest.raises(fclens.FclensError, match="k must be a class index from 0 to 999"):
        fit.plot(1000, lite0_weight)


def test_a_maximum_likelihood_fit_alone_shows_its_figures_and_refuses_the_papers_plot(
    lite0_weight: torch.Tensor,
) -> None:
    mle = fclens.fit_ald(lite0_weight[:50], method="mle")
    html = mle._repr_html_()
    check_self_contained(html)
    assert "Beyond the paper" in html and "The paper&#39;s regression fit" not in html
    with pytest.raises(fclens.FclensError, match="no regression part"):
        mle.plot()


# ---------------------------------------------------------------------------------------------------------
# Data-set results: a real scan of the sample photos, two class names hostile
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def named(classifier: fclens.Classifier) -> fclens.Classifier:
    """The embedded model with Egyptian cat (tabby's top rival) and chocolate sauce (espresso's) renamed."""
    names = list(classifier.class_names)
    names[285], names[960] = HOSTILE, QUOTED
    return fclens.load_model(classifier.module, class_names=names, preprocessing=classifier.preprocessing)


def _scan(model: fclens.Classifier, folder: Path, out: Path) -> fclens.Scan:
    engine = LocalEngine(workers=0)
    return fclens.scan(model, folder, out, features=True, batch_size=8, engine=engine, progress=False)


@pytest.fixture(scope="module")
def photo_scan(named: fclens.Classifier, tmp_path_factory: pytest.TempPathFactory) -> fclens.Scan:
    root = tmp_path_factory.mktemp("notebook")
    return _scan(named, fclens.sample_folder(root / "photos", count=24), root / "scan")


@pytest.fixture(scope="module")
def results(
    photo_scan: fclens.Scan, named: fclens.Classifier, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Every data-set result a notebook shows, made from the scan as a user makes them."""
    root = tmp_path_factory.mktemp("notebook-eval")
    held = _scan(named, fclens.sample_folder(root / "photos", count=8, seed=1), root / "scan")
    atlas = fclens.atlas(photo_scan, causal=True)
    features = photo_scan.read_features()
    select, held_out = features.split(seed=0)
    edited = fclens.pair_edit(features, 281, 285, 8, rows=select)
    return {
        "atlas": atlas,
        "causal": atlas.causal,
        "evaluation": fclens.evaluate(features, edited, rows=held_out, reference=photo_scan.layer),
        "rebalance": fclens.rebalance(photo_scan, held, methods=["ce", "logit-adjust"]),
        "prune": fclens.prune_curve(
            photo_scan, methods=["tree", "magnitude", "random"], sparsities=[0.5, 0.9]
        ),
    }


@pytest.mark.slow
@pytest.mark.parametrize("which", ["atlas", "causal", "evaluation", "rebalance", "prune"])
def test_every_data_set_result_shows_itself_small_self_contained_and_escaped(
    results: dict[str, Any], which: str
) -> None:
    html = results[which]._repr_html_()
    tags = check_self_contained(html)
    assert not any(attrs.get("src") == "x" for _, attrs in tags.tags)
    assert 'onmouseover="alert(2)"' not in html
    if which in ("atlas", "causal"):  # they name the rival classes
        assert "&lt;img src=x onerror=alert(1)&gt;" in html


@pytest.mark.slow
def test_a_long_table_shows_its_first_rows_and_says_how_many_more(results: dict[str, Any]) -> None:
    atlas = results["atlas"]
    assert len(atlas.pairs) > ROWS
    html = atlas._repr_html_()
    pairs = html.split("Confusion pairs, most confusing first")[1].split("</table>")[0]
    assert pairs.count("<tr>") == 1 + ROWS + 1  # the header, the first rows, the "more" row
    assert f"… {len(atlas.pairs) - ROWS} more" in pairs
    first = atlas.pairs[0]
    tested = atlas.causal.pair(first.a, first.b)
    errors = f"{tested.before.errors_kj} → {tested.trial('tree', 8).equalise.errors_kj}"
    assert errors in pairs.split("</tr>")[1]  # the top pair's held-out errors before → after the edit


@pytest.mark.slow
def test_every_data_set_figure_is_a_matplotlib_figure(
    results: dict[str, Any], photo_scan: fclens.Scan
) -> None:
    causal = results["causal"].plot()
    assert [len(ax.lines) for ax in causal.axes] == [4, 5]  # a line per rule; the zero line on the right
    evaluation = results["evaluation"].plot(photo_scan.class_names)
    labels = [label.get_text() for label in evaluation.axes[0].get_yticklabels()]
    assert labels and all(label.startswith(("tabby (", "espresso (")) for label in labels)
    for which in ("rebalance", "prune"):
        fig = results[which].plot()
        assert isinstance(fig, Figure) and fig.axes


def test_an_evaluation_without_labelled_images_has_no_per_class_figure() -> None:
    features = Features.of(np.eye(4, dtype=np.float32), layer=(np.eye(3, 4), None))
    evaluation = fclens.evaluate(features, features.layer)
    check_self_contained(evaluation._repr_html_())
    with pytest.raises(fclens.FclensError, match="no labelled images"):
        evaluation.plot()


# ---------------------------------------------------------------------------------------------------------
# The quickstart notebook
# ---------------------------------------------------------------------------------------------------------
def test_the_quickstart_is_committed_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)


@pytest.mark.slow
def test_the_quickstart_runs_top_to_bottom_and_shows_each_result(tmp_path: Path) -> None:
    """On a real kernel, in a fresh directory; a cell tagged "repr" must show fclens's HTML, one tagged
    "figure" a picture."""
    from nbclient import NotebookClient

    notebook = nbformat.read(shutil.copy(NOTEBOOK, tmp_path), as_version=4)
    source = str(Path(fclens.__file__).parents[1])  # the kernel imports the fclens under test
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute(env=env)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.source
        shown = [
            o.get("data", {}) for o in cell.outputs if o.output_type in ("execute_result", "display_data")
        ]
        tags = cell.metadata.get("tags", [])
        if "repr" in tags:
            assert shown and all(f'<div class="{SCOPE}">' in data.get("text/html", "") for data in shown), (
                cell.source
            )
        if "figure" in tags:
            assert [data for data in shown if "image/png" in data], cell.source
    assert (tmp_path / "photo-scan" / "_manifest.json").is_file()  # it worked where it was run


def test_the_text_beside_each_repr_is_one_short_line(tmp_path: Path) -> None:
    """Jupyter saves a result's plain ``repr`` beside its HTML: one line that says what it is, never the
    1,000-element arrays a dataclass would print."""
    import feature_scan

    means = feature_scan.class_means(50, 64, spread=0.3, seed=3)
    counts = np.full(50, 20)
    feature_scan.write(
        tmp_path / "scan", means, counts, feature_scan.bayes_layer(means, counts / counts.sum())
    )
    scan = fclens.read_scan(tmp_path / "scan")
    results = [
        scan,
        scan.read_features(),
        fclens.evaluate(scan, scan.layer),
        fclens.prune_curve(scan, sparsities=[0.5], progress=False),
        fclens.causal_test(scan, ms=(2,), top=3),
        fclens.rebalance(scan, scan, methods=["tau-norm"], progress=False),
        fclens.fit_ald(scan.layer.weight),
        fclens.split_tree(scan.layer.weight[0], class_index=0),
    ]
    for result in results:
        text = repr(result)
        assert "\n" not in text and len(text) < 300 and text.startswith(type(result).__name__ + "("), text
