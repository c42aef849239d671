"""The ``"outlier_exposure"`` recipe: a classifier trained from scratch with Outlier Exposure (Hendrycks, Mazeika &
Dietterich, ICLR 2019; the reference's ``oe_scratch`` models, the attack paper's Appendix E.2).

The classifier is trained on its in-distribution data *and* on an auxiliary set of outliers, whose softmax is
pushed towards the uniform distribution U (:func:`oodlib.losses.outlier_exposure_loss`), with an outlier batch
twice the in-distribution batch (reference code ``hendrycks/outlier-exposure``). The detector is
:class:`oodlib.detectors.outlier_exposure.OutlierExposure`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data import ImageSet
from ..losses import OE_LAMBDA, outlier_exposure_loss, uniform_cross_entropy
from ..training import ModelSpec, fit, register_recipe, tail_mean
from .common import outlier_pool

__all__ = ["OE_LAMBDA", "OUTLIER_BATCH_FACTOR", "train_outlier_exposure"]

OUTLIER_BATCH_FACTOR = 2
"""Outlier batch size as a multiple of the in-distribution batch (reference: 128 in, 256 outliers)."""


@register_recipe("outlier_exposure")
def train_outlier_exposure(model: nn.Module, train: ImageSet, spec: ModelSpec, device: torch.device) -> dict:
    """Train ``model`` from scratch with Outlier Exposure (the reference's ``oe_scratch`` models, Appendix E.2).

    Each step takes an in-distribution batch of ``batch_size`` (default 64) and the next
    ``OUTLIER_BATCH_FACTOR · batch_size`` images of the seeded, per-epoch shuffled outlier pool (``n_outliers``,
    default ``len(train)``, crops of :func:`~oodlib.recipes.common.outlier_pool` drawn with ``outlier_seed``,
    default ``spec.seed``), forwards them together (as the reference does, so batch norm sees both) and minimises
    :func:`~oodlib.losses.outlier_exposure_loss` with ``λ = lam`` (default 0.5). Optimiser as the ``"standard"``
    recipe (Adam, ``lr`` default 3e-3, cosine decay over ``spec.epochs`` epochs) in place of the reference's SGD
    with Nesterov momentum over 100 epochs — a small-budget choice.

    Returns
    -------
    dict
        ``final_train_loss`` (mean of the last 10 steps), ``final_outlier_loss`` (their mean outlier term),
        ``n_outliers`` and ``train_seconds``.
    """
    batch_size, lam = spec.option("batch_size", 64), spec.option("lam", OE_LAMBDA)
    outliers = outlier_pool(spec.option("n_outliers", len(train)), train,
                            seed=spec.option("outlier_seed", spec.seed)).to(device)
    x_all, y_all = train.x.to(device), train.y.to(device)
    gen = torch.Generator().manual_seed(spec.seed)
    out_batch = OUTLIER_BATCH_FACTOR * batch_size
    out_order, outlier_losses = torch.empty(0, dtype=torch.long), []

    def shuffle_outliers(epoch: int) -> None:
        nonlocal out_order
        out_order = torch.randperm(len(outliers), generator=gen)

    def step_loss(step: int, idx: Tensor) -> Tensor:
        out_idx = out_order[torch.arange(step * out_batch, (step + 1) * out_batch) % len(outliers)]
        logits = model(torch.cat([x_all[idx.to(device)], outliers[out_idx.to(device)]]))
        logits_in, logits_out = logits[:len(idx)], logits[len(idx):]
        outlier_losses.append(uniform_cross_entropy(logits_out.detach()).mean().item())
        return outlier_exposure_loss(logits_in, y_all[idx.to(device)], logits_out, lam)

    facts = fit(model, step_loss, n_examples=len(train), epochs=spec.epochs, batch_size=batch_size,
                lr=spec.option("lr", 3e-3), generator=gen, start_epoch=shuffle_outliers)
    return {**facts, "final_outlier_loss": tail_mean(outlier_losses), "n_outliers": len(outliers)}
