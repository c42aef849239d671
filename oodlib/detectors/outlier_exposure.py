"""Outlier Exposure (Hendrycks, Mazeika & Dietterich, ICLR 2019) — the detector of the attack paper's Appendix E.

The classifier is trained on its in-distribution data *and* on an auxiliary set of outliers, whose softmax is
pushed towards the uniform distribution U:

    L = CE(f(x_in), y) + λ · E_{x_out} [ CE(U, softmax(f(x_out))) ],    λ = 0.5,

with an outlier batch twice the in-distribution batch (reference code ``hendrycks/outlier-exposure``; the recipe
is :mod:`oodlib.recipes.outlier_exposure`, the loss :func:`oodlib.losses.outlier_exposure_loss`). For logits
``l`` over ``K`` classes, ``CE(U, softmax(l)) = logsumexp(l) − mean(l)``.

Score (Appendix E.1 of the attack paper: "in the actual implementation ... the OOD score is defined to be the
average of the logits minus the logsumexp of the logits"): ``mean(l) − logsumexp(l) = −CE(U, softmax(l))``. That
is an **OOD score** — close to its maximum ``−log K`` for a flat softmax (an outlier after Outlier Exposure) and
very negative for a peaked one (an in-distribution image). :class:`OutlierExposure` negates it, so its in-score is
``CE(U, softmax(l)) = logsumexp(l) − mean(l)``: higher = more in-distribution.

The auxiliary outliers are crops of :func:`oodlib.data.auxiliary_outliers` — never the evaluation OOD set
:func:`oodlib.data.natural_ood_set`, whose sources are disjoint — standing in for the 80 Million Tiny Images the
reference trains with.
"""

from __future__ import annotations

from torch import Tensor

from ..losses import uniform_cross_entropy
from .base import ClassifierDetector, register_detector


@register_detector
class OutlierExposure(ClassifierDetector):
    """Outlier Exposure score — Hendrycks, Mazeika & Dietterich (2019), *Deep Anomaly Detection with Outlier
    Exposure*, as the attack paper evaluates it (Appendix E.1, from the reference code).

    In-score ``logsumexp(l) − mean(l) = CE(U, softmax(l))`` of the logits ``l = model(x)``: the **negated** OOD
    score ``mean(l) − logsumexp(l)`` of the reference implementation. It is meant for a classifier trained with
    the ``"outlier_exposure"`` recipe (:func:`oodlib.recipes.outlier_exposure.train_outlier_exposure`), but is
    defined for any classifier. The attack of Appendix E matches the logits, ``f(x) = model(x)``.
    """

    name = "outlier_exposure"
    paper = "Hendrycks, Mazeika & Dietterich, ICLR 2019"

    def score(self, x: Tensor) -> Tensor:
        return uniform_cross_entropy(self.model(x))
