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
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor, nn

DETECTORS: dict[str, type["Detector"]] = {}


def register_detector(cls: type["Detector"]) -> type["Detector"]:
    """Class decorator adding a detector to :data:`DETECTORS` under its ``name``."""
    DETECTORS[cls.name] = cls
    return cls


class Detector(nn.Module, abc.ABC):
    """Base class: ``fit`` (optional statistics), ``score`` (in-score, differentiable), ``forward = score``."""

    name: str = ""
    paper: str = ""

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
        """Scores of many images without building a graph, on the model's device; returned on the CPU."""
        device = next(self.model.parameters()).device
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        out = torch.cat([self.score(x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])
        for m, training in modes:
            m.training = training
        return out


def make_detector(name: str, model: nn.Module, **options) -> Detector:
    """Construct a registered detector by name, e.g. ``make_detector("msp", model)``."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; valid choices: {', '.join(sorted(DETECTORS))}")
    return DETECTORS[name](model, **options)

