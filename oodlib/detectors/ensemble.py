"""Deep Ensembles (Lakshminarayanan, Pritzel & Blundell, NeurIPS 2017) — the detector of the attack paper's
Appendix F.

``M`` classifiers trained independently (random initialisation and data order per member; each with a proper
scoring rule plus adversarial training in the original) predict the average of their softmax outputs,
``p̄(y|x) = (1/M) Σ_m softmax(f_m(x))``. The attack paper (Appendix F.1) scores with the **entropy** of ``p̄`` — an
OOD score, large for an outlier — and attacks the concatenation of the members' logits (Appendix F.2, six
adversarially trained CIFAR-10 models of Ding et al. 2020). :class:`DeepEnsemble` negates the entropy.

:class:`EnsembleClassifier` holds the members and predicts ``log p̄``. The members come from the model store:
:func:`oodlib.recipes.ensemble.member_specs` turns one spec into ``M`` specs that differ only in their seed, and the
``"deep_ensemble"`` recipe (:mod:`oodlib.recipes.ensemble`) trains one member as in Lakshminarayanan et al. (NLL +
fast-gradient-sign adversarial training).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from .base import Detector, register_detector


def mean_log_probabilities(logits: Tensor) -> Tensor:
    """``log p̄`` of the ensemble, shape (N, K), from the members' logits (M, N, K):
    ``logsumexp_m log_softmax(l_m) − log M`` — the log of the mean softmax without underflow."""
    return torch.logsumexp(torch.log_softmax(logits, dim=-1), dim=0) - math.log(logits.shape[0])


def predictive_entropy(log_p: Tensor) -> Tensor:
    """Entropy ``−Σ_k p_k log p_k`` of each row of log-probabilities (N, K), shape (N,)."""
    return -(log_p.exp() * log_p).sum(dim=1)


class EnsembleClassifier(nn.Module):
    """The members of a deep ensemble as one classifier whose output is ``log p̄(y|x)``, shape (N, K), the log of
    the members' average softmax (Lakshminarayanan et al. 2017, Section 2.4), so that ``argmax`` is the
    ensemble's prediction and ``softmax`` of the output is ``p̄``.

    Parameters
    ----------
    models
        The members: classifiers returning logits over the same classes.
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(models) == 0:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(models)
        self.in_channels = getattr(self.members[0], "in_channels", None)

    def member_logits(self, x: Tensor) -> Tensor:
        """Every member's logits, shape (M, N, K)."""
        return torch.stack([member(x) for member in self.members])

    def concatenated_logits(self, x: Tensor) -> Tensor:
        """The members' logits side by side, shape (N, M·K): the attack's ``f(x)`` in Appendix F.2."""
        return torch.cat([member(x) for member in self.members], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return mean_log_probabilities(self.member_logits(x))


@register_detector
class DeepEnsemble(Detector):
    """Deep-ensemble predictive entropy — Lakshminarayanan, Pritzel & Blundell (2017), *Simple and Scalable
    Predictive Uncertainty Estimation using Deep Ensembles*, scored as in the attack paper's Appendix F.1.

    In-score ``−H(p̄(·|x))``: the **negated** entropy of the members' average softmax (the paper's OOD score is
    the entropy). The attack target ``"logits"`` (Appendix F.2) is the members' logits side by side,
    :meth:`EnsembleClassifier.concatenated_logits` of ``self.model``.

    Parameters
    ----------
    model
        An :class:`EnsembleClassifier`, or the members themselves (a sequence of classifiers), which are wrapped
        in one.
    """

    name = "deep_ensemble"
    paper = "Lakshminarayanan, Pritzel & Blundell, NeurIPS 2017"
    targets = ("score", "logits")

    def __init__(self, model: EnsembleClassifier | Sequence[nn.Module]) -> None:
        super().__init__(model if isinstance(model, EnsembleClassifier) else EnsembleClassifier(model))

    def score(self, x: Tensor) -> Tensor:
        return -predictive_entropy(self.model(x))

    def logits(self, x: Tensor) -> Tensor:
        """Every member's logits side by side, (N, M·K) (Appendix F.2's ``f(x)``)."""
        return self.model.concatenated_logits(x)
