"""The ``"atom"`` recipe: ATOM — Adversarial Training with informative Outlier Mining (Chen, Li, Wu, Liang, Jha,
ECML-PKDD 2021), the recipe of the authors' code (``shared/reference/defenses.md``):

- every epoch, **mine** outliers: score a pool of auxiliary outliers by P(class K) in eval mode, sort ascending,
  skip the lowest fraction q = 0.125 (the most in-distribution-looking ones are likely noise) and keep the next
  2 × |training set| as this epoch's outliers;
- per step, 64 inliers and 128 mined outliers, the second half of the outliers replaced by L∞ PGD examples
  (ε = 8/255, 5 steps of 2/255, random start rounded to whole 8-bit levels, each keeping its best iterate) that
  raise the cross-entropy to class K;
- loss ``CE(inliers, y) + 1.0 · CE(outliers ∪ adversarial outliers, K)``.

Class K is a fixed zero logit appended to the K class logits (:func:`oodlib.losses.extended_logits`; the detector
module :mod:`oodlib.defenses.atom` explains why).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attack.pgd import pgd_linf
from ..data import ImageSet
from ..losses import extended_logits, ood_class_cross_entropy, ood_probability
from ..training import ModelSpec, fit, register_recipe
from ..utils import batched, eval_mode, module_device
from .common import attack_seed, outlier_pool


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
    """ATOM's informative outlier mining: the indices (n_keep,) into ``pool`` (M, C, H, W) of the ``n_keep``
    outliers that follow the lowest ``quantile`` fraction when sorted by ascending P(class K) under ``model`` (in
    eval mode; its modes are restored afterwards)."""
    with eval_mode(model):
        p_ood = batched(lambda x: ood_probability(model(x)), pool, batch_size, module_device(model))
    order = torch.argsort(p_ood, stable=True)
    skip = int(quantile * len(pool))
    return order[skip:skip + n_keep]


@register_recipe("atom", warm_start=0)
def train_atom(model: nn.Module, train: ImageSet, spec: ModelSpec, device: torch.device) -> dict:
    """Train ``model`` (K class logits; class K is the fixed zero logit) with ATOM.

    Recipe options (``spec.recipe_options``): ``lr`` 3e-3 (Adam, cosine decay; the authors use SGD 0.1 with
    Nesterov momentum for 100 epochs), ``batch_size`` 64, ``outlier_ratio`` 2 (128 outliers per step, half of
    them adversarial), ``ood_weight`` 1.0, ``quantile`` q = 0.125, ``pool_size`` (auxiliary pool, default
    4 × the training set; the authors mine from 400 000 Tiny Images), ``n_mined`` (default 2 × the training
    set), ``eps`` 8/255, ``attack_steps`` 5, ``attack_step_size`` 2/255, ``base_epochs`` 0 (from scratch; > 0
    warm-starts from the standard classifier, :func:`oodlib.training.warm_start_spec`).
    """
    lr, batch_size = spec.option("lr", 3e-3), spec.option("batch_size", 64)
    n_out = spec.option("outlier_ratio", 2) * batch_size
    weight, quantile = spec.option("ood_weight", 1.0), spec.option("quantile", 0.125)
    eps, steps, step_size = spec.option("eps", 8 / 255), spec.option("attack_steps", 5), \
        spec.option("attack_step_size", 2 / 255)
    pool = outlier_pool(spec.option("pool_size", 4 * len(train)), train, seed=spec.seed + 1).to(device)
    n_mined = min(spec.option("n_mined", 2 * len(train)), len(pool))
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
        with eval_mode(model):
            mined_p.append(ood_probability(model(mined[:512])).mean().item())

    facts = fit(model, step_loss, n_examples=len(train), epochs=spec.epochs, batch_size=batch_size, lr=lr,
                generator=gen, start_epoch=mine, end_epoch=record_mined)
    return {**facts, "pool_size": len(pool), "n_mined": n_mined, "mean_p_ood_of_mined": mined_p}
