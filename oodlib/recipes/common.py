"""Pieces several training recipes share (Outlier Exposure, ALOE, ATOM, AOE): the auxiliary outlier pool, the
attack objectives used during training, endless seeded batches and per-attack seeds.

Every recipe follows :mod:`oodlib.training`'s convention ``recipe(model, train, spec, device) -> dict`` and reads its
settings from ``spec.recipe_options`` (``spec.option(name, default)``).
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import data
from ..losses import uniform_cross_entropy


def outlier_pool(n: int, train: data.ImageSet, seed: int) -> Tensor:
    """``n`` auxiliary training outliers shaped like ``train``'s images, (n, C, H, W) in [0, 1]: natural-image
    crops from :func:`oodlib.data.auxiliary_outliers` drawn with ``seed`` — never the evaluation OOD set
    :func:`oodlib.data.natural_ood_set`. They stand in for the 80 Million Tiny Images outliers of Outlier Exposure,
    ALOE and ATOM."""
    return data.auxiliary_outliers(n, size=train.x.shape[-1], channels=train.x.shape[1], seed=seed)


class CrossEntropyObjective(nn.Module):
    """Per-sample cross-entropy of ``model`` to fixed labels: the objective an attacker raises to make an
    in-distribution image lose its class (ALOE's inlier attack) — an ``nn.Module`` so the attack freezes the
    model inside it."""

    def __init__(self, model: nn.Module, target: Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("target", target, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.cross_entropy(self.model(x), self.target, reduction="none")


class OutlierConfidenceObjective(nn.Module):
    """Per-sample Outlier Exposure loss :func:`~oodlib.losses.uniform_cross_entropy` of ``model``: raising it makes
    an outlier's prediction confident (ALOE's outlier attack)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return uniform_cross_entropy(self.model(x))


def cycle_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Endless index batches over ``range(n)``: a fresh seeded permutation whenever one is used up."""
    while True:
        for batch in torch.randperm(n, generator=generator).split(batch_size):
            if len(batch) == batch_size or n < batch_size:
                yield batch


def attack_seed(generator: torch.Generator) -> int:
    """A seed for one training-time attack, drawn from the recipe's generator (so training stays
    deterministic)."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
