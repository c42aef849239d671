"""A convolutional auto-encoder and its cache, for reconstruction-based OOD detection (Liang et al., Section 2.4).

Section 2.4 of the paper discusses auto-encoder OOD detectors (Chalapathy & Chawla, 2019; Cohen et al., 2019):
the data flow is ``x → z → x̂`` and the OOD score is a distance between ``x`` and its reconstruction ``x̂``, e.g.
``||x − x̂||_2``. It argues that Algorithm 1 "has no effect" on such a detector: if the attack makes
``z_out = z_in``, then ``x̂_out = x̂_in`` and ``||x_out − x̂_out|| = ||x_out − x̂_in||`` is large.

This module provides

- :class:`ConvAutoEncoder` — encoder (two stride-2 convolutions and a linear layer to ``z``), decoder (a linear
  layer and two stride-2 transposed convolutions, sigmoid output), with ``encode``, ``decode``, ``reconstruct``,
  ``reconstruction_error`` and the objective of the adaptive attack, :meth:`ConvAutoEncoder.code_and_residual`;
- :class:`AutoEncoderSpec` — everything that determines a trained auto-encoder; the store trains and caches it
  like the classifiers (:func:`oodlib.store.get_autoencoder`, :func:`oodlib.store.autoencoder_info`; folder
  ``autoencoders`` of the cache), with the training code of :mod:`oodlib.recipes.autoencoder`;
- :func:`attack_autoencoder` — Algorithm 1 against the code ``z`` (the paper's Section 2.4 argument) or, beyond
  the paper, against the code and the reconstruction error together, with the quantities the argument is about;
  :func:`nearest_image_distance` tells whether an attacked image has drifted into the in-distribution set.

The detector itself is :class:`oodlib.detectors.reconstruction.ReconstructionError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from . import _checks, data
from .utils import batched, module_device
from .attack import REPRODUCTION_ROUTINE, AttackResult, ood_attack
from .metrics import auroc, fpr_at_95_tpr, mape, nearest_image_distance

__all__ = ["AutoEncoderAttack", "AutoEncoderSpec", "ConvAutoEncoder", "attack_autoencoder", "attack_summary",
           "nearest_image_distance"]


def _downsampled(size: int) -> int:
    """Side after two 3×3, stride-2, padding-1 convolutions."""
    for _ in range(2):
        size = (size - 1) // 2 + 1
    return size


class ConvAutoEncoder(nn.Module):
    """Convolutional auto-encoder ``x → z → x̂`` on images in [0, 1] (Section 2.4's data flow).

    Parameters
    ----------
    in_channels : int, default 1
        Image channels C.
    image_size : int, default 28
        Image side H = W.
    latent_dim : int, default 32
        Dimension of the code ``z``. A small code limits the auto-encoder's capacity, which Section 2.4 names as
        the way to keep the reconstruction error of OOD samples large.
    width : int, default 16
        Channels of the first convolution (the second has ``2 * width``).

    Notes
    -----
    Encoder: ``Conv(C→w, 3, s2) → ReLU → Conv(w→2w, 3, s2) → ReLU → Linear → z`` (no activation on ``z``).
    Decoder: ``Linear → ReLU → ConvT(2w→w, 4, s2) → ReLU → ConvT(w→C, 4, s2) → sigmoid``, cropped to
    ``image_size`` (the transposed convolutions give ``4 * ceil(image_size / 4)``).
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, latent_dim: int = 32, width: int = 16) -> None:
        super().__init__()
        self.in_channels, self.image_size, self.latent_dim = in_channels, image_size, latent_dim
        side = _downsampled(image_size)
        self._code_shape = (2 * width, side, side)
        flat = 2 * width * side * side
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(flat, latent_dim))
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, flat), nn.ReLU(), nn.Unflatten(1, self._code_shape),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(width, in_channels, 4, stride=2, padding=1), nn.Sigmoid())

    def encode(self, x: Tensor) -> Tensor:
        """The code ``z`` of images ``x`` (N, C, H, W), shape (N, latent_dim)."""
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """The reconstruction ``x̂`` of codes ``z``, shape (N, C, H, W), values in (0, 1)."""
        x_hat = self.decoder(z)
        return x_hat[..., :self.image_size, :self.image_size]

    def reconstruct(self, x: Tensor) -> Tensor:
        """``x̂ = decode(encode(x))``."""
        return self.decode(self.encode(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.reconstruct(x)

    def reconstruction_error(self, x: Tensor) -> Tensor:
        """``||x − x̂||_2`` per image, shape (N,): Section 2.4's OOD score with p = 2."""
        return (x - self.reconstruct(x)).flatten(1).norm(dim=1)

    def code_and_residual(self, x: Tensor, weight: float) -> Tensor:
        """``concat(z, weight · (x − x̂))`` per image, shape (N, latent_dim + C·H·W).

        The target of the adaptive attack (beyond the paper): matching ``concat(z_in, 0)`` with Algorithm 1
        minimises ``||z − z_in||² + weight² ||x − x̂||²``, i.e. it matches the code while keeping the
        reconstruction error — the detector's OOD score — low. ``weight = 0`` is the paper's attack on ``z``.
        """
        z = self.encode(x)
        residual = (x - self.decode(z)).flatten(1)
        return torch.cat([z, weight * residual], dim=1)


@dataclass(frozen=True)
class AutoEncoderSpec:
    """Everything that determines a trained :class:`ConvAutoEncoder`.

    Training (:func:`oodlib.recipes.autoencoder.train_autoencoder`): mean squared reconstruction error, Adam with
    learning rate ``lr`` and a cosine decay, mini-batches of ``batch_size`` in a seeded order, ``epochs`` passes over
    the training split of ``dataset`` (resized to ``image_size`` / ``channels`` when given).
    """

    dataset: str = "mnist5k"
    latent_dim: int = 32
    width: int = 16
    epochs: int = 10
    seed: int = 0
    lr: float = 3e-3
    batch_size: int = 64
    image_size: int | None = None
    channels: int | None = None

    def validate(self) -> None:
        if self.dataset not in data.DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; valid choices: {', '.join(data.DATASETS)}")
        for name in ("latent_dim", "width", "batch_size"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not (isinstance(self.epochs, int) and self.epochs >= 0):
            raise ValueError(f"epochs must be a non-negative integer, got {self.epochs!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")

    @property
    def label(self) -> str:
        """The start of the cached file names: ``ae-<dataset>-z<latent_dim>``."""
        return f"ae-{self.dataset}-z{self.latent_dim}"

    def training_data(self, split: str = "train") -> data.ImageSet:
        """The split the auto-encoder trains (``"train"``) or is evaluated (``"test"``) on."""
        return data.load_dataset(self.dataset, split, image_size=self.image_size, channels=self.channels)

    def build(self, in_channels: int, image_size: int) -> ConvAutoEncoder:
        """The untrained auto-encoder, initialised from ``seed``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return ConvAutoEncoder(in_channels, image_size, self.latent_dim, self.width)

    def untrained(self) -> ConvAutoEncoder:
        """The untrained auto-encoder sized for the spec's dataset (for counting sizes, Section 2.2)."""
        x = self.training_data("test").x
        return self.build(x.shape[1], x.shape[-1])


# ------------------------------------------------------------------------------- Section 2.4: the attacks


@dataclass
class AutoEncoderAttack:
    """Algorithm 1 against an auto-encoder, with what Section 2.4's argument is about.

    Attributes
    ----------
    x : torch.Tensor
        Attacked images ``x_out`` (N, C, H, W).
    residual_weight : float
        ``0`` for the paper's attack on ``z`` alone; ``> 0`` for the adaptive attack
        (:meth:`ConvAutoEncoder.code_and_residual`).
    code_mape : torch.Tensor
        MAPE (Section 3) between ``encode(x_out)`` and ``z_in``, (N,).
    reconstruction_error : torch.Tensor
        ``||x_out − x̂_out||_2``, the detector's OOD score, (N,).
    distance_to_reconstruction_in : torch.Tensor
        ``||x_out − x̂_in||_2``: equal to the reconstruction error once ``z_out = z_in`` (the paper's argument).
    distance_to_start : torch.Tensor
        ``||x_out − x'_out||_2`` (at most ε).
    result : oodlib.attack.AttackResult
        The attack's full result (histories, parameters).
    """

    x: Tensor
    residual_weight: float
    code_mape: Tensor
    reconstruction_error: Tensor
    distance_to_reconstruction_in: Tensor
    distance_to_start: Tensor
    result: AttackResult


_BATCH = 512
"""Images per batch where the attack evaluates the auto-encoder without a graph."""


class CodeAndResidual(nn.Module):
    """The adaptive attack's target as a module: ``ae.code_and_residual(x, weight)``, (N, latent_dim + C·H·W), so
    that the attack freezes the auto-encoder inside it (:func:`oodlib.attack.ood.attack_target`)."""

    def __init__(self, ae: ConvAutoEncoder, weight: float) -> None:
        super().__init__()
        self.ae, self.weight = ae, weight

    def forward(self, x: Tensor) -> Tensor:
        return self.ae.code_and_residual(x, self.weight)


def attack_autoencoder(ae: ConvAutoEncoder, x_in: Tensor, x_start: Tensor, *, eps: float, steps: int,
                       residual_weight: float = 0.0, seed: int = 0, **attack_options) -> AutoEncoderAttack:
    """Algorithm 1 on an auto-encoder's code, as the paper's Section 2.4 considers, or adaptively.

    With ``residual_weight = 0`` the attack matches ``z_out = encode(x_out)`` to ``z_in = encode(x_in)``; the
    paper argues that then ``x̂_out = x̂_in`` and the reconstruction error ``||x_out − x̂_in||`` stays large, so
    the detector catches the attacked image. With ``residual_weight = w > 0`` (beyond the paper) the attacked map
    is ``concat(z, w·(x − x̂))`` and the target ``concat(z_in, 0)``: the attack matches the code *and* keeps the
    reconstruction error low.

    Parameters
    ----------
    ae : ConvAutoEncoder
        The trained auto-encoder (frozen during the attack).
    x_in, x_start : torch.Tensor
        In-distribution images and start images ``x'_out`` (N, C, H, W), in [0, 1].
    eps, steps, seed, **attack_options
        Passed to :func:`oodlib.attack.ood_attack` (L2 ball of radius ``eps``); the routine is
        :data:`oodlib.attack.REPRODUCTION_ROUTINE` unless ``attack_options`` names another.
    residual_weight : float, default 0
        ``w`` above.
    """
    _checks.nonempty(x_in, "x_in")
    _checks.nonempty(x_start, "x_start")
    residual_weight = _checks.number(residual_weight, "residual_weight", nonnegative=True)
    attack_options.setdefault("routine", REPRODUCTION_ROUTINE)
    device = module_device(ae)
    with torch.no_grad():
        z_in = batched(ae.encode, x_in, _BATCH, device)
        x_hat_in = batched(ae.decode, z_in, _BATCH, device)
    if residual_weight == 0:
        result = ood_attack(ae.encode, None, x_start, z_in=z_in, eps=eps, steps=steps, seed=seed, **attack_options)
    else:
        target = torch.cat([z_in, torch.zeros(len(z_in), x_in[0].numel())], dim=1)
        result = ood_attack(CodeAndResidual(ae, residual_weight), None, x_start,
                            z_in=target, eps=eps, steps=steps, seed=seed, **attack_options)
    x_out = result.x.detach().cpu()
    with torch.no_grad():
        z_out = batched(ae.encode, x_out, _BATCH, device)
        error = batched(ae.reconstruction_error, x_out, _BATCH, device)
    return AutoEncoderAttack(x=x_out, residual_weight=residual_weight, code_mape=mape(z_out, z_in).float(),
                             reconstruction_error=error, distance_to_reconstruction_in=_distance(x_out, x_hat_in),
                             distance_to_start=_distance(x_out, x_start), result=result)


def _distance(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample L2 distance between two image batches (``b`` may hold one image)."""
    return (a.cpu() - b.cpu()).flatten(1).norm(dim=1)


def attack_summary(run: AutoEncoderAttack, score_in: Tensor, score_out: Tensor, reference: Tensor
                   ) -> dict[str, float]:
    """What one attack on the auto-encoder achieved (Section 2.4): the code match, the detector's separation of
    in-distribution from attacked images, and where the attacked images went.

    Parameters
    ----------
    run : AutoEncoderAttack
        The attack.
    score_in, score_out : torch.Tensor
        Detector in-scores of in-distribution images and of ``run.x``.
    reference : torch.Tensor
        In-distribution images for the nearest-image distance.

    Returns
    -------
    dict of str to float
        ``median_code_mape``, ``auroc`` (ID positive, in-score), ``fpr95`` (convention A),
        ``mean_reconstruction_error``, ``mean_distance_to_reconstruction_in`` and
        ``median_nearest_id_distance``.
    """
    return {"median_code_mape": float(run.code_mape.median()),
            "auroc": auroc(score_in, score_out),
            "fpr95": fpr_at_95_tpr(score_in, score_out, "A"),
            "mean_reconstruction_error": float(run.reconstruction_error.mean()),
            "mean_distance_to_reconstruction_in": float(run.distance_to_reconstruction_in.mean()),
            "median_nearest_id_distance": float(nearest_image_distance(run.x, reference).median())}
