"""The training layer's core: what determines a trained classifier (:class:`ModelSpec`), the recipe registry, the
one training loop every recipe shares (:func:`fit`) and the classifier-training entry point the model store calls
(:func:`train_classifier`).

A recipe is a function ``recipe(model, train, spec, device) -> dict`` that trains ``model`` in place on the
:class:`~oodlib.data.ImageSet` ``train`` and returns a dict of facts worth recording (loss, time, ...). Recipes
live in :mod:`oodlib.recipes` (one module per recipe or family), register with :func:`register_recipe`, and train
through :func:`fit` with their own per-batch loss. :mod:`oodlib.recipes` imports every recipe module, and the model
store (:mod:`oodlib.store`) imports it, so every recipe is registered whenever the store is; the store calls
:func:`train_classifier` and caches the result, so a recipe runs once per distinct :class:`ModelSpec`.

This module imports only the data, model and utility layers (never the store, the recipes or the detectors).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from . import data, models
from .terminal import terminal_progress
from .utils import batched, eval_mode, module_device

Recipe = Callable[[nn.Module, "data.ImageSet", "ModelSpec", torch.device], dict]
RECIPES: dict[str, Recipe] = {}
WARM_STARTS: dict[str, int] = {}
"""Recipes that may start from the weights of a stored ``"standard"`` classifier, with their default number of
its epochs (recipe option ``base_epochs``; 0 = from scratch). The store loads those weights before the recipe
runs (:func:`warm_start_spec`)."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything that determines a trained classifier.

    ``options`` go to the architecture's constructor (e.g. ``width``, ``latent_dim``, ``norm``);
    ``recipe_options`` to the training recipe (e.g. ``lr``, ``batch_size``). ``classes`` keeps a subset of the
    dataset's labels (relabelled 0..k-1), e.g. the 4-class stand-in for OCT in Appendix B.1.
    """

    arch: str
    dataset: str
    recipe: str = "standard"
    epochs: int = 3
    seed: int = 0
    image_size: int | None = None
    channels: int | None = None
    classes: tuple[int, ...] | None = None
    options: tuple[tuple[str, Any], ...] = field(default=())
    recipe_options: tuple[tuple[str, Any], ...] = field(default=())

    @classmethod
    def make(cls, arch: str, dataset: str, *, options: dict | None = None, recipe_options: dict | None = None,
             classes: list[int] | tuple[int, ...] | None = None, **kw: Any) -> "ModelSpec":
        """Build a spec from plain dicts/lists (what a notebook's parameters hold)."""
        return cls(arch=arch, dataset=dataset, options=_frozen_items(options), classes=tuple(classes) if classes
                   else None, recipe_options=_frozen_items(recipe_options), **kw)

    def option(self, name: str, default: Any = None) -> Any:
        """A recipe option's value (``recipe_options``), or ``default``."""
        return dict(self.recipe_options).get(name, default)

    def validate(self) -> None:
        """Raise ``ValueError`` for an unknown architecture, dataset or recipe, or a negative ``epochs``. Recipes
        are known once :mod:`oodlib.recipes` is imported (the store imports it)."""
        if self.arch not in models.ARCHS:
            raise ValueError(f"unknown architecture {self.arch!r}; valid choices: {', '.join(models.ARCHS)}")
        if self.dataset not in data.DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; valid choices: {', '.join(data.DATASETS)}")
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; valid choices: {', '.join(RECIPES)}")
        if not (isinstance(self.epochs, int) and self.epochs >= 0):
            raise ValueError(f"epochs must be a non-negative integer, got {self.epochs!r}")

    @property
    def label(self) -> str:
        return f"{self.arch}-{self.dataset}-{self.recipe}"


def _frozen_items(d: dict | None) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in (d or {}).items()))


def register_recipe(name: str, *, warm_start: int | None = None) -> Callable[[Recipe], Recipe]:
    """Decorator registering a training recipe under ``name``; ``warm_start`` (an epoch count, 0 = off by
    default) lets the recipe start from a stored standard classifier (:data:`WARM_STARTS`)."""

    def decorate(fn: Recipe) -> Recipe:
        RECIPES[name] = fn
        if warm_start is not None:
            WARM_STARTS[name] = warm_start
        return fn

    return decorate


# ------------------------------------------------------------------------------------------ the shared loop


