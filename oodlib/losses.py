"""The one copy of each loss and logit functional that training recipes and detectors share.

Functions of logits (N, K) or of a classifier and images; they import only torch, so the recipes of
:mod:`oodlib.recipes` and the detectors of :mod:`oodlib.detectors` can both use them without depending on each
other (the layers are drawn in CONTRIBUTING.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

OE_LAMBDA = 0.5
"""Weight λ of the Outlier Exposure term for classifiers (reference code, Hendrycks et al. 2019)."""

BETA = 0.1
"""Weight β of the KL term of the joint confidence loss (Lee et al. 2018, reference script, CIFAR-10)."""


# ---------------------------------------------------------------------------------- Outlier Exposure (Appendix E)


def uniform_cross_entropy(logits: Tensor) -> Tensor:
    """``CE(U, softmax(l)) = logsumexp(l) − mean(l)`` per sample, shape (N,), for logits (N, K): the cross-entropy
    from the uniform distribution to the softmax — the Outlier Exposure loss of Hendrycks et al. (ICLR 2019),
    written in their code as ``−(mean(logits) − logsumexp(logits))``. Its minimum ``log K`` is reached by a flat
    softmax."""
    return torch.logsumexp(logits, dim=1) - logits.mean(dim=1)


def outlier_exposure_loss(logits_in: Tensor, y_in: Tensor, logits_out: Tensor, lam: float = OE_LAMBDA) -> Tensor:
    """The Outlier Exposure objective for a classifier (Hendrycks et al. 2019, with the cross-entropy to the
    uniform distribution as the outlier loss): ``CE(l_in, y) + λ · mean CE(U, softmax(l_out))``, a scalar.
    ALOE and AOE train with it too (``λ`` = their ``oe_weight``)."""
    return F.cross_entropy(logits_in, y_in) + lam * uniform_cross_entropy(logits_out).mean()


# ------------------------------------------------------------------------- confidence calibration (Appendix G)


def kl_from_uniform(logits: Tensor) -> Tensor:
    """``KL(U ‖ softmax(l)) = −log K − mean_k log softmax(l)_k`` per sample, shape (N,), for logits (N, K)."""
    return -torch.log_softmax(logits, dim=1).mean(dim=1) - math.log(logits.shape[1])


def confidence_loss(logits_in: Tensor, y_in: Tensor, logits_generated: Tensor, beta: float = BETA) -> Tensor:
    """The classifier's part of the joint confidence loss (Lee et al. 2018):
    ``NLL(l_in, y) + β · mean KL(U ‖ softmax(l_generated))``, a scalar."""
    return F.cross_entropy(logits_in, y_in) + beta * kl_from_uniform(logits_generated).mean()


# ------------------------------------------------------------------------------------------------- ATOM's class K


def extended_logits(logits: Tensor) -> Tensor:
    """ATOM's (K+1)-way logits (N, K+1): the K class logits and a constant zero for the OOD class K
    (:mod:`oodlib.defenses.atom` explains why this is the (K+1)-way classifier)."""
    return torch.cat([logits, logits.new_zeros(logits.shape[0], 1)], dim=1)


def ood_probability(logits: Tensor) -> Tensor:
    """``softmax(extended_logits)[K] = 1 / (1 + Σ_k exp(logits_k)) = sigmoid(−logsumexp(logits))``, shape (N,)."""
    return torch.sigmoid(-torch.logsumexp(logits, dim=1))


def ood_class_cross_entropy(logits: Tensor) -> Tensor:
    """Per-sample cross-entropy of the (K+1)-way prediction to the OOD class K, ``softplus(logsumexp(logits))``,
    shape (N,)."""
    return F.softplus(torch.logsumexp(logits, dim=1))


# ------------------------------------------------------------------------------------------------ JEM (Appendix J)


def log_px(model: nn.Module, x: Tensor) -> Tensor:
    """``log p(x)`` up to the model's constant log-normaliser: ``logsumexp_y f(x)[y]`` (JEM, Grathwohl et al. 2020,
    Eq. 5), shape (N,)."""
    return torch.logsumexp(model(x), dim=1)


def log_px_gradient(model: nn.Module, x: Tensor, create_graph: bool = False) -> Tensor:
    """``∂ log p(x) / ∂x`` per image (the SGLD drift and JEM's third score), same shape as ``x``.

    ``create_graph=True`` keeps the graph so that a function of the gradient can itself be differentiated in
    ``x`` (the attack on ``−‖∂ log p(x)/∂x‖₂`` needs second derivatives).
    """
    with torch.enable_grad():
        x_leaf = x if x.requires_grad else x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(log_px(model, x_leaf).sum(), x_leaf, create_graph=create_graph)
    return grad


def jem_loss(model: nn.Module, x: Tensor, y: Tensor, x_sampled: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """JEM's objective (Grathwohl et al. 2020, Eqs. 4–6) for one batch: ``CE(f(x), y)`` plus the contrastive
    estimate of ``−∂ log p(x)``, i.e. ``−mean LSE(f(x)) + mean LSE(f(x̃))`` with x̃ the SGLD samples.
    Returns scalars (total, cross-entropy, generative term)."""
    logits = model(torch.cat([x, x_sampled]))
    logits_data, logits_sampled = logits[:len(x)], logits[len(x):]
    ce = F.cross_entropy(logits_data, y)
    generative = -torch.logsumexp(logits_data, 1).mean() + torch.logsumexp(logits_sampled, 1).mean()
    return ce + generative, ce, generative
