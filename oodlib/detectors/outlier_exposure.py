"""Outlier Exposure (Hendrycks, Mazeika & Dietterich, ICLR 2019) — the detector of the attack paper's Appendix E.

The classifier is trained on its in-distribution data *and* on an auxiliary set of outliers, whose softmax is
pushed towards the uniform distribution U:

    L = CE(f(x_in), y) + λ · E_{x_out} [ CE(U, softmax(f(x_out))) ],    λ = 0.5,

with an outlier batch twice the in-distribution batch (reference code ``hendrycks/outlier-exposure``). For logits
``l`` over ``K`` classes, ``CE(U, softmax(l)) = logsumexp(l) − mean(l)``.

Score (Appendix E.1 of the attack paper: "in the actual implementation ... the OOD score is defined to be the
average of the logits minus the logsumexp of the logits"): ``mean(l) − logsumexp(l) = −CE(U, softmax(l))``. That
is an **OOD score** — close to its maximum ``−log K`` for a flat softmax (an outlier after Outlier Exposure) and
very negative for a peaked one (an in-distribution image). :class:`OutlierExposure` negates it, so its in-score is
``CE(U, softmax(l)) = logsumexp(l) − mean(l)``: higher = more in-distribution.

The auxiliary outliers are crops of :func:`oodlib.data.auxiliary_outliers` — never the evaluation OOD set
:func:`oodlib.data.natural_ood_set`, whose sources are disjoint — standing in for the 80 Million Tiny Images the
reference trains with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import data
from ..training import fit, register_recipe, tail_mean
from .base import ClassifierDetector, register_detector

if TYPE_CHECKING:
    from ..data import ImageSet
    from ..store import ModelSpec

OE_LAMBDA = 0.5
"""Weight λ of the outlier term for classifiers (reference code, Hendrycks et al. 2019)."""

OUTLIER_BATCH_FACTOR = 2
"""Outlier batch size as a multiple of the in-distribution batch (reference: 128 in, 256 outliers)."""


def uniform_cross_entropy(logits: Tensor) -> Tensor:
    """``CE(U, softmax(l)) = logsumexp(l) − mean(l)`` per sample, shape (N,): the cross-entropy from the uniform
    distribution to the softmax of ``logits`` (N, K). Its minimum ``log K`` is reached by a flat softmax."""
    return torch.logsumexp(logits, dim=1) - logits.mean(dim=1)


def outlier_exposure_loss(logits_in: Tensor, y_in: Tensor, logits_out: Tensor, lam: float = OE_LAMBDA) -> Tensor:
    """The Outlier Exposure objective for a classifier (Hendrycks et al. 2019, with the cross-entropy to the
    uniform distribution as the outlier loss): ``CE(l_in, y) + λ · mean CE(U, softmax(l_out))``."""
    return F.cross_entropy(logits_in, y_in) + lam * uniform_cross_entropy(logits_out).mean()


@register_detector
class OutlierExposure(ClassifierDetector):
    """Outlier Exposure score — Hendrycks, Mazeika & Dietterich (2019), *Deep Anomaly Detection with Outlier
    Exposure*, as the attack paper evaluates it (Appendix E.1, from the reference code).

    In-score ``logsumexp(l) − mean(l) = CE(U, softmax(l))`` of the logits ``l = model(x)``: the **negated** OOD
    score ``mean(l) − logsumexp(l)`` of the reference implementation. It is meant for a classifier trained with
    the ``"outlier_exposure"`` recipe (:func:`train_outlier_exposure`), but is defined for any classifier. The
    attack of Appendix E matches the logits, ``f(x) = model(x)``.
    """

    name = "outlier_exposure"
    paper = "Hendrycks, Mazeika & Dietterich, ICLR 2019"

    def score(self, x: Tensor) -> Tensor:
        return uniform_cross_entropy(self.model(x))


def outlier_pool(spec: "ModelSpec", train: "ImageSet") -> Tensor:
    """The auxiliary outliers a spec trains with: ``n_outliers`` (default ``len(train)``) crops of
    :func:`oodlib.data.auxiliary_outliers` at the training images' size and channels, drawn with
    ``outlier_seed`` (default ``spec.seed``)."""
    n = spec.option("n_outliers", len(train))
    return data.auxiliary_outliers(n, size=train.x.shape[-1], channels=train.x.shape[1],
                                   seed=spec.option("outlier_seed", spec.seed))


@register_recipe("outlier_exposure")
def train_outlier_exposure(model: nn.Module, train: "ImageSet", spec: "ModelSpec", device: torch.device) -> dict:
    """Train ``model`` from scratch with Outlier Exposure (the reference's ``oe_scratch`` models, Appendix E.2).

    Each step takes an in-distribution batch of ``batch_size`` (default 64) and the next
    ``OUTLIER_BATCH_FACTOR · batch_size`` images of the seeded, per-epoch shuffled outlier pool
    (:func:`outlier_pool`), forwards them together (as the reference does, so batch norm sees both) and minimises
    :func:`outlier_exposure_loss` with ``λ = lam`` (default 0.5). Optimiser as the ``"standard"`` recipe (Adam,
    ``lr`` default 3e-3, cosine decay over ``spec.epochs`` epochs) in place of the reference's SGD with Nesterov
    momentum over 100 epochs — a small-budget choice.

    Returns
    -------
    dict
        ``final_train_loss`` (mean of the last 10 steps), ``final_outlier_loss`` (their mean outlier term),
        ``n_outliers`` and ``train_seconds``.
    """
    batch_size, lam = spec.option("batch_size", 64), spec.option("lam", OE_LAMBDA)
    outliers = outlier_pool(spec, train).to(device)
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
