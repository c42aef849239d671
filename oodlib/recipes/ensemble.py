"""The ``"deep_ensemble"`` recipe: one member of a deep ensemble (Lakshminarayanan, Pritzel & Blundell, NeurIPS
2017; the attack paper's Appendix F), and :func:`member_specs`, the specs of an ensemble's members.

The members come from the model store; :class:`oodlib.detectors.ensemble.DeepEnsemble` scores with them.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import ImageSet
from ..training import ModelSpec, fit, register_recipe

ADVERSARIAL_EPS = 0.01
"""Fast-gradient-sign step of the members' adversarial training: 1% of the input range, as Lakshminarayanan et al.
(2017) chose it; here in [0, 1] pixel units."""


def member_specs(spec: ModelSpec, n_members: int) -> list[ModelSpec]:
    """``n_members`` copies of ``spec`` with seeds ``spec.seed, spec.seed + 1, ...``: independently initialised
    and shuffled members of one ensemble (Lakshminarayanan et al. 2017, Section 2.4). Raises ``ValueError`` for
    ``n_members < 1``."""
    if n_members < 1:
        raise ValueError(f"an ensemble needs at least one member, got n_members={n_members}")
    return [dataclasses.replace(spec, seed=spec.seed + m) for m in range(n_members)]


def fgsm_examples(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
    """Fast-gradient-sign adversarial examples ``clamp(x + ε · sign ∇ₓ NLL(model(x), y), 0, 1)``, detached, same
    shape as ``x`` (the adversarial training of Lakshminarayanan et al. 2017, after Goodfellow et al. 2015)."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


@register_recipe("deep_ensemble")
def train_ensemble_member(model: nn.Module, train: ImageSet, spec: ModelSpec, device: torch.device) -> dict:
    """Train one ensemble member as Lakshminarayanan et al. (2017), Algorithm 1: the NLL of each batch plus the
    NLL of its fast-gradient-sign adversarial examples (``adv_eps``, default :data:`ADVERSARIAL_EPS`), with the
    member's own random initialisation and data order (both from ``spec.seed``). Optimiser as the ``"standard"``
    recipe: Adam (``lr`` default 3e-3), batch ``batch_size`` (default 64), cosine decay over ``spec.epochs``.

    Returns
    -------
    dict
        ``final_train_loss`` (mean of the last 10 steps, clean + adversarial NLL) and ``train_seconds``.
    """
    adv_eps = spec.option("adv_eps", ADVERSARIAL_EPS)
    x_all, y_all = train.x.to(device), train.y.to(device)

    def step_loss(step: int, idx: Tensor) -> Tensor:
        x, y = x_all[idx.to(device)], y_all[idx.to(device)]
        x_adv = fgsm_examples(model, x, y, adv_eps)
        return F.cross_entropy(model(x), y) + F.cross_entropy(model(x_adv), y)

    return fit(model, step_loss, n_examples=len(train), epochs=spec.epochs, batch_size=spec.option("batch_size", 64),
               lr=spec.option("lr", 3e-3), generator=torch.Generator().manual_seed(spec.seed))
