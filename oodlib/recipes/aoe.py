"""The ``"aoe"`` recipe: AOE — Adversarial Outlier Exposure (Botschen, Kirchheim, Ortmeier, *Out-of-Distribution
Detection with Adversarial Outlier Exposure*, CVPR 2025 workshop).

Outlier Exposure (Hendrycks et al. 2019) in which every outlier batch is first pushed toward **low energy** with
one FGSM step, ``x̂ = x_out − ε·sign(∇ₓE(x_out))``, ``E(x) = −logsumexp f(x)`` (the poster's augmentation; the
authors' code ``2mey10/Adversarial-OE``, ``shared/reference/defenses.md``): the augmented outliers look more
in-distribution to the energy score, and the OE loss then maps them back to a uniform prediction. The authors
fine-tune a pre-trained WRN-40-2 for 10 epochs (lr 5e-4, cosine), 64 inliers and 64 outliers per step, OE weight
0.5, ε = 0.5 in normalised-input units without clamping, outliers sampled from a GAN. Scores: MSP and Energy
(:mod:`oodlib.defenses.aoe`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..attack.pgd import EnergyObjective, fgsm
from ..data import ImageSet
from ..losses import outlier_exposure_loss
from ..training import ModelSpec, fit, register_recipe
from .common import cycle_batches, outlier_pool

NORMALISED_EPS = 0.5
"""The authors' FGSM step in normalised-input units; :func:`train_aoe` converts it to pixel units with the
model's own normalisation."""


@register_recipe("aoe", warm_start=6)
def train_aoe(model: nn.Module, train: ImageSet, spec: ModelSpec, device: torch.device) -> dict:
    """Fine-tune ``model`` with Adversarial Outlier Exposure (:func:`oodlib.losses.outlier_exposure_loss` on
    FGSM-augmented outliers).

    Recipe options (``spec.recipe_options``): ``base_epochs`` 6 (the standard classifier fine-tuned, loaded by the
    store before this recipe runs; 0 trains from scratch), ``lr`` 5e-4 (Adam, cosine decay), ``batch_size`` 64,
    ``outlier_ratio`` 1 (64 outliers per step), ``oe_weight`` 0.5, ``eps`` (pixel units; default the authors' 0.5
    normalised units times the model's input standard deviation — 0.125 for our models; ``0`` skips the FGSM step,
    which makes this Outlier Exposure fine-tuned the same way, AOE's baseline), ``n_outliers`` (default 2 × the
    training set). Our outliers are natural-image crops (:func:`oodlib.data.auxiliary_outliers`), not GAN samples.
    """
    lr, batch_size = spec.option("lr", 5e-4), spec.option("batch_size", 64)
    n_out = spec.option("outlier_ratio", 1) * batch_size
    weight = spec.option("oe_weight", 0.5)
    std = getattr(getattr(model, "normalize", None), "std", None)
    eps = spec.option("eps", NORMALISED_EPS * (float(std.mean()) if std is not None else 1.0))
    outliers = outlier_pool(spec.option("n_outliers", 2 * len(train)), train, seed=spec.seed + 1).to(device)
    gen = torch.Generator().manual_seed(spec.seed)
    outlier_batches = cycle_batches(len(outliers), n_out, gen)
    x_all, y_all = train.x.to(device), train.y.to(device)
    energy = EnergyObjective(model)

    def step_loss(step: int, idx: Tensor) -> Tensor:
        x_in, y_in = x_all[idx.to(device)], y_all[idx.to(device)]
        x_out = outliers[next(outlier_batches).to(device)]
        if eps > 0:
            x_out = fgsm(energy, x_out, eps=eps, maximize=True, clamp=False)
        logits = model(torch.cat([x_in, x_out]))
        return outlier_exposure_loss(logits[:len(idx)], y_in, logits[len(idx):], weight)

    facts = fit(model, step_loss, n_examples=len(train), epochs=spec.epochs, batch_size=batch_size, lr=lr,
                generator=gen)
    return {**facts, "eps_pixels": eps, "n_outliers": len(outliers)}
