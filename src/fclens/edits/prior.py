r"""Imbalanced data (PAPER.md §6): a prior-aware loss, head re-fits on a scan, post-hoc adjustments.

The paper's sentence is "with a known prior on the data distribution, adjust the policy-gradient term
in the loss during training". It gives no formula; this is ours, and what it becomes.

**Cross-entropy as a policy gradient.** Read the classifier as a policy π_θ(k | x) = softmax(f_θ(x))_k
that takes an action k for an input x. The gradient of the cross-entropy over the training data is

    ∇ L_CE = −E_{(x,y) ~ train} [ ∇ log π_θ(y | x) ] = −E_{(x,y) ~ train} [ R · ∇ log π_θ(y | x) ],  R = 1,

REINFORCE's estimator with the labelled action y as the sampled action and a reward of 1 for it: each
example's term appears as often as its class does in the training data, π_train(y). Under a known
target prior π_target (uniform for the balanced error) the same data are p(x | y) π_target(y), and

    E_{target}[ R ∇ log π_θ(y | x) ] = E_{train}[ (π_target(y) / π_train(y)) · R ∇ log π_θ(y | x) ],

so adjusting the policy-gradient term for the prior means replacing the reward R = 1 by the importance
weight ρ(y) = π_target(y) / π_train(y). ``pg-prior`` uses ρ(y)^τ: τ = 1 is the exact importance
weight, τ = 0 plain cross-entropy, values between temper the variance that large weights of rare classes
bring. The loss is Σ_i ρ(y_i)^τ CE_i / Σ_i ρ(y_i)^τ (the self-normalised estimator, as
``F.cross_entropy(weight=...)`` computes it), whose gradient is the importance-weighted CE gradient.
Said plainly: the paper's application, made precise, is inverse-frequency re-weighting of the
cross-entropy — a known method — reached from the policy-gradient reading; the tempering τ and the
self-normalisation are our choices.

**The methods practitioners use for the same problem**, all on the final layer alone:

- ``logit-adjust`` loss (Menon et al., ICLR 2021): CE(f(x) + τ log π_train, y); the returned layer's
  raw logits are then balanced. With a target prior the shift is τ log(π_train / π_target).
- ``balanced-softmax`` (Ren et al., NeurIPS 2020): CE(f(x) + log π_train, y) — the logit-adjusted
  loss at τ = 1, which is what this method is; τ does not apply to it.
  On a re-fit of the final layer alone both are the ``ce`` re-fit with its bias moved by −τ log π_train
  (the shift is absorbed by the bias, which has no weight decay: the minimum of one objective is the
  minimum of the other, moved), i.e. plain CE re-training followed by post-hoc logit adjustment. They
  differ from it only when the backbone is trained too, as in the papers.
- ``crt``, classifier re-training (Kang et al., ICLR 2020): the layer re-initialised and trained with
  class-balanced sampling. Full-batch, class-balanced sampling's expected loss is the CE weighted by
  1 / π_train(y): the importance weight at τ = 1. With weight decay the objective has one minimum, so a
  converged ``crt`` and a converged ``pg-prior`` at τ = 1 find the same layer; only the start differs
  (``crt`` starts from a seeded random layer, the others from the scanned one).
- ``ce``: plain cross-entropy re-training, the control.
- post-hoc, no training (:func:`adjust_layer`): ``logit-adjust`` (Menon et al.): b − τ log π_train;
  ``tau-norm`` (Kang et al.): each class's row scaled by 1 / ‖w_k‖^τ. Kang et al.'s classifier has no
  bias; here the bias is scaled with its row, which keeps their method for a bias of zero.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fclens import deprecation
from fclens.edits import POST_HOC, PRIOR_TAU
from fclens.errors import FclensError
from fclens.layer import FinalLayer, FitReport
from fclens.options import SEED
from fclens.scanning.features import class_counts, feature_batches
from fclens.scanning.reader import Scan, as_scan

__all__ = ["ADJUSTMENTS", "LOSSES", "PRIOR_LOSSES", "PriorLoss", "adjust_layer", "class_prior", "fit_layer"]

PRIOR_LOSSES = ("pg-prior", "logit-adjust", "balanced-softmax")
"""The methods of :class:`PriorLoss`."""
LOSSES = ("ce", *PRIOR_LOSSES, "crt")
"""The objectives of :func:`fit_layer`."""
ADJUSTMENTS = POST_HOC
"""The post-hoc methods of :func:`adjust_layer`."""


def class_prior(prior: Any, classes: int, scan: Scan | None = None) -> np.ndarray:
    """A class prior (C,) float64 summing to 1 from ``"labels"`` (the labelled rows of ``scan``), a scan or
    its directory (its labelled rows), or C positive numbers (normalised).

    A class with no labelled row in a scan counts as one image, so that its log-prior stays finite (a
    class the data never showed is treated as the rarest there is, not as impossible)."""
    if isinstance(prior, str) and prior == "labels":
        if scan is None:
            raise FclensError("prior='labels' needs a scan; give the training scan or C numbers")
        prior = scan
    if isinstance(prior, (Scan, str, os.PathLike)):
        counts = class_counts(as_scan(prior)).astype(np.float64)
        if counts.sum() == 0:
            raise FclensError("the scan has no labelled rows to take the prior from; give C numbers")
        values = np.maximum(counts, 1.0)
    else:
        values = np.asarray(prior, dtype=np.float64).reshape(-1)
        if values.size != classes:
            raise FclensError(f"the prior has {values.size} numbers; the model has {classes} classes")
        bad = np.flatnonzero(~np.isfinite(values) | (values <= 0))
        if bad.size:
            raise FclensError(
                f"the prior must be positive for every class; class {bad[0]} has {values[bad[0]]}"
            )
    if values.size != classes:
        raise FclensError(f"the prior has {values.size} classes; the model has {classes}")
    return values / values.sum()


def _terms(
    method: str, prior: np.ndarray, tau: float, target: np.ndarray | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(per-class weight of each example's CE term, shift added to the logits) of a loss; None: none."""
    if method not in LOSSES:
        raise FclensError(f"unknown loss {method!r}; choose from {', '.join(LOSSES)}")
    if not math.isfinite(tau) or tau < 0:
        raise FclensError(f"tau must be a number ≥ 0, got {tau}")
    ratio = (1.0 / len(prior) if target is None else target) / prior  # π_target / π_train
    log_ratio = np.log(prior) if target is None else np.log(prior / target)  # log π_train / π_target
    weight = {"pg-prior": ratio**tau, "crt": ratio}.get(method)
    shift = {"logit-adjust": tau * log_ratio, "balanced-softmax": log_ratio}.get(method)
    return (
        None if weight is None else torch.from_numpy(weight.astype(np.float32)),
        None if shift is None else torch.from_numpy(shift.astype(np.float32)),
    )


