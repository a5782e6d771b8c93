"""Does the ALD hold across models? The paper's per-model figures for several models, one row each.

What ``fclens survey`` prints, as a library call::

    from fclens.surveying import survey
    rows = survey(["efficientnet_lite0", "timm:resnet50"], weights_dir="ckpts/")
    [(row.model, row.joint_pos_r2, row.ald_preferred) for row in rows if row.status == "ok"]

A model that cannot be loaded or fitted never stops the survey: its row is ``failed`` and says why.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from fclens.ald import fit_ald
from fclens.errors import FclensError
from fclens.models import HubError, load_model
from fclens.runs import progress_bar

__all__ = ["SURVEY_COLUMNS", "WEIGHT_SUFFIXES", "SurveyRow", "survey", "weight_file"]

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
"""The weight files a survey looks for in ``weights_dir``, in this order, named after each model."""


@dataclass(frozen=True)
class SurveyRow:
    """One model's figures, or why it has none (``status`` "failed", ``error`` set).

    ``classes`` × ``inputs``: its final layer. Then the paper's regression fit (PAPER.md §2): the
    marginal means, the joint fit of all positive (negative) weights, the median per-class R²; and beyond
    the paper, ``ald_preferred``: how many classes the ALD describes best by AIC (against a Gaussian and
    a Laplace). A figure that could not be computed is NaN.
    """

    model: str
    status: Literal["ok", "failed"]
    classes: int | None = None
    inputs: int | None = None
    marginal_mean_pos: float = math.nan
    marginal_mean_neg: float = math.nan
    joint_pos_mean: float = math.nan
    joint_pos_r2: float = math.nan
    joint_neg_mean: float = math.nan
    joint_neg_r2: float = math.nan
    median_r2_pos: float = math.nan
    median_r2_neg: float = math.nan
    ald_preferred: int | None = None
    error: FclensError | None = None

    @property
    def reason(self) -> str:
        """Why the model failed ("" when it did not)."""
        return "" if self.error is None else str(self.error)

    def to_dict(self) -> dict[str, Any]:
        """The row as :data:`SURVEY_COLUMNS` → plain JSON values (NaN → None)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "error"}
        values = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()}
        return {**values, "reason": self.reason}


SURVEY_COLUMNS = (*(f.name for f in fields(SurveyRow) if f.name != "error"), "reason")
"""The columns of a survey's table, in order."""


def survey(
    models: Sequence[str],
    weights_dir: str | os.PathLike[str] | None = None,
    *,
    progress: bool = True,
) -> list[SurveyRow]:
    """The ALD fit of each of ``models`` (sources as :func:`fclens.load_model` takes them), one row each.

    ``weights_dir``: a folder of local weight files named after the models (``resnet50.safetensors`` for
    ``timm:resnet50``; see :data:`WEIGHT_SUFFIXES`), for models whose weights cannot be fetched.
    ``progress``: a bar on stderr when it is a terminal.
    """
    sources = [source.strip() for source in models if source.strip()]
    if not sources:
        raise FclensError(
            "no model given; pass sources such as ['timm:resnet50', 'efficientnet_lite0']",
            cli="--models is empty; give comma-separated models, e.g. timm:resnet50,efficientnet_lite0",
        )
    folder = None if weights_dir is None else Path(weights_dir)
    if folder is not None and not folder.is_dir():
        raise FclensError(
            f"weights_dir={str(folder)!r} is not a folder", cli=f"--weights-dir {folder}: no such folder"
        )
    rows = []
    with progress_bar(len(sources), enabled=progress, desc="survey", unit="model") as bar:
        try:
            for source in sources:
                rows.append(_row(source, folder))
                bar.update()
        except KeyboardInterrupt:
            raise KeyboardInterrupt(
                f"interrupted after {len(rows)} of {len(sources)} models; nothing is kept, rerun to survey them"
            ) from None
    return rows


def weight_file(source: str, weights_dir: Path | None) -> Path | None:
    """The file in ``weights_dir`` named after ``source`` (``timm:resnet50`` → ``resnet50.safetensors``…)."""
    if weights_dir is None:
        return None
    stem = source.split(":", 1)[-1]
    return next(
        (weights_dir / f"{stem}{s}" for s in WEIGHT_SUFFIXES if (weights_dir / f"{stem}{s}").is_file()), None
    )


def _row(source: str, weights_dir: Path | None) -> SurveyRow:
    """One model's figures, or its failure."""
    try:
        model = load_model(source, weights=weight_file(source, weights_dir))
        fit = fit_ald(model.head.weight.cpu())
    except HubError as error:
        return SurveyRow(source, "failed", error=_no_weights(error, source, weights_dir))
    except FclensError as error:
        return SurveyRow(source, "failed", error=error)
    except Exception as error:  # a broken third-party model must not end the survey
        return SurveyRow(source, "failed", error=FclensError(f"{type(error).__name__}: {error}"))
    assert fit.pos is not None and fit.neg is not None and fit.mle is not None
    assert fit.joint_pos is not None and fit.joint_neg is not None
    return SurveyRow(
        source,
        "ok",
        classes=model.num_classes,
        inputs=model.head.num_features,
        marginal_mean_pos=_number(fit.marginal_mean_pos),
        marginal_mean_neg=_number(fit.marginal_mean_neg),
        joint_pos_mean=fit.joint_pos.mean,
        joint_pos_r2=fit.joint_pos.r2,
        joint_neg_mean=fit.joint_neg.mean,
        joint_neg_r2=fit.joint_neg.r2,
        median_r2_pos=_number(fit.pos.r2_quantiles().p50),
        median_r2_neg=_number(fit.neg.r2_quantiles().p50),
        ald_preferred=fit.mle.best_counts()["ald"],
    )


def _no_weights(error: HubError, source: str, weights_dir: Path | None) -> FclensError:
    """A survey's fix for weights that cannot be fetched: a file in ``weights_dir``, not ``weights=``."""
    wanted = f"{source.split(':', 1)[-1]}.safetensors (or .pth)"
    if weights_dir is not None:
        return FclensError(f"{error.problem}, and {weights_dir} holds no {wanted}; put it there")
    return FclensError(
        f"{error.problem}; pass weights_dir= a folder holding {wanted}",
        cli=f"{error.problem}; pass --weights-dir DIR, a folder holding {wanted}",
    )


def _number(value: float | None) -> float:
    return math.nan if value is None else value
