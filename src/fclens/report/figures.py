"""Pictures of fclens results: heatmap overlays (PIL, fast) and matplotlib figures (Agg, no pyplot).

Overlays are made with numpy and a colour-map lookup table, not a matplotlib figure each: an explanation
has up to ~20 nodes and a batch hundreds of images. The figures use :class:`matplotlib.figure.Figure`
directly, so nothing leaks into pyplot's global state, and colour-blind-safe colours throughout:
viridis for heatmaps and the Okabe–Ito blue / vermillion pair for the positive / negative parts.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
import torch
from matplotlib import font_manager, patheffects
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from fclens.ald import ALDFit, regression_fit
from fclens.io import atomic_write_bytes
from fclens.report._common import as_numpy, fmt, require_regression
from fclens.scores import upsample_normalised

if TYPE_CHECKING:
    from fclens.explaining import Explanation, NodeExplanation

__all__ = [
    "HEATMAP_CMAP",
    "NEG_COLOUR",
    "POS_COLOUR",
    "chain_figure",
    "colour_scale_css",
    "figure_png",
    "fit_plot",
    "image_bytes",
    "node_caption",
    "overlay",
    "overlays",
    "r2_histogram",
    "save_figure",
    "slope_intercept",
]

HEATMAP_CMAP = "viridis"
"""Perceptually uniform and readable with any colour-vision deficiency; also legible in greyscale."""
POS_COLOUR = "#0072B2"
"""Okabe–Ito blue: positive weights, the discriminative chain."""
NEG_COLOUR = "#D55E00"
"""Okabe–Ito vermillion: negative weights, the confusing chain."""

OVERLAY_ALPHA = 0.5
"""Weight of the heatmap colour where the map is hottest (half that where it is coldest): at most one
half, so the photo's edges and texture stay readable everywhere."""
DESATURATION = 0.35
"""Share of grey mixed into the photo, so that the heatmap's colours stand out against it."""
DPI = 110
PANEL = 224
"""Longest side in pixels of a panel of the chain figure: an ImageNet input at its own resolution."""
_MARGIN, _GAP, _TITLE_LINE, _HEADING_LINE = 8, 10, 17, 19
_BAR = (18, 44, 24)
"""Colour bar of the chain figure: bar width, tick-label width, rotated-label width (pixels)."""
_HALO = [patheffects.withStroke(linewidth=2.5, foreground="white")]
"""A white outline that keeps small labels readable on top of dense scatter points."""


# ---------------------------------------------------------------------------------------------------------
# Overlays
# ---------------------------------------------------------------------------------------------------------
def overlay(
    image: Image.Image,
    heatmap: Any,
    caption: str | None = None,
    *,
    alpha: float = OVERLAY_ALPHA,
    cmap: str = HEATMAP_CMAP,
) -> Image.Image:
    """The photo, slightly desaturated, with ``heatmap`` blended over it in a colour map.

    ``heatmap``: (h, w) tensor or array at any resolution, upsampled (bicubic) to the photo and min-max
    normalised exactly as the node's score masks the input (:func:`fclens.scores.upsample_normalised`),
    so only its shape matters; a constant map shows as the colour map's low end.
    ``caption``: text drawn in a white strip *below* the photo, never over it, wrapped at " | " to fit.
    Returns an RGB image as wide as the photo.
    """
    if np.ndim(heatmap) != 2:
        raise ValueError(f"a heatmap must be 2-D (h, w), got shape {tuple(np.shape(heatmap))}")
    photo = _desaturated(image)
    result = _tinted(photo, _normalised(heatmap, photo.shape[:2]), alpha, cmap)
    return result if caption is None else _with_caption(result, caption)


def overlays(image: Image.Image, heatmaps: Any) -> list[Image.Image]:
    """:func:`overlay` (no caption) of each of ``heatmaps`` (n, h, w) on one photo, upsampled in one call:
    a page draws a dozen maps per image, and one call per map costs ~5× as much on a busy CPU."""
    photo = _desaturated(image)
    return [_tinted(photo, heat) for heat in _normalised(heatmaps, photo.shape[:2])]


