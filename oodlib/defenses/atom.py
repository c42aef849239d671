"""ATOM — Adversarial Training with informative Outlier Mining (Chen, Li, Wu, Liang, Jha, *ATOM: Robustifying
Out-of-Distribution Detection Using Outlier Mining*, ECML-PKDD 2021).

ATOM trains a (K+1)-way classifier whose extra class K means "out of distribution", on mined and adversarial
auxiliary outliers (the recipe of the authors' code: :mod:`oodlib.recipes.atom`).

The detector's in-score is ``−softmax(x)[K]`` (:class:`ATOM`).

**The extra class without an extra output.** A linear (K+1)-way head ``[Wz + b, w'z + b']`` and the K-way head
``(W − 1w'ᵀ)z + (b − b')`` followed by a fixed zero logit give the same softmax, because the softmax is invariant to
adding one number to every logit. So the (K+1)-way model is exactly the stored K-way classifier with a constant
zero appended as the logit of class K (:func:`extended_logits`): the same family of functions, no change to the
architecture, and ``model(x)`` keeps returning the K class logits the other chapters expect
(:func:`oodlib.losses.extended_logits`, :func:`oodlib.losses.ood_probability`). It follows that
``softmax(x)[K] = 1 / (1 + Σ_k exp f_k(x))``, so ATOM's in-score is a monotone function of ``logsumexp f(x)``, the
energy score of Liu et al. (2020), on the ATOM-trained network.
"""

from __future__ import annotations

from torch import Tensor

from ..detectors.base import ClassifierDetector, register_detector
from ..losses import extended_logits, ood_probability

__all__ = ["ATOM", "PAPER", "extended_logits", "ood_probability"]

PAPER = "Chen, Li, Wu, Liang & Jha, ATOM: Robustifying Out-of-Distribution Detection Using Outlier Mining (2021)"


@register_detector
class ATOM(ClassifierDetector):
    """ATOM's detector — Chen et al., *ATOM: Robustifying Out-of-Distribution Detection Using Outlier Mining*
    (ECML-PKDD 2021). In-score ``−softmax(x)[K] = −1 / (1 + Σ_k exp f_k(x))`` of the (K+1)-way classifier
    trained by the ``"atom"`` recipe (the probability of the OOD class, negated)."""

    name = "atom"
    paper = PAPER

    def score(self, x: Tensor) -> Tensor:
        return -ood_probability(self.model(x))
