"""Reconstruction-error detection with an auto-encoder — the detector family of the attack paper's Section 2.4."""

from __future__ import annotations

from torch import Tensor

from ..autoencoder import ConvAutoEncoder
from .base import Detector, register_detector


@register_detector
class ReconstructionError(Detector):
    """Auto-encoder reconstruction error, as discussed in Liang et al., Section 2.4 (the auto-encoder anomaly
    detectors of Chalapathy & Chawla, 2019, *Deep Learning for Anomaly Detection: A Survey*).

    The method's OOD score is ``||x − x̂||_2`` with ``x̂ = decode(encode(x))``; following the book's in-score
    convention it is **negated**: ``score(x) = −||x − x̂||_2`` (higher = more in-distribution). The score is
    differentiable in ``x``. ``fit`` needs no statistics: the auto-encoder is trained beforehand
    (:func:`oodlib.store.get_autoencoder`). Attack targets: ``"score"`` and the ``"code"`` z.

    Parameters
    ----------
    model : ConvAutoEncoder
        The trained auto-encoder.
    """

    name = "reconstruction"
    paper = "Liang et al. 2020, Section 2.4 (auto-encoder detectors: Chalapathy & Chawla 2019)"
    targets = ("score", "code")

    def __init__(self, model: ConvAutoEncoder) -> None:
        super().__init__(model)

    def score(self, x: Tensor) -> Tensor:
        return -self.ood_score(x)

    def ood_score(self, x: Tensor) -> Tensor:
        """The reconstruction error ``||x − x̂||_2``, (N,): the method's OOD score."""
        return self.model.reconstruction_error(x)

    def code(self, x: Tensor) -> Tensor:
        """The auto-encoder's code z = encode(x), (N, latent_dim): Section 2.4's attack target ``f(x)``."""
        return self.model.encode(x)
