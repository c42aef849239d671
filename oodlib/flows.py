"""A Glow-style normalising flow and its cache, for likelihood-based OOD detection (Liang et al., Sections 2.3
and 3.2, Appendix I).

Section 2.3 of the paper turns Algorithm 1 on Glow (Kingma & Dhariwal, 2018): with ``f(x) = NLL(x)`` the attack
makes an OOD image's negative log-likelihood match that of an in-distribution image, so a detector that
thresholds the likelihood (Nalisnick et al., 2019) — or the likelihood corrected by the input's complexity
(Serrà et al., 2020; :mod:`oodlib.detectors.glow`) — cannot tell them apart.

The model (:class:`Glow`) is the multi-scale architecture of Glow (Kingma & Dhariwal, 2018, Section 3 and
Figure 2): ``levels`` times { squeeze (2×2 space-to-channel), ``depth`` steps of flow [actnorm, invertible 1×1
convolution (LU-parametrised), affine coupling with a sigmoid scale], split half of the channels off to the
prior }. It is assembled from the components of the ``normflows`` package (Stimper et al., 2023):
``Squeeze``, ``GlowBlock``, ``Merge``, ``DiagGaussian`` and ``MultiscaleFlow``. One departure from Glow: the
factored-out latents have a fixed standard-normal prior (as in RealNVP, Dinh et al., 2017) rather than Glow's
learned conditional split prior — fewer parameters for the small face sets of the default profile.

Likelihoods are in **bits per dimension of an 8-bit image** (Theis et al., 2016): an image ``x`` in [0, 1] with
values ``k/255`` is the 256-bin histogram cell ``[k, k+1)/256``; with ``y = (255 x + u)/256 − 1/2`` the flow's
continuous density ``p(y)`` gives

    NLL(x) = (−log p(y) + D log 256) / (D log 2)        bits per dimension, D = C·H·W.

Training draws ``u ~ U[0, 1)`` (uniform dequantisation); evaluation uses the bin centre ``u = 1/2``, so the NLL
is a deterministic, differentiable function of the input — what Algorithm 1 needs.

Trained flows come from the store like the classifiers (:func:`oodlib.store.get_flow`,
:func:`oodlib.store.flow_info`; folder ``flows`` of the cache; the key also covers the installed ``normflows``
version); the training code is :mod:`oodlib.recipes.flow`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import normflows as nf
import torch
from torch import Tensor, nn

from . import _checks, data
from .utils import batched, module_device

__all__ = ["FlowSpec", "Glow", "N_BINS", "mean_nll", "nll_batched"]

N_BINS = 256
"""Number of intensity levels of an 8-bit image: the histogram cells of the discrete likelihood."""


# --------------------------------------------------------------------------------------------------- the model


class Glow(nn.Module):
    """A multi-scale Glow flow (Kingma & Dhariwal, 2018) on images of ``channels × image_size × image_size``.

    Parameters
    ----------
    channels : 1 or 3.
    image_size : side of the square input; divisible by ``2 ** levels``.
    levels : number of squeeze/split levels L (rosinality's glow-pytorch, the code the paper used: 4 at 64×64).
    depth : steps of flow K per level (Glow and glow-pytorch: 32).
    hidden : channels of the coupling networks (Glow and glow-pytorch: 512).
    affine : affine coupling (Glow's choice) if True, additive coupling (glow-pytorch's default) if False.

    Notes
    -----
    The model holds one piece of state besides its weights: Glow's data-dependent actnorm initialisation
    (Section 3.1 of Kingma & Dhariwal), made explicitly by :meth:`initialise` on a batch of training images.
    Evaluating an uninitialised flow raises instead of silently initialising on the evaluation batch.
    """

    def __init__(self, channels: int, image_size: int, levels: int = 2, depth: int = 4, hidden: int = 32,
                 affine: bool = True) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        if levels < 1 or depth < 1 or hidden < 1:
            raise ValueError(f"levels, depth and hidden must be positive, got {levels}, {depth}, {hidden}")
        if image_size % 2 ** levels:
            raise ValueError(f"image_size {image_size} is not divisible by 2**levels = {2 ** levels}")
        self.in_channels, self.image_size, self.levels = channels, image_size, levels
        self.n_dims = channels * image_size * image_size
        self.flow = _multiscale_flow(channels, image_size, levels, depth, hidden, affine)

    # -- the likelihood -------------------------------------------------------------------------------------

    @property
    def is_initialised(self) -> bool:
        """Whether every actnorm layer has had its data-dependent initialisation."""
        return all(bool(m.data_dep_init_done > 0) for m in self.modules() if isinstance(m, nf.flows.ActNorm))

    @torch.no_grad()
    def initialise(self, x: Tensor, generator: torch.Generator | None = None) -> "Glow":
        """Glow's data-dependent actnorm initialisation on images ``x`` (dequantised with ``generator``): each
        actnorm layer's scale and bias make its output zero-mean, unit-variance per channel on this batch."""
        for m in self.modules():
            if isinstance(m, nf.flows.ActNorm):
                m.data_dep_init_done.fill_(0.0)
        self.flow.log_prob(self.dequantise(x, generator), None)
        return self

    def dequantise(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The flow's input ``y = (255 x + u)/256 − 1/2``: uniform noise ``u`` drawn with ``generator``
        (training), or the bin centre ``u = 1/2`` when ``generator`` is None (evaluation, deterministic)."""
        if generator is None:
            u = torch.full_like(x, 0.5)
        else:
            u = torch.rand(x.shape, generator=generator).to(x)
        return (x * (N_BINS - 1) + u) / N_BINS - 0.5

    def log_prob(self, y: Tensor) -> Tensor:
        """``log p(y)`` in nats of flow inputs ``y`` (see :meth:`dequantise`), shape (N,)."""
        if not self.is_initialised:
            raise RuntimeError("the flow's actnorm layers are not initialised; call initialise(x_train) or load a "
                               "trained flow (oodlib.store.get_flow)")
        return self.flow.log_prob(y, None)

    def nll(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Negative log-likelihood in bits per dimension of images ``x`` in [0, 1], shape (N,).

        ``NLL = (−log p(y) + D log 256) / (D log 2)`` — the discrete 8-bit likelihood approximated by the
        density at the dequantised point times the bin volume ``256^−D``. Deterministic and differentiable in
        ``x`` when ``generator`` is None (the bin centre); the ``f(x) = NLL(x)`` of Section 3.2.
        """
        log_p = self.log_prob(self.dequantise(x, generator))
        return (-log_p / self.n_dims + math.log(N_BINS)) / math.log(2.0)

    def forward(self, x: Tensor) -> Tensor:
        """:meth:`nll` at the bin centres, shape (N,)."""
        return self.nll(x)

    # -- the bijection ----------------------------------------------------------------------------------------

    def to_latent(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """The latent code of flow inputs ``y`` (all levels' latents flattened and concatenated, shape (N, D))
        and ``log |det ∂z/∂y|`` (N,)."""
        zs, log_det = self.flow.inverse_and_log_det(y)
        return torch.cat([z.flatten(1) for z in zs], dim=1), log_det

    def from_latent(self, z: Tensor) -> Tensor:
        """Inverse of :meth:`to_latent`: flow inputs ``y`` from flattened latents ``z`` (N, D)."""
        shapes = [q.shape for q in self.flow.q0]
        sizes = [math.prod(s) for s in shapes]
        parts = [p.reshape(len(z), *s) for p, s in zip(z.split(sizes, dim=1), shapes)]
        y, _ = self.flow.forward_and_log_det(parts)
        return y

    def encode(self, x: Tensor) -> Tensor:
        """Latent code (N, D) of images ``x`` at the bin centres."""
        return self.to_latent(self.dequantise(x))[0]

    def decode(self, z: Tensor) -> Tensor:
        """Images in [0, 1] from latent codes: the inverse of :meth:`encode` (clamped to [0, 1])."""
        y = self.from_latent(z)
        return (((y + 0.5) * N_BINS - 0.5) / (N_BINS - 1)).clamp(0.0, 1.0)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 0.7, seed: int = 0) -> Tensor:
        """``n`` images drawn from the flow with the prior's standard deviation scaled by ``temperature``
        (Kingma & Dhariwal, 2018, Section 5.3, use 0.7), seeded."""
        n = _checks.integer(n, "n", minimum=1)
        temperature = _checks.number(temperature, "temperature", nonnegative=True)
        generator = torch.Generator().manual_seed(seed)
        device = module_device(self)
        z = temperature * torch.randn((n, self.n_dims), generator=generator)
        return self.decode(z.to(device))


def _multiscale_flow(channels: int, size: int, levels: int, depth: int, hidden: int, affine: bool
                     ) -> nf.MultiscaleFlow:
    """normflows' multi-scale Glow: level ``i`` (0 = coarsest) runs ``depth`` Glow blocks on
    ``channels·2^(levels+1-i)`` channels after a squeeze; levels ``i > 0`` split half of the channels off."""
    q0, flows, merges = [], [], []
    with warnings.catch_warnings():  # normflows' LU initialisation calls the deprecated torch.lu
        warnings.filterwarnings("ignore", message=".*torch.lu is deprecated.*")
        for i in range(levels):
            width = channels * 2 ** (levels + 1 - i)
            flows.append([nf.flows.GlowBlock(width, hidden, split_mode="channel", scale=affine)
                          for _ in range(depth)] + [nf.flows.Squeeze()])
            if i == 0:
                shape = (width, size // 2 ** levels, size // 2 ** levels)
            else:
                merges.append(nf.flows.Merge())
                shape = (channels * 2 ** (levels - i), size // 2 ** (levels - i), size // 2 ** (levels - i))
            q0.append(nf.distributions.DiagGaussian(shape, trainable=False))
    return nf.MultiscaleFlow(q0, flows, merges, class_cond=False)


# --------------------------------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class FlowSpec:
    """Everything that determines a trained :class:`Glow`.

    Data: the training split of ``dataset`` restricted to ``classes`` (the LFW subset's faces are class 0;
    CelebA has one class), at most ``train_limit`` images (all if None), resized to ``image_size`` and converted
    to ``channels``; ``hflip`` adds each image's mirror image. Architecture: ``levels``, ``depth``, ``hidden``,
    ``affine`` (see :class:`Glow`). Training (:func:`oodlib.recipes.flow.train_flow`): ``epochs`` passes of maximum
likelihood on uniformly
    dequantised images, Adam with learning rate ``lr`` and a cosine decay, mini-batches of ``batch_size`` in
    a seeded order, gradient norm clipped at ``clip``.
    """

    dataset: str = "lfw"
    classes: tuple[int, ...] = (0,)
    image_size: int = 24
    channels: int = 1
    levels: int = 2
    depth: int = 4
    hidden: int = 32
    affine: bool = True
    epochs: int = 40
    batch_size: int = 32
    lr: float = 5e-3
    clip: float = 50.0
    hflip: bool = True
    train_limit: int | None = None
    seed: int = 0

    @classmethod
    def make(cls, **kw: Any) -> "FlowSpec":
        """A spec from plain values (lists become tuples), as a notebook's parameters hold them."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()})

    def validate(self) -> None:
        if self.dataset not in data.DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; valid choices: {', '.join(data.DATASETS)}")
        for name in ("image_size", "levels", "depth", "hidden", "batch_size"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not (isinstance(self.epochs, int) and self.epochs >= 0):
            raise ValueError(f"epochs must be a non-negative integer, got {self.epochs!r}")
        if not (self.lr > 0 and self.clip > 0):
            raise ValueError(f"lr and clip must be positive, got {self.lr!r}, {self.clip!r}")
        if self.image_size % 2 ** self.levels:
            raise ValueError(f"image_size {self.image_size} is not divisible by 2**levels = {2 ** self.levels}")

    @property
    def label(self) -> str:
        return f"glow-{self.dataset}-{self.image_size}px-L{self.levels}K{self.depth}"

    def images(self, split: str = "train") -> data.ImageSet:
        """The in-distribution images of ``split``: the spec's classes, size and channels (``train_limit``
        applies to the training split only)."""
        return self._split(split).restrict_classes(self.classes)

    def other_images(self, split: str = "test") -> data.ImageSet:
        """The images of ``split`` in the dataset's *other* classes — the LFW subset's non-face crops, a natural
        OOD set from the same source; empty for a one-class dataset such as CelebA."""
        probe = data.load_dataset(self.dataset, split, image_size=self.image_size, channels=self.channels, limit=1)
        others = [c for c in range(len(probe.classes)) if c not in self.classes]
        if not others:  # decided from one image: a one-class dataset is not decoded in full
            return data.ImageSet(probe.x[:0], probe.y[:0], (), probe.name)
        return self._split(split).restrict_classes(others)

    def _split(self, split: str) -> data.ImageSet:
        limit = self.train_limit if split == "train" else None
        return data.load_dataset(self.dataset, split, image_size=self.image_size, channels=self.channels,
                                 limit=limit, seed=self.seed)

    def build(self) -> Glow:
        """The untrained (and uninitialised) flow, its weights drawn from ``seed``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return Glow(self.channels, self.image_size, self.levels, self.depth, self.hidden, self.affine)


@torch.no_grad()
def mean_nll(flow: Glow, x: Tensor, batch_size: int = 256) -> float:
    """Mean NLL (bits per dimension, bin centres) of images ``x`` under ``flow``."""
    return float(nll_batched(flow, x, batch_size).mean())


@torch.no_grad()
def nll_batched(flow: Glow, x: Tensor, batch_size: int = 256) -> Tensor:
    """:meth:`Glow.nll` of many images (N ≥ 1) without a graph, on the flow's device; returned on the CPU, (N,).
    Raises ``ValueError`` for an empty ``x`` or a non-positive ``batch_size``."""
    return batched(flow.nll, x, batch_size, module_device(flow))
