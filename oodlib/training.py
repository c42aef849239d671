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

from .terminal import terminal_progress

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


def adam_cosine(model: nn.Module, lr: float, n_steps: int
                ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam with a cosine learning-rate decay over ``n_steps``: every recipe's optimiser, so the detectors and
    defenses differ from the plain classifier only in what they train on."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(n_steps, 1))


StepLoss = Callable[[int, Tensor], Tensor]


def fit(model: nn.Module, step_loss: StepLoss, *, n_examples: int, epochs: int, batch_size: int, lr: float,
        generator: torch.Generator, start_epoch: Callable[[int], None] | None = None,
        end_epoch: Callable[[int], None] | None = None, clip_norm: float | None = None,
        loss_name: str = "final_train_loss") -> dict:
    """The training loop every recipe shares: ``epochs`` passes over ``range(n_examples)`` in seeded mini-batches
    (:func:`minibatches`, drawn from ``generator``), Adam with a cosine decay (:func:`adam_cosine`), ``model``
    in train mode throughout and in eval mode afterwards.

    ``step_loss(step, idx)`` returns the loss of the batch of example indices ``idx`` (``step`` counts the
    batches of the epoch); it may draw from ``generator`` too, so the whole run stays deterministic.
    ``start_epoch(epoch)`` runs before an epoch's batch order is drawn, ``end_epoch(epoch)`` after its last step.
    ``clip_norm`` clips the parameters' gradient norm before each step.

    Returns ``{loss_name: mean loss of the last 10 steps, "train_seconds": wall time}``.
    """
    optimizer, scheduler = adam_cosine(model, lr, epochs * -(-n_examples // batch_size))
    start, losses = time.perf_counter(), []
    model.train()
    for epoch in terminal_progress(range(epochs), "training", unit="epoch"):
        if start_epoch is not None:
            start_epoch(epoch)
        for step, idx in enumerate(minibatches(n_examples, batch_size, generator)):
            loss = step_loss(step, idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        if end_epoch is not None:
            end_epoch(epoch)
    model.eval()
    return {loss_name: tail_mean(losses), "train_seconds": time.perf_counter() - start}


def tail_mean(values: list[float], n: int = 10) -> float:
    """Mean of the last ``n`` values (a recipe's final training loss); NaN for none."""
    tail = values[-n:]
    return sum(tail) / len(tail) if tail else float("nan")


@register_recipe("standard")
def train_standard(model: nn.Module, train: "ImageSet", spec: "ModelSpec", device: torch.device) -> dict:
    """Cross-entropy with Adam (lr ``spec.option('lr', 3e-3)``), batch ``spec.option('batch_size', 64)``,
    ``spec.epochs`` epochs, cosine learning-rate decay; the batch order is seeded by ``spec.seed``."""
    x_all, y_all = train.x.to(device), train.y.to(device)

    def step_loss(step: int, idx: Tensor) -> Tensor:
        return F.cross_entropy(model(x_all[idx.to(device)]), y_all[idx.to(device)])

    return fit(model, step_loss, n_examples=len(train), epochs=spec.epochs, batch_size=spec.option("batch_size", 64),
               lr=spec.option("lr", 3e-3), generator=torch.Generator().manual_seed(spec.seed))


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