def minibatches(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """A seeded random partition of ``range(n)`` into index batches (the last one may be smaller)."""
    order = torch.randperm(n, generator=generator)
    return list(order.split(batch_size))


Schedule = Callable[[torch.optim.Optimizer, int], torch.optim.lr_scheduler.LRScheduler]


def cosine_schedule(optimizer: torch.optim.Optimizer, n_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """A cosine learning-rate decay over ``n_steps`` steps: every recipe's schedule except JEM's warm-up."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(n_steps, 1))


StepLoss = Callable[[int, Tensor], Tensor]


def fit(model: nn.Module, step_loss: StepLoss, *, n_examples: int, epochs: int, batch_size: int, lr: float,
        generator: torch.Generator, start_epoch: Callable[[int], None] | None = None,
        end_epoch: Callable[[int], None] | None = None, clip_norm: float | None = None,
        schedule: Schedule = cosine_schedule, loss_name: str = "final_train_loss") -> dict:
    """The training loop every recipe shares: ``epochs`` passes over ``range(n_examples)`` in seeded mini-batches
    (:func:`minibatches`, drawn from ``generator``), Adam with learning rate ``lr`` and ``schedule(optimizer,
    n_steps)`` (default :func:`cosine_schedule`) stepped after every batch, ``model`` in train mode throughout and
    in eval mode afterwards.

    ``step_loss(step, idx)`` returns the loss (a scalar) of the batch of example indices ``idx`` (``step`` counts
    the batches of the epoch); it may draw from ``generator`` too, so the whole run stays deterministic.
    ``start_epoch(epoch)`` runs before an epoch's batch order is drawn, ``end_epoch(epoch)`` after its last step.
    ``clip_norm`` clips the parameters' gradient norm before each step.

    Returns ``{loss_name: mean loss of the last 10 steps, "train_seconds": wall time}``.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = schedule(optimizer, epochs * -(-n_examples // batch_size))
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


# ------------------------------------------------------------------------------- training one classifier


def training_data(spec: ModelSpec, split: str = "train") -> data.ImageSet:
    """The dataset split a spec trains (or is evaluated) on, resized and class-restricted as the spec says."""
    images = data.load_dataset(spec.dataset, split, image_size=spec.image_size, channels=spec.channels)
    return images.restrict_classes(spec.classes) if spec.classes else images


def input_geometry(images: data.ImageSet) -> dict[str, int]:
    """What sizes a classifier for ``images``: channels, image size and number of classes."""
    return {"in_channels": images.x.shape[1], "image_size": images.x.shape[-1], "num_classes": len(images.classes)}


def build_untrained(spec: ModelSpec, geometry: dict[str, int]) -> models.Classifier:
    """The spec's architecture with the given geometry, initialised from ``spec.seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return models.build_model(spec.arch, **geometry, **dict(spec.options))


def warm_start_spec(spec: ModelSpec) -> ModelSpec | None:
    """The stored ``"standard"`` classifier (same architecture, options, data and seed, trained for
    ``spec.option('base_epochs', default)`` epochs) whose weights ``spec``'s recipe starts from, or None: for a
    recipe without warm starts (:data:`WARM_STARTS`) or ``base_epochs`` 0. AOE fine-tunes a pre-trained network;
    ALOE and ATOM train from scratch in their papers, and may warm-start here to save time (the page says when
    they do)."""
    if spec.recipe not in WARM_STARTS:
        return None
    base_epochs = int(spec.option("base_epochs", WARM_STARTS[spec.recipe]))
    if base_epochs <= 0:
        return None
    return ModelSpec(arch=spec.arch, dataset=spec.dataset, recipe="standard", epochs=base_epochs, seed=spec.seed,
                     image_size=spec.image_size, channels=spec.channels, classes=spec.classes, options=spec.options)


def train_classifier(spec: ModelSpec, device: torch.device, initial_state: dict | None = None
                     ) -> tuple[models.Classifier, dict]:
    """Train the classifier of ``spec`` on ``device`` with its registered recipe (the global RNG seeded with
    ``spec.seed`` and restored afterwards), starting from ``initial_state`` (the warm start's weights) when given.

    Returns the model in eval mode and the facts to store: the input geometry, the recipe's facts,
    ``test_accuracy`` on the test split and, for a recipe with warm starts, ``warm_start_epochs``.
    """
    train, test = training_data(spec, "train"), training_data(spec, "test")
    geometry = input_geometry(train)
    if spec.recipe == "pretrained":  # torchvision's ImageNet weights keep their 1000-class head
        geometry["num_classes"] = 1000
    model = build_untrained(spec, geometry).to(device)
    if initial_state is not None:
        model.load_state_dict(initial_state)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        facts = RECIPES[spec.recipe](model, train, spec, device)
    if spec.recipe in WARM_STARTS:
        base = warm_start_spec(spec)
        facts["warm_start_epochs"] = base.epochs if base is not None else 0
    model.eval()
    facts["test_accuracy"] = accuracy(model, test.x, test.y)
    return model, {"geometry": geometry, **facts}


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on images ``x`` (N, C, H, W) with labels ``y`` (N,), in eval mode (the model's
    modes are restored afterwards); 0 for N = 0."""
    if len(x) == 0:
        return 0.0
    with eval_mode(model):
        predicted = batched(lambda batch: model(batch).argmax(1), x, batch_size, module_device(model))
    return (predicted == y).sum().item() / len(x)
