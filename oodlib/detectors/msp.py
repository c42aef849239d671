"""Maximum softmax probability (Hendrycks & Gimpel, 2017) — the detector of the attack paper's Table 1."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import ClassifierDetector, register_detector


@register_detector
class MSP(ClassifierDetector):
    """Maximum softmax probability — Hendrycks & Gimpel (2017), *A Baseline for Detecting Misclassified and
    Out-of-Distribution Examples in Neural Networks*. In-score ``max_c softmax(f(x))_c``; the detector of the
    attack paper's Table 1."""

    name = "msp"
    paper = "Hendrycks & Gimpel, ICLR 2017"

    def score(self, x: Tensor) -> Tensor:
        return torch.softmax(self.model(x), dim=1).amax(dim=1)
