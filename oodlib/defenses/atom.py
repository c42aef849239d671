"""ATOM — Adversarial Training with informative Outlier Mining (Chen, Li, Wu, Liang, Jha, *ATOM: Robustifying
Out-of-Distribution Detection Using Outlier Mining*, ECML-PKDD 2021).

ATOM trains a (K+1)-way classifier whose extra class K means "out of distribution" (the recipe of the authors'
code, ``shared/reference/defenses.md``):

- every epoch, **mine** outliers: score a pool of auxiliary outliers by P(class K) in eval mode, sort ascending,
  skip the lowest fraction q = 0.125 (the most in-distribution-looking ones are likely noise) and keep the next
  2 × |training set| as this epoch's outliers;
- per step, 64 inliers and 128 mined outliers, the second half of the outliers replaced by L∞ PGD examples
  (ε = 8/255, 5 steps of 2/255, random start rounded to whole 8-bit levels, each keeping its best iterate) that
  raise the cross-entropy to class K;
- loss ``CE(inliers, y) + 1.0 · CE(outliers ∪ adversarial outliers, K)``.

The detector's in-score is ``−softmax(x)[K]`` (:class:`ATOM`).

**The extra class without an extra output.** A linear (K+1)-way head ``[Wz + b, w'z + b']`` and the K-way head
``(W − 1w'ᵀ)z + (b − b')`` followed by a fixed zero logit give the same softmax, because the softmax is invariant to
adding one number to every logit. So the (K+1)-way model is exactly the stored K-way classifier with a constant
zero appended as the logit of class K (:func:`extended_logits`): the same family of functions, no change to the
architecture, and ``model(x)`` keeps returning the K class logits the other chapters expect. It follows that
``softmax(x)[K] = 1 / (1 + Σ_k exp f_k(x))``, so ATOM's in-score is a monotone function of ``logsumexp f(x)``, the
energy score of Liu et al. (2020), on the ATOM-trained network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attack.pgd import pgd_linf
from ..detectors.base import ClassifierDetector, register_detector
from ..training import fit, register_recipe
from .common import attack_seed, outlier_pool, warm_start

if TYPE_CHECKING:
    from ..data import ImageSet
    from ..store import ModelSpec

PAPER = "Chen, Li, Wu, Liang & Jha, ATOM: Robustifying Out-of-Distribution Detection Using Outlier Mining (2021)"


def extended_logits(logits: Tensor) -> Tensor:
    """The (K+1)-way logits: the K class logits and a constant zero for the OOD class K (module docstring)."""
    return torch.cat([logits, logits.new_zeros(logits.shape[0], 1)], dim=1)


def ood_probability(logits: Tensor) -> Tensor:
    """``softmax(extended_logits)[K] = 1 / (1 + Σ_k exp(logits_k)) = sigmoid(−logsumexp(logits))``."""
    return torch.sigmoid(-torch.logsumexp(logits, dim=1))


def ood_class_cross_entropy(logits: Tensor) -> Tensor:
    """Per-sample cross-entropy of the (K+1)-way prediction to the OOD class K, ``softplus(logsumexp(logits))``."""
    return F.softplus(torch.logsumexp(logits, dim=1))


class _OODClassCrossEntropy(nn.Module):
    """The objective of ATOM's training attack on outliers: the cross-entropy to class K (raised by the
    attacker, who makes an outlier look in-distribution)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return ood_class_cross_entropy(self.model(x))


@torch.no_grad()
def mine_outliers(model: nn.Module, pool: Tensor, n_keep: int, quantile: float, batch_size: int = 1024
                  ) -> Tensor:
    """ATOM's informative outlier mining: the indices into ``pool`` of the ``n_keep`` outliers that follow the
    lowest ``quantile`` fraction when sorted by ascending P(class K) under ``model`` (in eval mode)."""
    was_training = model.training
    model.eval()
    p_ood = torch.cat([ood_probability(model(pool[i:i + batch_size])) for i in range(0, len(pool), batch_size)])
    model.train(was_training)
    order = torch.argsort(p_ood.cpu(), stable=True)
    skip = int(quantile * len(pool))
    return order[skip:skip + n_keep]


