"""fclens atlas --causal and --write (issue 17): the causal test of the atlas's pairs in its JSON and pages,
and the edited model saved and read back.

Scans of a real small model: the striped-image net of tests/test_prune.py (scanned as a module, so it
cannot be written), and the embedded EfficientNet-Lite0 on the sample photos of tests/test_edits.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from markupsafe import escape

import fclens
from atlas_json import read_json, unchanged
from browsing import HOSTILE, Visit
from fclens.cli import main
from fclens.edits.causal import MS, TOP_PAIRS
from fclens.edits.pair import RULES
from fclens.report.atlas import CAUSAL_MS, class_page_name
from fclens.scanning import LocalEngine
from striped import CLASSES, Pairs, striped_images

NAMES = [HOSTILE, 'green "rows" & co', "blue rows", "red columns", "green columns", "blue columns"]


@pytest.fixture(scope="module")
def striped(trained: fclens.Classifier, tmp_path_factory: pytest.TempPathFactory) -> fclens.Scan:
    """300 labelled images, a tenth mislabelled (so that pairs have errors), with features; class 0 is
    named like an attack and class 1 with quotes, so that every page must escape them."""
    named = fclens.load_model(trained.module, class_names=NAMES, preprocessing=trained.preprocessing)
    images, labels = striped_images(300, seed=1)
    noisy = [(k + 1) % CLASSES if i % 10 == 0 else k for i, k in enumerate(labels.tolist())]
    out = tmp_path_factory.mktemp("causal") / "scan"
    return fclens.scan(
        named, Pairs(images, noisy), out, features=True, engine=LocalEngine(workers=0), progress=False
    )


@pytest.fixture(scope="module")
def atlas_out(striped: fclens.Scan, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("causal") / "atlas"
    assert main(["atlas", str(striped.directory), "--out", str(out), "--causal", "--html"]) == 0
    return out


def test_the_json_holds_the_causal_test_of_the_top_pairs(
    striped: fclens.Scan, atlas_out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = read_json(atlas_out)
    tested = [p for p in data["pairs"] if p["causal"] is not None]
    assert tested == data["pairs"][:TOP_PAIRS] and len(data["pairs"]) > TOP_PAIRS  # the rest: null
    for pair in tested:
        causal = pair["causal"]
        assert (causal["target"], causal["rival"]) == (pair["a"], pair["b"])
        assert [(t["rule"], t["m"]) for t in causal["trials"]] == [(r, m) for r in RULES for m in MS]
        assert causal["sentence"].startswith(f"{pair['a_name']} → {pair['b_name']}: equalising")
    made = data["causal"]
    assert made["n_select"] + made["n_held_out"] == 300 and made["seed"] == 0 and made["written"] is None
    assert set(made["summary"]) == set(RULES) and "pairs" not in made
    # The CLI tests what the API tests: the same held-out figures and neurons for the same pair.
    first = tested[0]
    direct = fclens.causal_test(striped, pairs=[(first["a"], first["b"])]).pairs[0].to_dict()
    assert first["causal"]["trials"] == direct["trials"] and first["causal"]["before"] == direct["before"]
    # Without --causal, the JSON is the atlas's as before.
    assert main(["atlas", str(striped.directory), "--out", str(atlas_out / "plain"), "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert "causal" not in plain and all("causal" not in p for p in plain["pairs"])


def test_the_cli_prints_the_summary_over_the_pairs(striped: fclens.Scan, tmp_path: Path, capsys) -> None:
    assert main(["atlas", str(striped.directory), "--out", str(tmp_path), "--causal"]) == 0
    printed = capsys.readouterr().out
    assert f"Causal test of {TOP_PAIRS} pairs" in printed and "held-out" in printed
    for rule in RULES:
        assert f"  {rule:8} m=8 " in printed
    assert not (tmp_path / "index.html").exists()
    # Another seed: another split and another random control, the same pairs.
    assert (
        main(["atlas", str(striped.directory), "--out", str(tmp_path), "--causal-seed", "3", "--json"]) == 0
    )
    again = json.loads(capsys.readouterr().out)
    assert again["causal"]["seed"] == 3 and again["pairs"][0]["causal"]["target"] == again["pairs"][0]["a"]


def test_a_class_page_shows_each_tested_rival_collapsed_with_its_chart_sentence_and_trimmed_table(
    atlas_out: Path,
) -> None:
    data = read_json(atlas_out)
    top = data["pairs"][0]["causal"]
    page = (atlas_out / class_page_name(top["target"])).read_text("utf-8")
    section = page[page.index(f'<details class="causal-pair" id="causal-{top["rival"]}">') :]
    section = section[: section.index("</details>")]
    assert str(escape(top["sentence"])) in section
    assert section.count('<svg class="chart"') == 2 and section.count("<polyline") == 2 * len(RULES)
    # A row is left out exactly when neither edit changed an error or an accuracy; the page names it.
    shown = [m for m in MS if m in CAUSAL_MS]
    quiet = [
        (t["rule"], t["m"])
        for t in top["trials"]
        if t["m"] in shown
        and (t["rule"], t["m"]) != ("tree", 8)
        and unchanged(t["equalise"], top["before"])
        and unchanged(t["partial"], top["before"])
    ]
    table = section[: section.index("</table>")]
    assert table.count("<tr") == 1 + 1 + len(RULES) * len(shown) - len(quiet)  # header, before, the rest
    for rule, m in quiet:
        assert f'<tr><td>{rule}</td><td class="num">{m}</td>' not in table
    if quiet:
        assert "Left out, as neither edit changed an error or an accuracy:" in section
    assert table.count('class="headline"') == 1 and table.count('class="before"') == 1
    tree8 = next(t for t in top["trials"] if (t["rule"], t["m"]) == ("tree", 8))
    headline = table[table.index('class="headline"') :].split("</tr>")[0]
    assert f'<td class="num">{tree8["equalise"]["errors_kj"]}</td>' in headline
    # Every figure of the test says it is counted on the held-out half.
    assert "held-out half" in section
    # Every page escapes the hostile and the quoted names; the index summarises the rules at m = 8.
    for path in atlas_out.glob("*.html"):
        text = path.read_text("utf-8")
        assert "<img src=x" not in text and 'green "rows"' not in text
    index = (atlas_out / "index.html").read_text("utf-8")
    summary = index[index.index('<section id="causal"') :]
    assert "m = 8" in summary and all(f"<tr><td>{rule}</td>" in summary for rule in RULES)
    assert f'href="{class_page_name(top["target"])}#causal-{top["rival"]}"' in index


def test_a_tested_rival_with_nothing_to_show_is_one_line_not_a_table(atlas_out: Path) -> None:
    """Every tested pair here has something to show; the sample photos' pages have both kinds
    (test_browser_pages.py)."""
    data = read_json(atlas_out)
    for pair in data["pairs"]:
        test = pair["causal"]
        if test is None:
            continue
        page = (atlas_out / class_page_name(test["target"])).read_text("utf-8")
        quiet = all(
            unchanged(t["equalise"], test["before"]) and unchanged(t["partial"], test["before"])
            for t in test["trials"]
        )
        anchor = f'id="causal-{test["rival"]}"'
        assert page.count(anchor) == 1  # the rivals table's link always lands somewhere
        assert (f"<li {anchor}>" in page) == quiet
        assert (f'<details class="causal-pair" {anchor}>' in page) != quiet


@pytest.mark.browser
def test_the_causal_pages_fit_1280_px_and_run_nothing(browser: Any, atlas_out: Path) -> None:
    top = read_json(atlas_out)["pairs"][0]["causal"]
    for name in ("index.html", class_page_name(top["target"])):
        visit = Visit(browser, atlas_out / name, width=1280)
        try:
            visit.page.evaluate(
                "() => document.querySelectorAll('details').forEach((d) => { d.open = true; })"
            )
            assert visit.overflow() == 0
            assert visit.page.locator("table.causal, table.causal-summary").first.is_visible()
            assert visit.outside == [] and visit.errors == [] and visit.dialogs == []
            visit.screenshot(f"atlas-causal-{name.removesuffix('.html')}.png", full_page=True)
        finally:
            visit.close()


@pytest.mark.slow
def test_a_written_pair_edit_loads_back_and_predicts_what_the_edited_layer_predicts(
    crop_scan: fclens.Scan,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from fclens.preprocessing import to_batch

    out = tmp_path / "atlas"
    args = ["atlas", str(crop_scan.directory), "--out", str(out), "--json"]
    assert main([*args, "--write", "tiger cat,281@8"]) == 0  # 282 by name, 281 (tabby) by index
    written = json.loads(capsys.readouterr().out)["causal"]["written"]
    path = out / "pair-282-281-8.safetensors"
    assert written["path"] == str(path) and path.is_file()
    expected = fclens.pair_edit(crop_scan, 282, 281, 8, rule="tree", split=True)
    assert written["neurons"] == expected.neurons.tolist()
    model = fclens.load_model(crop_scan.manifest.model["source"], weights=path)
    assert torch.equal(fclens.FinalLayer.of(model).weight, expected.weight)
    assert torch.equal(fclens.FinalLayer.of(model).bias, expected.bias)
    features = crop_scan.read_features()
    paths = dict(zip(*crop_scan.rows(["index", "path"], ok_only=True).to_pydict().values(), strict=True))
    batch, _ = to_batch([Path(paths[i]) for i in features.index], model.preprocessing)
    with torch.inference_mode():
        logits = model(batch)
    assert torch.allclose(logits, expected.logits(features.z), atol=0.05)  # features stored as float16
    top2 = logits.topk(2, dim=1).values
    clear = ((top2[:, 0] - top2[:, 1]) > 0.2).numpy()
    assert clear.any()
    edited_top = expected.logits(features.z).argmax(dim=1).numpy()
    np.testing.assert_array_equal(logits.argmax(dim=1).numpy()[clear], edited_top[clear])

    # a rerun that writes no model removes the one the earlier run wrote, as it does the pages
    assert main(args) == 0 and not path.exists()


@pytest.mark.parametrize(
    ("write", "message"),
    [
        ("0,1", "--write takes K,J@M"),
        ("0@4", "--write takes K,J@M"),
        ("0,1,2@4", "--write takes K,J@M"),
        ("0,1@0", "M >= 1, got '0'"),
        ("0,1@many", "M >= 1, got 'many'"),
        ("0,6@4", "class index 6 is out of range"),
        ("purple,1@4", "class 'purple' matches no class of the scan"),
        ("blue rows,2@4", "names class 2 twice"),
        ("0,1@4", "passed as a module"),  # the striped net was scanned as a module: it cannot be written
    ],
)
def test_bad_write_input_is_exit_2_with_one_line(
    striped: fclens.Scan, tmp_path: Path, capsys: pytest.CaptureFixture[str], write: str, message: str
) -> None:
    assert main(["atlas", str(striped.directory), "--out", str(tmp_path), "--causal", "--write", write]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "atlas.json").exists()


def test_a_scan_without_features_or_labels_is_refused_in_one_line(
    trained: fclens.Classifier,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    images, labels = striped_images(24, seed=2)
    engine = LocalEngine(workers=0)
    bare = fclens.scan(
        trained, Pairs(images, labels.tolist()), tmp_path / "bare", engine=engine, progress=False
    )
    unlabelled = fclens.scan(trained, Pairs(images, labels.tolist()), tmp_path / "unlabelled", labels="none",
                             features=True, engine=engine, progress=False)  # fmt: skip
    for scan, flags, message in (
        (bare, ["--causal"], "rescan it with fclens scan --features"),
        (bare, ["--write", "0,1@4"], "rescan it with fclens scan --features"),
        (unlabelled, ["--causal"], "has none; scan a folder of class-name subfolders"),
    ):
        assert main(["atlas", str(scan.directory), "--out", str(tmp_path / "out"), *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
