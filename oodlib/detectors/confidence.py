"""Confidence-calibrated classifiers (Lee, Lee, Lee & Shin, ICLR 2018) — the detector of the attack paper's
Appendix G.

A classifier is trained jointly with a GAN whose generator learns to produce samples in the low-density boundary
of the in-distribution data, on which the classifier is taught to be uncertain (the "joint confidence loss" of Lee
et al. 2018; reference code ``alinlab/Confident_classifier``). The training — the GAN, the loss and its settings —
is the recipe :mod:`oodlib.recipes.confidence`.

Score (Appendix G.1): the maximum softmax probability, an in-score. The attack (Appendix G.2) matches "the vector
input to the classifier module of VGG13": the reference VGG13 is a convolutional ``features`` module followed by a
three-layer fully connected ``classifier`` module, so the target is the flattened output of the convolutional
part — see :func:`classifier_input` for its counterpart in oodlib's architectures.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import ClassifierDetector, register_detector


def classifier_input(model: nn.Module, x: Tensor) -> Tensor:
    """The input vector of the classifier's fully connected part, the attack's ``f(x)`` in Appendix G.2.

    In the reference VGG13 the convolutional ``features`` module ends in a 512×1×1 map, flattened into the
    three-layer ``classifier`` module. The counterpart in :mod:`oodlib.models` is the spatially mean-pooled
    **last convolutional feature map**: for ``small_cnn`` the pooled third stage, which feeds its fully
    connected part (the ReLU layer ``embed`` that gives z, then the ``head``); for the ResNets and the DenseNet
    the pooled last map, which is z itself (their fully connected part is the head alone). A model without
    convolutional maps (``mlp``) is all fully connected: its classifier input is the flattened image.
    """
    conv_maps = [m for m in model.feature_maps(x) if m.dim() == 4]
    return conv_maps[-1].mean(dim=(2, 3)) if conv_maps else x.flatten(1)


@register_detector
class ConfidenceCalibrated(ClassifierDetector):
    """Maximum softmax of a confidence-calibrated classifier — Lee, Lee, Lee & Shin (2018), *Training
    Confidence-calibrated Classifiers for Detecting Out-of-Distribution Samples*, as the attack paper evaluates it
    (Appendix G).

    In-score ``max_c softmax(model(x))_c`` (the same formula as the MSP baseline; what differs is the training,
    recipe ``"confidence_calibrated"``, :func:`oodlib.recipes.confidence.train_confidence_calibrated`). The attack's
    target in Appendix G.2 is ``"classifier_input"`` (:meth:`classifier_input`).
    """

    name = "confidence_calibrated"
    paper = "Lee, Lee, Lee & Shin, ICLR 2018"
    targets = ("score", "logits", "features", "classifier_input")

    def score(self, x: Tensor) -> Tensor:
        return torch.softmax(self.model(x), dim=1).amax(dim=1)

    def classifier_input(self, x: Tensor) -> Tensor:
        """:func:`classifier_input` of the wrapped classifier (Appendix G.2's ``f(x)``)."""
        return classifier_input(self.model, x)