class PriorLoss(nn.Module):
    """A cross-entropy that knows the training prior: ``PriorLoss(prior, "pg-prior")(logits, targets)``.

    ``prior``: the training set's class frequencies π_train (C positive numbers, normalised here).
    ``method``: ``pg-prior`` (CE weighted by (π_target/π_train)^τ), ``logit-adjust`` (CE on logits +
    τ log π_train) or ``balanced-softmax`` (CE on logits + log π_train); see the module's docstring.
    ``target``: the prior to aim for (default uniform: the balanced error). The mean over the batch.
    """

    def __init__(
        self, prior: Any, method: str = "pg-prior", tau: float = PRIOR_TAU, target: Any = None
    ) -> None:
        super().__init__()
        if method not in PRIOR_LOSSES:
            raise FclensError(f"unknown prior loss {method!r}; choose from {', '.join(PRIOR_LOSSES)}")
        try:
            values = np.asarray(prior, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise FclensError(
                f"the prior is C positive numbers, got {type(prior).__name__} {prior!r}"
            ) from None
        prior = class_prior(values, values.size)
        aim = None if target is None else class_prior(target, prior.size)
        weight, shift = _terms(method, prior, float(tau), aim)
        self.method, self.tau = method, float(tau)
        self.register_buffer("weight", weight)
        self.register_buffer("shift", shift)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        shifted = logits if self.shift is None else logits + self.shift.to(logits.dtype)
        weight = None if self.weight is None else self.weight.to(logits.dtype)
        return F.cross_entropy(shifted, targets, weight=weight)


# ---------------------------------------------------------------------------------------------------------
# Re-fits on a scan
# ---------------------------------------------------------------------------------------------------------
class _Rows:
    """A scan's labelled features, centred (z − μ, μ their mean), held in memory when they fit
    ``memory_limit`` bytes as float32, else read from the shards again on every pass (slower, but any
    size works)."""

    def __init__(self, scan: Scan, memory_limit: int, device: torch.device) -> None:
        self.scan, self.device = scan, device
        size = int(class_counts(scan).sum()) * scan.weight.shape[1] * 4
        self.held = None if size > memory_limit else list(self._read())
        total, count = torch.zeros(scan.weight.shape[1], dtype=torch.float64, device=device), 0
        for z, _ in self.held if self.held is not None else self._read():
            total += z.sum(dim=0, dtype=torch.float64)
            count += len(z)
        self.mean = (total / max(count, 1)).float()
        for z, _ in self.held or []:
            z -= self.mean  # in place: the held features are not copied a second time

    def _read(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _, z, label in feature_batches(self.scan, labelled=True):
            yield torch.from_numpy(z).to(self.device), torch.from_numpy(label).to(self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.held is not None:
            return iter(self.held)
        return ((z - self.mean, y) for z, y in self._read())


def fit_layer(
    scan: Scan | str | os.PathLike[str],
    method: str = "ce",
    *,
    prior: Any = "labels",
    tau: float = PRIOR_TAU,
    seed: int = SEED,
    target: Any = None,
    weight_decay: float = 5e-4,
    max_iter: int = 500,
    tolerance: float = 1e-5,
    memory_limit: int = 2 << 30,
    device: str | torch.device | None = None,
) -> FinalLayer:
    """Re-fit the final layer on a scan's stored features with the loss ``method`` (one of :data:`LOSSES`).

    Deterministic and full-batch: L-BFGS (strong-Wolfe line search) on the mean loss over the labelled
    rows plus ``weight_decay``/2 · ‖W‖², from the scanned layer (``crt``: from a random layer drawn with
    ``seed``; ``logit-adjust`` and ``balanced-softmax``: from the scanned layer with its bias shifted by
    −shift, which is their minimum when the scanned layer minimised plain CE on these rows). It stops
    when no gradient entry exceeds ``tolerance``, when the loss stops changing (1e-10), or after
    ``max_iter`` iterations; the result's ``fit`` reports the final loss, gradient norm, iterations,
    passes and time, and whether it converged (stopped before ``max_iter``).

    The fit runs on centred features, z − μ with the bias b + Wμ: the same objective exactly (the
    weight decay does not touch the bias), far better conditioned — features after a ReLU are all
    positive, and their mean direction dominates the Hessian. On 10,000 rows of a 1,000-class layer
    L-BFGS reached the loss in 19 passes that uncentred it had not reached in 109.

    Classes with no labelled row keep the scanned row and bias. ``prior``: ``"labels"``, a scan, or C
    numbers (see :func:`class_prior`). Features are held in memory as float32 (N × D × 4 bytes) up to
    ``memory_limit`` bytes, else streamed from the shards on every pass.
    """
    started = time.perf_counter()
    scan = as_scan(scan)
    scan.require_features()
    scanned = scan.layer
    classes = scanned.num_classes
    counts = class_counts(scan)
    if counts.sum() == 0:
        raise FclensError(f"{scan.directory} has no labelled rows to fit on; scan a labelled source")
    if max_iter < 1:
        raise FclensError(f"max_iter must be at least 1, got {max_iter}")
    prior_values = class_prior(prior, classes, scan)
    aim = None if target is None else class_prior(target, classes)
    weights, shift = _terms(method, prior_values, float(tau), aim)
    dev = torch.device(device or "cpu")
    rows = _Rows(scan, memory_limit, dev)
    present = torch.from_numpy(np.flatnonzero(counts > 0)).to(dev)
    fixed_w = scanned.weight.to(dev)
    fixed_b = scanned.bias.to(dev) + fixed_w @ rows.mean  # the bias of centred features
    w = fixed_w[present].clone()
    b = fixed_b[present].clone()
    if method == "crt":
        generator = torch.Generator().manual_seed(seed)
        w = (torch.randn(w.shape, generator=generator) / math.sqrt(w.shape[1])).to(dev)
        b = torch.zeros_like(b)
    elif shift is not None:
        b -= shift.to(dev)[present]
    w.requires_grad_(True)
    b.requires_grad_(True)
    class_weight = torch.ones(classes) if weights is None else weights
    total = float((class_weight.double() * torch.from_numpy(counts).double()).sum())
    class_weight, offset = class_weight.to(dev), None if shift is None else shift.to(dev)
    passes = [0]

    def objective() -> torch.Tensor:
        """The loss at (w, b), its gradient accumulated in w.grad and b.grad one chunk at a time."""
        passes[0] += 1
        for tensor in (w, b):
            tensor.grad = None
        full_w = fixed_w.index_put((present,), w)
        full_b = fixed_b.index_put((present,), b)
        value = 0.0
        for z, y in rows:
            logits = torch.addmm(full_b, z, full_w.T)
            if offset is not None:
                logits = logits + offset
            part = F.cross_entropy(logits, y, weight=class_weight, reduction="sum") / total
            part.backward(retain_graph=True)
            value += float(part.detach())
        decay = 0.5 * weight_decay * (w * w).sum()
        decay.backward()
        return torch.tensor(value + float(decay.detach()))

    optimizer = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        max_eval=max_iter * 5 // 4,
        tolerance_grad=tolerance,
        tolerance_change=1e-10,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    optimizer.step(objective)  # LBFGS runs the closure with autograd on
    iterations = int(optimizer.state[w].get("n_iter", 0))
    final = float(objective())
    grad_norm = float(torch.cat([w.grad.reshape(-1), b.grad]).norm())
    with torch.no_grad():
        weight = fixed_w.index_put((present,), w)
        bias = scanned.bias.to(dev).index_put((present,), b - w @ rows.mean)  # back to uncentred features
    report = FitReport(
        final,
        grad_norm,
        iterations,
        passes[0],
        time.perf_counter() - started,
        converged=iterations < max_iter,
    )
    return FinalLayer(weight.cpu().contiguous(), bias.cpu().contiguous(), method=method, fit=report)


def adjust_layer(
    layer: Any, method: str = "logit-adjust", *, prior: Any = None, tau: float = PRIOR_TAU
) -> FinalLayer:
    """A post-hoc adjustment of ``layer`` (a FinalLayer, or anything :meth:`FinalLayer.of` reads: a loaded
    model, a scan); no training. ``logit-adjust``: b − τ log π_train, ``prior`` a scan (its labelled rows)
    or C numbers; ``tau-norm``: w_k / ‖w_k‖^τ and b_k / ‖w_k‖^τ (a row of zeros stays), no prior."""
    layer = FinalLayer.of(layer)
    if method not in ADJUSTMENTS:
        raise FclensError(f"unknown adjustment {method!r}; choose from {', '.join(ADJUSTMENTS)}")
    if not math.isfinite(tau) or tau < 0:
        raise FclensError(f"tau must be a number ≥ 0, got {tau}")
    if method == "tau-norm":
        norm = layer.weight.double().norm(dim=1)
        scale = torch.where(norm > 0, norm.pow(-tau), torch.ones_like(norm))
        weight = (layer.weight.double() * scale[:, None]).float()
        return FinalLayer(weight, (layer.bias.double() * scale).float(), method=method)
    if prior is None:
        raise FclensError("logit-adjust needs the training prior: a training scan or C numbers")
    log_prior = torch.from_numpy(np.log(class_prior(prior, layer.num_classes)))
    return FinalLayer(layer.weight, (layer.bias.double() - tau * log_prior).float(), method=method)


# --- the names of 0.1, for one release ----------------------------------------------------------------


def fit_head(scan: Scan | str | os.PathLike[str], loss: str = "ce", *args: Any, **options: Any) -> FinalLayer:
    """Deprecated: :func:`fit_layer` (``loss=`` is now ``method=``)."""
    deprecation.warn("fclens.fit_head(scan, loss=…)", "fclens.fit_layer(scan, method=…)")
    positional = dict(zip(("prior", "tau", "seed"), args, strict=False))
    return fit_layer(scan, loss, **positional, **options)


def adjust_head(head: Any, method: str = "logit-adjust", *args: Any, **options: Any) -> FinalLayer:
    """Deprecated: :func:`adjust_layer` (a scan's directory is now ``fclens.read_scan(path).layer``)."""
    deprecation.warn("fclens.adjust_head(head, …)", "fclens.adjust_layer(layer, …)")
    layer = as_scan(head).layer if isinstance(head, (str, os.PathLike)) else head
    return adjust_layer(layer, method, **dict(zip(("prior", "tau"), args, strict=False)), **options)