def node_caption(node: NodeExplanation, kind: str | None = None) -> str:
    """The text under a node's overlay: "++ | 23 neurons | score 0.873", then the map kind if given."""
    parts = [node.label, f"{node.size} neurons", f"score {fmt(node.score)}"]
    return " | ".join([*parts, kind] if kind else parts)


def _normalised(heatmaps: Any, size: tuple[int, int]) -> np.ndarray:
    """Heatmaps (..., h, w) as float32 (..., H, W) in [0, 1] at ``size``: the very masks the score uses.

    Many maps go through in one call: on a busy CPU, one call per map costs several times as much.
    """
    heat = torch.nan_to_num(torch.as_tensor(as_numpy(heatmaps), dtype=torch.float32))
    return upsample_normalised(heat, size).numpy()


def _desaturated(image: Image.Image) -> np.ndarray:
    """The photo as float32 (H, W, 3), a share of grey mixed in."""
    photo = np.asarray(image.convert("RGB"), dtype=np.float32)
    grey = photo @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return (1 - DESATURATION) * photo + DESATURATION * grey[..., None]


def _tinted(
    photo: np.ndarray, heat: np.ndarray, alpha: float = OVERLAY_ALPHA, cmap: str = HEATMAP_CMAP
) -> Image.Image:
    """A :func:`_desaturated` photo with ``heat`` (H, W) in [0, 1] blended over it."""
    colours = _lookup_table(cmap)[np.clip(np.round(heat * 255), 0, 255).astype(np.intp)]
    # Cold regions get half the colour of hot ones: the map's shape reads, and so does the photo.
    weight = (alpha * (0.5 + 0.5 * heat))[..., None]
    blended = (1 - weight) * photo + weight * colours
    return Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8), "RGB")


def colour_scale_css(cmap: str = HEATMAP_CMAP, stops: int = 9) -> str:
    """The overlays' colour map, low to high, as a CSS ``linear-gradient`` for a page's colour scale."""
    colours = _lookup_table(cmap)[np.linspace(0, 255, stops).round().astype(np.intp)]
    hexes = ["#" + "".join(f"{int(v):02x}" for v in colour) for colour in colours]
    return f"linear-gradient(to right, {', '.join(hexes)})"


