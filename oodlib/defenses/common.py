"""Pieces shared by the robust detectors' training recipes (ALOE, ATOM, AOE): the auxiliary outlier pool, the
Outlier Exposure loss, the attack objectives used during training, the optimiser, and the warm start from a
stored classifier.

Every recipe follows ``oodlib.training``'s convention ``recipe(model, train, spec, device) -> dict`` and reads its
settings from ``spec.recipe_options`` (``spec.option(name, default)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import data

if TYPE_CHECKING:
    from ..data import ImageSet
    from ..store import ModelSpec


def outlier_pool(n: int, train: "ImageSet", seed: int) -> Tensor:
    """``n`` auxiliary training outliers shaped like ``train``'s images: natural-image crops from
    :func:`oodlib.data.auxiliary_outliers` — never the evaluation OOD set :func:`oodlib.data.natural_ood_set`.
    They stand in for the 80 Million Tiny Images outliers of Outlier Exposure, ALOE and ATOM."""
    return data.auxiliary_outliers(n, size=train.x.shape[-1], channels=train.x.shape[1], seed=seed)


def uniform_cross_entropy(logits: Tensor) -> Tensor:
    """Per-sample cross-entropy between the softmax and the uniform distribution,
    ``logsumexp(logits) − mean(logits)`` — the Outlier Exposure loss of Hendrycks et al. (ICLR 2019), written in
    their code as ``−(mean(logits) − logsumexp(logits))``. Low when the prediction is uniform."""
    return torch.logsumexp(logits, dim=1) - logits.mean(dim=1)


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
    """Per-sample Outlier Exposure loss :func:`uniform_cross_entropy` of ``model``: raising it makes an outlier's
    prediction confident (ALOE's outlier attack)."""

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


def warm_start(model: nn.Module, spec: "ModelSpec", device: torch.device, default_epochs: int = 0) -> int:
    """Load the weights of the standard classifier trained for ``spec.option('base_epochs', default_epochs)``
    epochs (from the model store; same architecture, options, data and seed) into ``model``; returns that number
    of epochs (0: no warm start). AOE fine-tunes a pre-trained network; ALOE and ATOM train from scratch in their
    papers, and may warm-start here to save time (the page says when they do)."""
    base_epochs = int(spec.option("base_epochs", default_epochs))
    if base_epochs <= 0:
        return 0
    from ..store import ModelSpec, get_model  # the store imports the detectors: import it only when needed

    base = ModelSpec(arch=spec.arch, dataset=spec.dataset, recipe="standard", epochs=base_epochs, seed=spec.seed,
                     image_size=spec.image_size, channels=spec.channels, classes=spec.classes,
                     options=spec.options)
    model.load_state_dict(get_model(base, device=device).state_dict())
    return base_epochs

