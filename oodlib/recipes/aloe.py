"""The ``"aloe"`` recipe: ALOE — Adversarial Learning with inlier and Outlier Exposure (Chen, Wu, Liang, Jha, Li,
*Robust Out-of-distribution Detection for Neural Networks*, arXiv 2003.09711), the recipe of the authors' code
(``shared/reference/defenses.md``):

- inlier attack: L∞ PGD, ε = 1/255, 2 steps of 1/255, random start, raising the cross-entropy to the true label;
- outlier attack: the same budget, raising the Outlier Exposure loss ``logsumexp(f) − mean(f)`` (it makes an
  outlier's prediction confident);
- loss ``CE(adversarial inliers, y) + 0.5 · OE(adversarial outliers)``, 64 inliers and 128 outliers per step.

The detector is the classifier's maximum softmax probability (:mod:`oodlib.defenses.aloe`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..attack.pgd import pgd_linf
from ..data import ImageSet
from ..losses import outlier_exposure_loss
from ..training import ModelSpec, fit, register_recipe
from .common import CrossEntropyObjective, OutlierConfidenceObjective, attack_seed, cycle_batches, outlier_pool


@register_recipe("aloe", warm_start=0)
def train_aloe(model: nn.Module, train: ImageSet, spec: ModelSpec, device: torch.device) -> dict:
    """Train ``model`` with ALOE: cross-entropy on PGD-perturbed inliers plus ``oe_weight`` times the Outlier
    Exposure loss on PGD-perturbed auxiliary outliers (:func:`oodlib.losses.outlier_exposure_loss`).

    Recipe options (``spec.recipe_options``; defaults = the authors' settings where our scale allows):
    ``lr`` 3e-3 (Adam, cosine decay; the authors use SGD 0.1 with a cosine decay for 100 epochs),
    ``batch_size`` 64, ``outlier_ratio`` 2 (128 outliers per step), ``oe_weight`` 0.5, ``eps`` 1/255,
    ``attack_steps`` 2, ``attack_step_size`` 1/255, ``n_outliers`` (auxiliary pool, default 2 × the training
    set), ``base_epochs`` 0 (train from scratch; > 0 warm-starts from the standard classifier).
    """
    lr, batch_size = spec.option("lr", 3e-3), spec.option("batch_size", 64)
    n_out = spec.option("outlier_ratio", 2) * batch_size
    eps, steps = spec.option("eps", 1 / 255), spec.option("attack_steps", 2)
    step_size, weight = spec.option("attack_step_size", 1 / 255), spec.option("oe_weight", 0.5)
    outliers = outlier_pool(spec.option("n_outliers", 2 * len(train)), train, seed=spec.seed + 1).to(device)
    gen = torch.Generator().manual_seed(spec.seed)
    outlier_batches = cycle_batches(len(outliers), n_out, gen)
    x_all, y_all = train.x.to(device), train.y.to(device)

    def step_loss(step: int, idx: Tensor) -> Tensor:
        x_in, y_in = x_all[idx.to(device)], y_all[idx.to(device)]
        x_out = outliers[next(outlier_batches).to(device)]
        x_in_adv = pgd_linf(CrossEntropyObjective(model, y_in), x_in, eps=eps, steps=steps,
                            step_size=step_size, seed=attack_seed(gen)).x
        x_out_adv = pgd_linf(OutlierConfidenceObjective(model), x_out, eps=eps, steps=steps,
                             step_size=step_size, seed=attack_seed(gen)).x
        logits = model(torch.cat([x_in_adv, x_out_adv]))
        return outlier_exposure_loss(logits[:len(idx)], y_in, logits[len(idx):], weight)

    facts = fit(model, step_loss, n_examples=len(train), epochs=spec.epochs, batch_size=batch_size, lr=lr,
                generator=gen)
    return {**facts, "n_outliers": len(outliers)}