@register_recipe("atom")
def train_atom(model: nn.Module, train: "ImageSet", spec: "ModelSpec", device: torch.device) -> dict:
    """Train ``model`` (K class logits; class K is the fixed zero logit, see the module docstring) with ATOM.

    Recipe options (``spec.recipe_options``): ``lr`` 3e-3 (Adam, cosine decay; the authors use SGD 0.1 with
    Nesterov momentum for 100 epochs), ``batch_size`` 64, ``outlier_ratio`` 2 (128 outliers per step, half of
    them adversarial), ``ood_weight`` 1.0, ``quantile`` q = 0.125, ``pool_size`` (auxiliary pool, default
    4 × the training set; the authors mine from 400 000 Tiny Images), ``n_mined`` (default 2 × the training
    set), ``eps`` 8/255, ``attack_steps`` 5, ``attack_step_size`` 2/255, ``base_epochs`` 0 (from scratch).
    """
    lr, batch_size = spec.option("lr", 3e-3), spec.option("batch_size", 64)
    n_out = spec.option("outlier_ratio", 2) * batch_size
    weight, quantile = spec.option("ood_weight", 1.0), spec.option("quantile", 0.125)
    eps, steps, step_size = spec.option("eps", 8 / 255), spec.option("attack_steps", 5), \
        spec.option("attack_step_size", 2 / 255)
    pool = outlier_pool(spec.option("pool_size", 4 * len(train)), train, seed=spec.seed + 1).to(device)
    n_mined = min(spec.option("n_mined", 2 * len(train)), len(pool))
    base_epochs = warm_start(model, spec, device)
    gen = torch.Generator().manual_seed(spec.seed)
    x_all, y_all = train.x.to(device), train.y.to(device)
    mined, out_order, mined_p = pool[:0], torch.empty(0, dtype=torch.long), []

    def mine(epoch: int) -> None:
        nonlocal mined, out_order
        mined = pool[mine_outliers(model, pool, n_mined, quantile).to(device)]
        out_order = torch.randperm(len(mined), generator=gen)

    def step_loss(step: int, idx: Tensor) -> Tensor:
        x_in, y_in = x_all[idx.to(device)], y_all[idx.to(device)]
        x_out = mined[out_order[(torch.arange(n_out) + step * n_out) % len(mined)].to(device)]
        half = n_out // 2
        x_adv = pgd_linf(_OODClassCrossEntropy(model), x_out[half:], eps=eps, steps=steps, step_size=step_size,
                         random_start=True, quantise=True, keep_best=True, seed=attack_seed(gen)).x
        logits = extended_logits(model(torch.cat([x_in, x_out[:half], x_adv])))
        target_out = torch.full((n_out,), logits.shape[1] - 1, dtype=torch.long, device=device)
        return F.cross_entropy(logits[:len(idx)], y_in) + weight * F.cross_entropy(logits[len(idx):], target_out)

    @torch.no_grad()
    def record_mined(epoch: int) -> None:
        model.eval()
        mined_p.append(ood_probability(model(mined[:512])).mean().item())
        model.train()

    facts = fit(model, step_loss, n_examples=len(train), epochs=spec.epochs, batch_size=batch_size, lr=lr,
                generator=gen, start_epoch=mine, end_epoch=record_mined)
    return {**facts, "pool_size": len(pool), "n_mined": n_mined, "mean_p_ood_of_mined": mined_p,
            "warm_start_epochs": base_epochs}


@register_detector
class ATOM(ClassifierDetector):
    """ATOM's detector — Chen et al., *ATOM: Robustifying Out-of-Distribution Detection Using Outlier Mining*
    (ECML-PKDD 2021). In-score ``−softmax(x)[K] = −1 / (1 + Σ_k exp f_k(x))`` of the (K+1)-way classifier
    trained by the ``"atom"`` recipe (the probability of the OOD class, negated)."""

    name = "atom"
    paper = PAPER

    def score(self, x: Tensor) -> Tensor:
        return -ood_probability(self.model(x))
