"""A convolutional auto-encoder and its cache, for reconstruction-based OOD detection (Liang et al., Section 2.4).

Section 2.4 of the paper discusses auto-encoder OOD detectors (Chalapathy & Chawla, 2019; Cohen et al., 2019):
the data flow is ``x → z → x̂`` and the OOD score is a distance between ``x`` and its reconstruction ``x̂``, e.g.
``||x − x̂||_2``. It argues that Algorithm 1 "has no effect" on such a detector: if the attack makes
``z_out = z_in``, then ``x̂_out = x̂_in`` and ``||x_out − x̂_out|| = ||x_out − x̂_in||`` is large.

This module provides

- :class:`ConvAutoEncoder` — encoder (two stride-2 convolutions and a linear layer to ``z``), decoder (a linear
  layer and two stride-2 transposed convolutions, sigmoid output), with ``encode``, ``decode``, ``reconstruct``,
  ``reconstruction_error`` and the objective of the adaptive attack, :meth:`ConvAutoEncoder.code_and_residual`;
- :class:`AutoEncoderSpec` and :func:`get_autoencoder` — the trained auto-encoder, cached on disk like the
  classifiers of :mod:`oodlib.store` (same cache root, key over the spec, the training code, the data's
  fingerprint and the torch version; atomic writes; a per-key file lock; SHA-256 checked before a
  ``weights_only=True`` load). The auto-encoder has its own small cache folder because the model store builds
  classifiers only (``models.ARCHS``);
- :func:`attack_autoencoder` — Algorithm 1 against the code ``z`` (the paper's Section 2.4 argument) or, beyond
  the paper, against the code and the reconstruction error together, with the quantities the argument is about;
  :func:`nearest_image_distance` tells whether an attacked image has drifted into the in-distribution set.

The detector itself is :class:`oodlib.detectors.reconstruction.ReconstructionError`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _checks, data, models, store, training
from .attack import AttackResult, ood_attack
from .metrics import auroc, fpr_at_95_tpr, mape, nearest_image_distance

__all__ = ["AutoEncoderAttack", "AutoEncoderSpec", "ConvAutoEncoder", "attack_autoencoder", "attack_summary",
           "autoencoder_cache_key", "autoencoder_info", "get_autoencoder", "nearest_image_distance",
           "train_autoencoder"]


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

    Training (:func:`train_autoencoder`): mean squared reconstruction error, Adam with learning rate ``lr`` and a
    cosine decay, mini-batches of ``batch_size`` in a seeded order, ``epochs`` passes over the training split of
    ``dataset`` (resized to ``image_size`` / ``channels`` when given).
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


def train_autoencoder(model: ConvAutoEncoder, train: data.ImageSet, spec: AutoEncoderSpec,
                      device: torch.device) -> dict:
    """Train ``model`` in place to reconstruct ``train.x`` (mean squared error; see :class:`AutoEncoderSpec`).

    Returns
    -------
    dict
        ``final_train_mse`` (mean over the last ten mini-batches) and ``train_seconds``.
    """
    x_all = train.x.to(device)

    def step_loss(step: int, idx: Tensor) -> Tensor:
        batch = x_all[idx.to(device)]
        return F.mse_loss(model(batch), batch)

    return training.fit(model, step_loss, n_examples=len(train), epochs=spec.epochs, batch_size=spec.batch_size,
                        lr=spec.lr, generator=torch.Generator().manual_seed(spec.seed), loss_name="final_train_mse")


@torch.no_grad()
def _mean_reconstruction_mse(model: ConvAutoEncoder, x: Tensor, batch_size: int = 512) -> float:
    """Mean squared reconstruction error per value over ``x``."""
    device = next(model.parameters()).device
    total = sum(F.mse_loss(model(x[i:i + batch_size].to(device)), x[i:i + batch_size].to(device),
                           reduction="sum").item() for i in range(0, len(x), batch_size))
    return total / max(x.numel(), 1)


def autoencoder_cache_key(spec: AutoEncoderSpec) -> str:
    """Hash of the spec, the training code (this module, ``training.py``, ``data.py``), the data's fingerprint
    and the torch version."""
    h = hashlib.sha256()
    for module in (data, training):
        h.update(Path(module.__file__).read_bytes())
    h.update(Path(__file__).read_bytes())
    payload = {"spec": asdict(spec), "code": h.hexdigest(), "data": data.fingerprint(spec.dataset),
               "torch": torch.__version__.split("+")[0]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _stem(spec: AutoEncoderSpec) -> str:
    return f"ae-{spec.dataset}-z{spec.latent_dim}-{autoencoder_cache_key(spec)}"


def _train(spec: AutoEncoderSpec, device: torch.device) -> tuple[ConvAutoEncoder, dict]:
    """Train the auto-encoder of ``spec``; returns it and the facts to store (test MSE, training time, sizes)."""
    train, test = spec.training_data("train"), spec.training_data("test")
    in_channels, image_size = train.x.shape[1], train.x.shape[-1]
    model = spec.build(in_channels, image_size).to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        facts = train_autoencoder(model, train, spec, device)
    facts["test_mse"] = _mean_reconstruction_mse(model, test.x)
    return model, {"spec": asdict(spec), "key": autoencoder_cache_key(spec), "in_channels": in_channels,
                   "image_size": image_size, **facts}


def get_autoencoder(spec: AutoEncoderSpec | None = None, device: str | torch.device = "auto", **spec_kw
                    ) -> ConvAutoEncoder:
    """The trained auto-encoder for ``spec`` (or ``AutoEncoderSpec(**spec_kw)``) in eval mode on ``device``.

    Loaded from ``<cache>/autoencoders`` when cached and intact, else trained once (a file lock makes concurrent
    callers wait for the first) and stored atomically (:func:`oodlib.store.cached_module`).
    """
    spec = spec if spec is not None else AutoEncoderSpec(**spec_kw)
    spec.validate()
    dev = models.resolve_device(device)
    model = store.cached_module(store.cache_dir() / "autoencoders", _stem(spec),
                                lambda meta: spec.build(meta["in_channels"], meta["image_size"]),
                                lambda: _train(spec, dev), kind="auto-encoder")
    return model.to(dev).eval()


def autoencoder_info(spec: AutoEncoderSpec) -> dict | None:
    """The facts recorded when the auto-encoder was trained (test MSE, training time, ...), or None."""
    _, meta_path, _ = store.cached_paths(store.cache_dir() / "autoencoders", _stem(spec))
    return json.loads(meta_path.read_text()) if meta_path.exists() else None


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
        Passed to :func:`oodlib.attack.ood_attack` (L2 ball of radius ``eps``).
    residual_weight : float, default 0
        ``w`` above.
    """
    _checks.nonempty(x_in, "x_in")
    _checks.nonempty(x_start, "x_start")
    residual_weight = _checks.number(residual_weight, "residual_weight", nonnegative=True)
    device = next(ae.parameters()).device
    with torch.no_grad():
        z_in = _batched(ae.encode, x_in, device)
        x_hat_in = _batched(ae.decode, z_in, device)
    if residual_weight == 0:
        result = ood_attack(ae.encode, None, x_start, z_in=z_in, eps=eps, steps=steps, seed=seed, **attack_options)
    else:
        target = torch.cat([z_in, torch.zeros(len(z_in), x_in[0].numel())], dim=1)
        result = ood_attack(CodeAndResidual(ae, residual_weight), None, x_start,
                            z_in=target, eps=eps, steps=steps, seed=seed, **attack_options)
    x_out = result.x.detach().cpu()
    with torch.no_grad():
        z_out = _batched(ae.encode, x_out, device)
        error = _batched(ae.reconstruction_error, x_out, device)
    return AutoEncoderAttack(x=x_out, residual_weight=residual_weight, code_mape=mape(z_out, z_in).float(),
                             reconstruction_error=error, distance_to_reconstruction_in=_distance(x_out, x_hat_in),
                             distance_to_start=_distance(x_out, x_start), result=result)


def _batched(fn, x: Tensor, device: torch.device, batch_size: int = 512) -> Tensor:
    """``fn`` over ``x`` in batches on ``device``, returned on the CPU."""
    return torch.cat([fn(x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


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
