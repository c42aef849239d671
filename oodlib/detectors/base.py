"""The detector base class and the registry.

Conventions (``shared/reference/detectors.md``):

- ``score(x)`` is an **in-score** — higher means more in-distribution. A method defined with an OOD score is
  negated here, and its docstring says so.
- ``score`` is differentiable with respect to the input images, so any detector's score can itself be the
  attack's target ``f(x)`` (Algorithm 1 accepts any differentiable map).
- ``fit(x, y)`` computes whatever statistics the method needs from in-distribution training data and returns
  ``self``; methods that need none accept and ignore the data. Before ``fit``, a detector that needs statistics
  raises ``RuntimeError`` from ``score``.
- **Attack targets.** A detector names the quantities the paper attacks (its ``f(x)``) in :attr:`Detector.targets`
  — ``"score"`` always, ``"logits"`` and ``"features"`` for detectors on a classifier, and the method's own
  (``"classifier_input"``, ``"output"``, ``"density_log_odds"``, ``"code"``) — and :meth:`Detector.target` returns
  each as a bound method of the detector, so an attack given ``(detector, name)`` freezes the whole detector
  (:func:`oodlib.attack.ood.attack_target`). Chapters never build adapters.
- **Score direction.** ``score`` is an in-score everywhere; :meth:`Detector.ood_score` is the method's own OOD
  score (the NLL, the Gram deviation, the reconstruction error: −score unless a subclass computes it directly),
  for reporting the paper's quantity without a negation in a chapter.
- **dtype policy.** ``score(x)`` is computed in the detector's working precision (float64 for Mahalanobis and
  Gram, float32 otherwise), so that an attack on it differentiates that precision; ``score_batched`` and
  ``ood_score_batched`` always return **float32 on the CPU**, shape (N,).
- **Modes.** A detector never switches the wrapped model's mode: its own ``training`` flag starts as the model's;
  ``score_batched`` evaluates in eval mode and restores every submodule's own mode (:func:`oodlib.utils.eval_mode`);
  ``fit`` computes its statistics in eval mode the same way.

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
from ..utils import batched, eval_mode, module_device

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
    """Base class: ``fit`` (optional statistics), ``score`` (in-score, differentiable), ``forward = score``, the
    named attack targets :attr:`targets` (:meth:`target`), batched scoring (float32 on the CPU).

    ``score`` and ``fit`` of every subclass refuse empty batches (``ValueError`` naming the argument)."""

    name: str = ""
    paper: str = ""
    targets: tuple[str, ...] = ("score",)
    """The attack targets ``f(x)`` this detector names, each a method of that name (``"score"`` always)."""
    batch_size: int = 512
    """The default number of images per batch of :meth:`score_batched` / :meth:`ood_score_batched`."""

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

    def target(self, name: str) -> Callable[[Tensor], Tensor]:
        """The attack target ``name`` (one of :attr:`targets`) as a bound method of this detector: images
        (N, C, H, W) → (N,) or (N, D), differentiable in the input. Raises ``ValueError`` for another name."""
        if name not in self.targets:
            raise ValueError(f"detector {self.name!r} has no attack target {name!r}; its targets: "
                             f"{', '.join(self.targets)}")
        return getattr(self, name)

    def ood_score(self, x: Tensor) -> Tensor:
        """The method's own OOD score (higher = more out-of-distribution), shape (N,): ``−score(x)`` unless the
        detector computes the paper's quantity directly (NLL, Gram deviation, reconstruction error)."""
        return -self.score(x)

    def score_batched(self, x: Tensor, batch_size: int | None = None) -> Tensor:
        """Scores of many images (N, C, H, W), N ≥ 1, without building a graph, ``batch_size`` (a positive integer:
        Python, NumPy or 0-d tensor; default :attr:`batch_size`) at a time on the model's device, in eval mode
        (every submodule's mode restored afterwards); float32 on the CPU, shape (N,).

        Raises ``ValueError`` for an empty ``x`` or a non-positive ``batch_size``, ``TypeError`` for a boolean or
        non-integer ``batch_size``."""
        return self._batched(self.score, x, batch_size)

    def ood_score_batched(self, x: Tensor, batch_size: int | None = None) -> Tensor:
        """:meth:`ood_score` of many images, as :meth:`score_batched` (float32 on the CPU, shape (N,))."""
        return self._batched(self.ood_score, x, batch_size)

    @torch.no_grad()
    def _batched(self, fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int | None) -> Tensor:
        with eval_mode(self):
            return batched(fn, x, self.batch_size if batch_size is None else batch_size,
                           module_device(self.model)).float()


class ClassifierDetector(Detector):
    """A detector on a classifier (``model(x)`` = logits (N, K), ``model.features(x)`` = the encoder z (N, D)):
    besides its score it names the classifier's logits and features as attack targets (the attack paper's
    ``f(x)`` of Table 1 and Appendices C, E, J)."""

    targets = ("score", "logits", "features")

    def logits(self, x: Tensor) -> Tensor:
        """The classifier's logits, (N, K)."""
        return self.model(x)

    def features(self, x: Tensor) -> Tensor:
        """The classifier's encoder output z (its penultimate layer), (N, D)."""
        return self.model.features(x)


Detector.fit = _refusing_empty_batches(Detector.fit)  # type: ignore[method-assign]


def make_detector(name: str, model: nn.Module, **options) -> Detector:
    """Construct a registered detector by name, e.g. ``make_detector("msp", model)``."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; valid choices: {', '.join(sorted(DETECTORS))}")
    return DETECTORS[name](model, **options)

