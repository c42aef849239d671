"""The detector base class and the registry.

Conventions (``shared/reference/detectors.md``):

- ``score(x)`` is an **in-score** — higher means more in-distribution. A method defined with an OOD score is
  negated here, and its docstring says so.
- ``score`` is differentiable with respect to the input images, so any detector's score can itself be the
  attack's target ``f(x)`` (Algorithm 1 accepts any differentiable map).
- ``fit(x, y)`` computes whatever statistics the method needs from in-distribution training data and returns
  ``self``; methods that need none accept and ignore the data.

Detectors are ``nn.Module`` s wrapping a classifier (:class:`oodlib.models.Classifier`), so the attack can put
them in eval mode and freeze their parameters.

Degenerate input: every detector's ``score``, ``score_batched`` and ``fit`` refuse an empty batch (zero images) with
a ``ValueError`` naming the argument — the check is added to each subclass's own ``score`` / ``fit`` by
:meth:`Detector.__init_subclass__`, so a new detector gets it without writing it.
"""

from __future__ import annotations

import abc
import functools
import inspect
from typing import Callable

import torch
from torch import Tensor, nn

from .. import _checks

DETECTORS: dict[str, type["Detector"]] = {}


def register_detector(cls: type["Detector"]) -> type["Detector"]:
    """Class decorator adding a detector to :data:`DETECTORS` under its ``name``."""
    DETECTORS[cls.name] = cls
    return cls


def _refusing_empty_batches(method: Callable) -> Callable:
    """``method`` with a check that each tensor argument (a batch of images or labels) holds ≥ 1 sample."""
    if getattr(method, "_checks_batches", False):
        return method
    signature = inspect.signature(method)

    @functools.wraps(method)
    def checked(self, *args, **kwargs):
        for i, value in enumerate(args):
            if isinstance(value, Tensor):
                _checks.nonempty(value, _argument_name(signature, i + 1))
        for name, value in kwargs.items():
            if isinstance(value, Tensor):
                _checks.nonempty(value, name)
        return method(self, *args, **kwargs)

    checked._checks_batches = True  # type: ignore[attr-defined]
    return checked


def _argument_name(signature: inspect.Signature, position: int) -> str:
    names = list(signature.parameters)
    return names[position] if position < len(names) else f"argument {position}"


class Detector(nn.Module, abc.ABC):
    """Base class: ``fit`` (optional statistics), ``score`` (in-score, differentiable), ``forward = score``.

    ``score`` and ``fit`` of every subclass refuse empty batches (``ValueError`` naming the argument)."""

    name: str = ""
    paper: str = ""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        for attribute in ("score", "fit"):
            method = cls.__dict__.get(attribute)
            if callable(method) and not getattr(method, "__isabstractmethod__", False):
                setattr(cls, attribute, _refusing_empty_batches(method))

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.training = model.training  # its own flag only: never switch the wrapped model's submodules

    def fit(self, x: Tensor | None = None, y: Tensor | None = None) -> "Detector":
        """Fit the detector's statistics on in-distribution training data; the base class needs none."""
        return self

    @abc.abstractmethod
    def score(self, x: Tensor) -> Tensor:
        """In-score of each image, shape (N,), differentiable in ``x``."""

    def forward(self, x: Tensor) -> Tensor:
        return self.score(x)

    @torch.no_grad()
    def score_batched(self, x: Tensor, batch_size: int = 512) -> Tensor:
        """Scores of many images (N, C, H, W), N ≥ 1, without building a graph, ``batch_size`` (a positive integer:
        Python, NumPy or 0-d tensor) at a time on the model's device; returned on the CPU, shape (N,).

        Raises ``ValueError`` for an empty ``x`` or a non-positive ``batch_size``, ``TypeError`` for a boolean or
        non-integer ``batch_size``."""
        _checks.nonempty(x, "x")
        batch_size = _checks.integer(batch_size, "batch_size", minimum=1)
        device = next(self.model.parameters()).device
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        out = torch.cat([self.score(x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])
        for m, training in modes:
            m.training = training
        return out


Detector.fit = _refusing_empty_batches(Detector.fit)  # type: ignore[method-assign]


def make_detector(name: str, model: nn.Module, **options) -> Detector:
    """Construct a registered detector by name, e.g. ``make_detector("msp", model)``."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; valid choices: {', '.join(sorted(DETECTORS))}")
    return DETECTORS[name](model, **options)

