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

Trained flows are cached like the classifiers of :mod:`oodlib.store` (same cache root, folder ``flows``): the key
hashes the :class:`FlowSpec`, this module's and ``data.py``'s / ``training.py``'s source, the installed
``normflows`` version, the data's fingerprint and the torch version; writes are atomic, a per-key file lock
makes concurrent callers train once, and the weights' SHA-256 is checked before a ``weights_only=True`` load.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import normflows as nf
import torch
from torch import Tensor, nn

from . import _checks, data, models, store, training

__all__ = ["FlowSpec", "Glow", "N_BINS", "flow_cache_key", "flow_info", "get_flow", "mean_nll", "nll_batched",
           "train_flow"]

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
                               "trained flow (get_flow)")
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
        device = next(self.parameters()).device
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
    ``affine`` (see :class:`Glow`). Training (:func:`train_flow`): ``epochs`` passes of maximum likelihood on uniformly
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


# --------------------------------------------------------------------------------------------------- training


def train_flow(flow: Glow, x: Tensor, spec: FlowSpec, device: torch.device) -> dict:
    """Maximum-likelihood training of ``flow`` in place on images ``x`` (N, C, H, W) in [0, 1].

    The loss is the mean NLL in bits per dimension of uniformly dequantised images (Theis et al., 2016); the
    actnorm layers are initialised on (up to 512 of) the dequantised training images first. Optimiser and
    schedule as :class:`FlowSpec` says; every random draw (batch order, dequantisation noise) comes from one
    generator seeded with ``spec.seed``.

    Returns
    -------
    dict
        ``final_train_bpd`` (mean over the last ten mini-batches, dequantised), ``train_seconds``,
        ``n_train`` (images per epoch, mirror images included).
    """
    x = torch.cat([x, x.flip(-1)]) if spec.hflip else x
    gen = torch.Generator().manual_seed(spec.seed)
    x_all = x.to(device)
    start = time.perf_counter()
    flow.initialise(x_all[torch.randperm(len(x_all), generator=gen)[:512].to(device)], gen)

    def step_loss(step: int, idx: Tensor) -> Tensor:
        return flow.nll(x_all[idx.to(device)], gen).mean()

    facts = training.fit(flow, step_loss, n_examples=len(x_all), epochs=spec.epochs, batch_size=spec.batch_size,
                         lr=spec.lr, generator=gen, clip_norm=spec.clip, loss_name="final_train_bpd")
    return {**facts, "train_seconds": time.perf_counter() - start, "n_train": len(x_all)}


@torch.no_grad()
def mean_nll(flow: Glow, x: Tensor, batch_size: int = 256) -> float:
    """Mean NLL (bits per dimension, bin centres) of images ``x`` under ``flow``."""
    return float(nll_batched(flow, x, batch_size).mean())


@torch.no_grad()
def nll_batched(flow: Glow, x: Tensor, batch_size: int = 256) -> Tensor:
    """:meth:`Glow.nll` of many images (N ≥ 1) without a graph, on the flow's device; returned on the CPU."""
    _checks.nonempty(x, "x")
    batch_size = _checks.integer(batch_size, "batch_size", minimum=1)
    device = next(flow.parameters()).device
    return torch.cat([flow.nll(x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


# --------------------------------------------------------------------------------------------------- the cache


def flow_cache_key(spec: FlowSpec) -> str:
    """Hash of the spec, the code that trains the flow (this module, ``data.py``, ``training.py``), the
    ``normflows`` version, the data's fingerprint and the torch version."""
    h = hashlib.sha256()
    for path in sorted({Path(__file__), Path(data.__file__), Path(training.__file__)}):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    payload = {"spec": asdict(spec), "code": h.hexdigest(), "normflows": metadata.version("normflows"),
               "data": data.fingerprint(spec.dataset), "torch": torch.__version__.split("+")[0]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _stem(spec: FlowSpec) -> str:
    return f"{spec.label}-{flow_cache_key(spec)}"


def _train(spec: FlowSpec, device: torch.device) -> tuple[Glow, dict]:
    """Train the flow of ``spec`` on ``device``; returns it and the facts to store (train/test bits per
    dimension, time, sizes)."""
    train, test = spec.images("train"), spec.images("test")
    flow = spec.build().to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        facts = train_flow(flow, train.x, spec, device)
    facts["train_bpd"] = mean_nll(flow, train.x)
    facts["test_bpd"] = mean_nll(flow, test.x)
    facts["n_test"] = len(test)
    facts["n_parameters"] = sum(p.numel() for p in flow.parameters())
    return flow, {"spec": asdict(spec), "key": flow_cache_key(spec), **facts}


def get_flow(spec: FlowSpec | None = None, device: str | torch.device = "auto", **spec_kw: Any) -> Glow:
    """The trained flow for ``spec`` (or ``FlowSpec.make(**spec_kw)``) in eval mode on ``device``.

    Loaded from ``<cache>/flows`` when cached and intact, else trained once (a file lock makes concurrent
    callers wait for the first) and stored atomically (:func:`oodlib.store.cached_module`); a freshly trained
    flow is read back from the store, so a fresh and a cached flow take the same path.
    """
    spec = spec if spec is not None else FlowSpec.make(**spec_kw)
    spec.validate()
    dev = models.resolve_device(device)
    flow = store.cached_module(store.cache_dir() / "flows", _stem(spec), lambda meta: spec.build(),
                               lambda: _train(spec, dev), kind="flow", read_back=True)
    return flow.to(dev).eval()


def flow_info(spec: FlowSpec) -> dict | None:
    """The facts recorded when the flow was trained (train/test bits per dimension, training time, ...), or
    None when it is not cached."""
    _, meta_path, _ = store.cached_paths(store.cache_dir() / "flows", _stem(spec))
    return json.loads(meta_path.read_text()) if meta_path.exists() else None

