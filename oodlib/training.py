"""Training recipes for the classifiers the chapters attack.

A recipe is a function ``recipe(model, train, spec, device) -> dict`` that trains ``model`` in place on the
:class:`~oodlib.data.ImageSet` ``train`` and returns a dict of facts worth recording (loss, time, ...).
Recipes are registered by name; the model store (:mod:`oodlib.store`) calls them and caches the result, so a
recipe runs once per distinct :class:`~oodlib.store.ModelSpec`. Detector and defense chapters register their
own recipes (Outlier Exposure, ensembles, ATOM, ...) next to their code.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from .data import ImageSet
    from .store import ModelSpec

Recipe = Callable[[nn.Module, "ImageSet", "ModelSpec", torch.device], dict]
RECIPES: dict[str, Recipe] = {}


def register_recipe(name: str) -> Callable[[Recipe], Recipe]:
    """Decorator registering a training recipe under ``name``."""

    def decorate(fn: Recipe) -> Recipe:
        RECIPES[name] = fn
        return fn

    return decorate


def minibatches(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """A seeded random partition of ``range(n)`` into index batches (the last one may be smaller)."""
    order = torch.randperm(n, generator=generator)
    return list(order.split(batch_size))


@register_recipe("standard")
def train_standard(model: nn.Module, train: "ImageSet", spec: "ModelSpec", device: torch.device) -> dict:
    """Cross-entropy with Adam (lr ``spec.option('lr', 3e-3)``), batch ``spec.option('batch_size', 64)``,
    ``spec.epochs`` epochs, cosine learning-rate decay; the batch order is seeded by ``spec.seed``."""
    lr, batch_size = spec.option("lr", 3e-3), spec.option("batch_size", 64)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    n_steps = spec.epochs * -(-len(train) // batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(n_steps, 1))
    gen = torch.Generator().manual_seed(spec.seed)
    x_all, y_all = train.x.to(device), train.y.to(device)
    start, losses = time.perf_counter(), []
    model.train()
    for _ in range(spec.epochs):
        for idx in minibatches(len(train), batch_size, gen):
            loss = F.cross_entropy(model(x_all[idx.to(device)]), y_all[idx.to(device)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
    model.eval()
    return {"final_train_loss": sum(losses[-10:]) / max(len(losses[-10:]), 1),
            "train_seconds": time.perf_counter() - start}


@register_recipe("pretrained")
def load_pretrained(model: nn.Module, train: "ImageSet", spec: "ModelSpec", device: torch.device) -> dict:
    """No training: load torchvision ImageNet weights fetched by ``data_scripts/fetch_weights.py``
    (Section 3.1 uses the PyTorch-pretrained ResNet-18 and DenseNet-121)."""
    from .data import pretrained_weights_path

    state = torch.load(pretrained_weights_path(spec.arch), map_location="cpu", weights_only=True)
    model.net.load_state_dict(state)
    return {"weights": str(pretrained_weights_path(spec.arch))}


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on (x, y), in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += (model(x[i:i + batch_size].to(device)).argmax(1).cpu() == y[i:i + batch_size]).sum().item()
    model.train(was_training)
    return correct / max(len(x), 1)
