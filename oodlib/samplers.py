"""Samplers from a classifier read as an energy-based model (JEM, Grathwohl et al., ICLR 2020; Appendix J):
stochastic-gradient Langevin dynamics on ``log p(x) = logsumexp_y f(x)[y]`` and JEM's persistent replay buffer.

The ``"jem"`` recipe (:mod:`oodlib.recipes.jem`) trains with them; Appendix J draws images with
:func:`sample_images`. Imports only torch and the small base layer (:mod:`oodlib.losses`, :mod:`oodlib.utils`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .losses import log_px_gradient
from .utils import eval_mode, module_device


def sgld(model: nn.Module, x: Tensor, *, steps: int, step_size: float, noise: float, generator: torch.Generator,
         clamp: bool = True) -> Tensor:
    """Stochastic-gradient Langevin dynamics on ``log p(x)`` as JEM runs it (Grathwohl et al. 2020, Eq. 7):
    ``x ← x + α ∂ log p(x)/∂x + σ ξ``, ξ ~ N(0, I), ``steps`` times with α = ``step_size``, σ = ``noise``
    (JEM decouples α from σ instead of using σ = √(2α)).

    ``x``: chain starts (N, C, H, W) on the model's device. ``clamp`` keeps the chain in the image range [0, 1]
    after each step (our classifiers see only [0, 1] images; the JEM code does not clamp). The model's
    parameters receive no gradient; the chain is returned detached, shape (N, C, H, W).
    """
    x = x.detach()
    for _ in range(steps):
        drift = log_px_gradient(model, x)
        x = x + step_size * drift + noise * torch.randn(x.shape, generator=generator).to(x.device)
        x = x.clamp(0, 1) if clamp else x
    return x.detach()


class ReplayBuffer:
    """The persistent SGLD buffer of JEM (after Du & Mordatch, 2019): ``size`` images of ``shape`` (C, H, W)
    initialised uniformly in [0, 1] on the CPU; a batch continues stored chains, except that each chain restarts
    from fresh uniform noise with probability ``reinit_freq``. Raises ``ValueError`` for ``size < 1``."""

    def __init__(self, size: int, shape: tuple[int, ...], generator: torch.Generator) -> None:
        if size < 1:
            raise ValueError(f"the replay buffer needs at least one image, got size {size}")
        self.generator = generator
        self.images = torch.rand((size, *shape), generator=generator)

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, n: int, reinit_freq: float) -> tuple[Tensor, Tensor]:
        """``n`` chain starts (n, C, H, W) and their buffer indices (n,)."""
        idx = torch.randint(len(self), (n,), generator=self.generator)
        x = self.images[idx].clone()
        fresh = torch.rand(n, generator=self.generator) < reinit_freq
        x[fresh] = torch.rand((int(fresh.sum()), *x.shape[1:]), generator=self.generator)
        return x, idx

    def store(self, idx: Tensor, x: Tensor) -> None:
        """Write the chains' new states back to their slots."""
        self.images[idx] = x.detach().cpu()


def sample_images(model: nn.Module, n: int, *, steps: int, step_size: float = 1.0, noise: float = 0.01,
                  shape: tuple[int, ...] | None = None, seed: int = 0) -> Tensor:
    """``n`` images drawn by SGLD from uniform noise (short-run chains), shape (n, C, H, W), on the CPU, with
    ``model`` in eval mode (its own modes are restored afterwards).

    With a model trained against a persistent buffer, chains from fresh noise need many more steps than the
    training chains to look like data; the JEM paper shows buffer samples. ``shape`` defaults to the model's
    ``(in_channels, image_size, image_size)``.
    """
    gen = torch.Generator().manual_seed(seed)
    shape = shape or (model.in_channels, model.image_size, model.image_size)
    with eval_mode(model):
        x = sgld(model, torch.rand((n, *shape), generator=gen).to(module_device(model)), steps=steps,
                 step_size=step_size, noise=noise, generator=gen)
    return x.cpu()