@lru_cache(maxsize=8)
def _lookup_table(cmap: str) -> np.ndarray:
    """256 RGB colours of a matplotlib colour map, float32 0–255."""
    return (matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans from matplotlib's own files: present wherever fclens runs, wide Unicode coverage."""
    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


def _with_caption(image: Image.Image, caption: str) -> Image.Image:
    font = _font(max(11, image.width // 20))
    lines = _wrap(caption, font, image.width - 8)
    line_height = int(font.size * 1.35)
    canvas = Image.new("RGB", (image.width, image.height + line_height * len(lines) + 6), "white")
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((4, image.height + 3 + line_height * i), line, fill="black", font=font)
    return canvas


def _wrap(caption: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """``caption`` as lines that fit ``width`` pixels, broken at " | " first, then at spaces."""

    def greedy(words: list[str], separator: str) -> list[str]:
        lines = [words[0]]
        for word in words[1:]:
            candidate = lines[-1] + separator + word
            if font.getlength(candidate) > width:
                lines.append(word)
            else:
                lines[-1] = candidate
        return lines

    lines = greedy(caption.split(" | "), " | ")
    return [piece for line in lines for piece in greedy(line.split(" "), " ")]


# ---------------------------------------------------------------------------------------------------------
# An explanation's chains
# ---------------------------------------------------------------------------------------------------------
def chain_figure(explanation: Explanation, kind: str | None = None) -> Image.Image:
    """The paper's picture of one explanation: discriminative chain, input, confusing chain.

    Top row: root → + → ++ → …; middle: the input as the model sees it; bottom: − → −− → ….
    Every panel is the node's overlay for map ``kind`` (default: the explanation's primary kind),
    titled with its path, size and score; a colour bar gives the scale. Intermediate nodes of a full
    tree are not drawn. Composed with PIL at the photos' own resolution (a matplotlib figure with a
    dozen photos costs more than the explanation itself); returns an RGB image.
    """
    kind = kind or explanation.primary
    top, bottom = _chains(explanation)
    heading = _heading(explanation)
    grid = _ChainGrid.of(explanation)
    canvas = Image.new("RGB", grid.size, "white")
    draw = ImageDraw.Draw(canvas)
    photo = _fit(explanation.image, PANEL)
    base = _desaturated(photo)
    heats = iter(_normalised(torch.stack([node.shown(kind) for node in top + bottom]), base.shape[:2]))
    for row, chain in ((0, top), (2, bottom)):
        for column, node in enumerate(chain):
            colour = NEG_COLOUR if node.path.startswith("-") else POS_COLOUR
            lines = [node.label, f"{node.size} neurons, score {fmt(node.score)}"]
            grid.place(canvas, draw, row, column, _tinted(base, next(heats)), lines, colour)
    name = Path(explanation.source).name or explanation.source
    grid.place(canvas, draw, 1, (grid.columns - 1) / 2, photo, [f"input: {name}"], "black")
    for i, line in enumerate(heading):
        draw.text((grid.width_of_panels / 2, _MARGIN + i * _HEADING_LINE), line, "black", _font(15), "ma")
    _colour_bar(canvas, draw, grid, f"{kind} (min–max per node)")
    return canvas


@dataclass(frozen=True)
class _ChainGrid:
    """Where the chain figure's panels go: three rows of ``columns`` cells, each titled above.

    The cells are centred under a heading ``heading_width`` pixels wide when it is the wider.
    """

    columns: int
    heading_width: int

    @classmethod
    def of(cls, explanation: Explanation) -> _ChainGrid:
        top, bottom = _chains(explanation)
        widest = max(_font(15).getlength(line) for line in _heading(explanation))
        return cls(max(len(top), len(bottom)), round(widest))

    @property
    def cells_width(self) -> int:
        return self.columns * PANEL + (self.columns - 1) * _GAP

    @property
    def width_of_panels(self) -> int:
        return 2 * _MARGIN + max(self.cells_width, self.heading_width)

    @property
    def size(self) -> tuple[int, int]:
        return self.width_of_panels + _GAP + sum(_BAR), self.row_top(3)

    def row_top(self, row: int) -> int:
        return _MARGIN + 2 * _HEADING_LINE + _GAP + row * (2 * _TITLE_LINE + 4 + PANEL + _GAP)

    def box(self, row: int, column: float, size: tuple[int, int]) -> tuple[int, int]:
        """Top-left corner of a picture of ``size`` centred in cell (row, column)."""
        start = (self.width_of_panels - self.cells_width) // 2
        left = start + round(column * (PANEL + _GAP)) + (PANEL - size[0]) // 2
        return left, self.row_top(row) + 2 * _TITLE_LINE + 4 + (PANEL - size[1]) // 2

    def place(
        self,
        canvas: Image.Image,
        draw: ImageDraw.ImageDraw,
        row: int,
        column: float,
        picture: Image.Image,
        title: list[str],
        colour: str,
    ) -> None:
        left, top = self.box(row, column, picture.size)
        canvas.paste(picture, (left, top))
        for i, line in enumerate(reversed(title)):  # the last line sits just above the picture
            draw.text(
                (left + picture.width / 2, top - 4 - (i + 1) * _TITLE_LINE), line, colour, _font(13), "ma"
            )


def _chains(explanation: Explanation) -> tuple[list[NodeExplanation], list[NodeExplanation]]:
    """The chain figure's rows: root and the + chain; the − chain (empty when the root is a leaf)."""
    top = [explanation.nodes[0]] + [explanation.node(n.path) for n in explanation.tree.chain("+")]
    return top, [explanation.node(n.path) for n in explanation.tree.chain("-")]


def _heading(explanation: Explanation) -> list[str]:
    target = explanation.target
    return [
        f"{explanation.model_name}: class {target.name} (p = {target.probability:.3f})",
        "top: most discriminative chain (+), bottom: most confusing chain (−)",
    ]


def _fit(image: Image.Image, side: int) -> Image.Image:
    """``image`` as RGB scaled so that its longer side is ``side`` pixels (unchanged if it already is)."""
    image = image.convert("RGB")
    scale = side / max(image.size)
    if scale == 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


def _colour_bar(canvas: Image.Image, draw: ImageDraw.ImageDraw, grid: _ChainGrid, label: str) -> None:
    """The heatmap colour map from 0 (bottom) to 1 (top) beside the panels, with ticks and ``label``."""
    bar_width, ticks_width, _ = _BAR
    height = round(1.6 * PANEL)
    left = grid.width_of_panels + _GAP
    top = (grid.row_top(1) + grid.row_top(2)) // 2 - height // 2
    levels = _lookup_table(HEATMAP_CMAP)[np.linspace(255, 0, height).round().astype(np.intp)]
    column = np.repeat(levels[:, None, :], bar_width, axis=1)
    canvas.paste(Image.fromarray(column.astype(np.uint8), "RGB"), (left, top))
    draw.rectangle((left, top, left + bar_width - 1, top + height - 1), outline="black")
    font = _font(12)
    for tick in np.linspace(0, 1, 6):
        y = top + round((1 - tick) * (height - 1))
        draw.line((left + bar_width, y, left + bar_width + 3, y), "black")
        draw.text((left + bar_width + 6, y), f"{tick:.1f}", "black", font, "lm")
    text = Image.new("RGB", (height, _BAR[2]), "white")
    ImageDraw.Draw(text).text((height / 2, _BAR[2] / 2), label, "black", _font(13), "mm")
    canvas.paste(text.rotate(90, expand=True), (left + bar_width + ticks_width, top))


# ---------------------------------------------------------------------------------------------------------
# Weight figures (PAPER.md §2)
# ---------------------------------------------------------------------------------------------------------
def fit_plot(weights_row: Any, class_name: str) -> Figure:
    """The author's per-class figure: ln of the sorted weights against rank, with the regression line.

    Left panel: the positive weights; right: the magnitudes of the negative ones. x is the normalised
    rank (i−1)/n of the paper's fit; each panel is titled "Class: NAME, R²: 0.xxx" with its own R².
    Exact zeros are left out, as in :func:`fclens.ald.regression_fit`.
    """
    row = as_numpy(weights_row).reshape(-1)
    row = row[np.isfinite(row)]
    fig = Figure(figsize=(9.0, 3.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, values, part, colour in (
        (axes[0], row[row > 0], "positive weights", POS_COLOUR),
        (axes[1], -row[row < 0], "negative weights (magnitude)", NEG_COLOUR),
    ):
        fit = regression_fit(values)
        ax.set_xlabel("normalised rank (i−1)/n")
        ax.set_ylabel(f"ln {part}")
        ax.set_title(f"Class: {class_name}, R²: {fmt(fit.r2)}", fontsize=10, parse_math=False)
        if not math.isfinite(fit.slope):
            ax.text(0.5, 0.5, f"no fit: {fit.reason}", ha="center", va="center", transform=ax.transAxes)
            continue
        y = np.sort(values)
        x = np.arange(y.size) / y.size
        ax.plot(x, np.log(y), ".", ms=2.5, color=colour, label=f"{part}, n = {y.size}")
        ax.plot(
            x,
            fit.slope * x + fit.intercept,
            "--",
            color="black",
            lw=1.2,
            label=f"fit: {fit.slope:.3g}·x {'+' if fit.intercept >= 0 else '−'} {abs(fit.intercept):.3g}",
        )
        ax.legend(loc="lower right", fontsize=8)
    return fig


def r2_histogram(fit: ALDFit) -> Figure:
    """Histogram over classes of the regression fit's R², positive and negative parts overlaid."""
    require_regression(fit)
    fig = Figure(figsize=(6.0, 4.0), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    values = [(fit.pos.r2, "positive weights", POS_COLOUR), (fit.neg.r2, "negative weights", NEG_COLOUR)]
    finite = np.concatenate([v[np.isfinite(v)] for v, _, _ in values])
    low = float(finite.min()) if finite.size else 0.0
    bins = np.linspace(min(low, 0.99), 1.0, 41)
    for r2, label, colour in values:
        ok = r2[np.isfinite(r2)]
        median = f", median {np.median(ok):.3f}" if ok.size else ""
        ax.hist(ok, bins=bins, histtype="stepfilled", alpha=0.35, color=colour)
        ax.hist(
            ok, bins=bins, histtype="step", lw=1.5, color=colour, label=f"{label} ({ok.size} classes{median})"
        )
    ax.set_xlabel("R² of the paper’s regression fit")
    ax.set_ylabel("number of classes")
    ax.set_title(f"Goodness of the ALD regression fit over {fit.n_classes} classes", fontsize=10)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return fig


def slope_intercept(fit: ALDFit, class_names: Sequence[str]) -> Figure:
    """Slope against intercept of every class's fitted line, positive and negative parts.

    The three classes farthest from the bulk of each part (in standardised units) are named, since a
    class that stands out is the first one a reader wants to look at.
    """
    require_regression(fit)
    fig = Figure(figsize=(6.0, 4.0), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    for part, label, colour, marker in (
        (fit.pos, "positive weights", POS_COLOUR, "o"),
        (fit.neg, "negative weights", NEG_COLOUR, "s"),
    ):
        ok = np.flatnonzero(np.isfinite(part.slope) & np.isfinite(part.intercept))
        ax.scatter(
            part.slope[ok], part.intercept[ok], s=9, alpha=0.6, color=colour, marker=marker, label=label
        )
        for k in _outliers(part.slope[ok], part.intercept[ok], ok):
            ax.annotate(
                class_names[k], (part.slope[k], part.intercept[k]), fontsize=7, color=colour,
                xytext=(4, 4), textcoords="offset points", path_effects=_HALO, parse_math=False,
            )  # fmt: skip
    ax.margins(0.08)  # room for the names of the outermost classes
    ax.set_xlabel("slope a of ln|w| against rank")
    ax.set_ylabel("intercept b")
    ax.set_title(f"Fitted lines of {fit.n_classes} classes", fontsize=10)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return fig


def _outliers(x: np.ndarray, y: np.ndarray, index: np.ndarray, count: int = 3) -> list[int]:
    """The ``count`` entries of ``index`` whose (x, y) lie farthest from the median, in robust z-units."""
    if x.size <= count:
        return []

    def z(v: np.ndarray) -> np.ndarray:
        spread = np.median(np.abs(v - np.median(v))) or 1.0
        return (v - np.median(v)) / spread

    distance = np.hypot(z(x), z(y))
    return [int(index[i]) for i in np.argsort(distance)[::-1][:count]]


# ---------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------
def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (white background, so it reads on any page)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()


def image_bytes(image: Image.Image, format: str = "PNG", quality: int = 88) -> bytes:
    """``image`` encoded as PNG (lossless, for files) or JPEG (``quality``; photos and figures of photos)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format=format, **({"quality": quality} if format == "JPEG" else {}))
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG, atomically."""
    return atomic_write_bytes(path, figure_png(fig))
