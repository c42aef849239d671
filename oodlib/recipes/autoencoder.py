"""Training the convolutional auto-encoder of Section 2.4 (:class:`oodlib.autoencoder.ConvAutoEncoder`): mean
squared reconstruction error on the shared loop, and :func:`train`, which the store's auto-encoder cache calls."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..autoencoder import AutoEncoderSpec, ConvAutoEncoder
from ..data import ImageSet
from ..training import fit
from ..utils import batched, module_device


def train_autoencoder(model: ConvAutoEncoder, train: ImageSet, spec: AutoEncoderSpec, device: torch.device) -> dict:
    """Train ``model`` in place to reconstruct ``train.x`` (mean squared error; see
    :class:`~oodlib.autoencoder.AutoEncoderSpec`).

    Returns
    -------
    dict
        ``final_train_mse`` (mean over the last ten mini-batches) and ``train_seconds``.
    """
    x_all = train.x.to(device)

    def step_loss(step: int, idx: Tensor) -> Tensor:
        batch = x_all[idx.to(device)]
        return F.mse_loss(model(batch), batch)

    return fit(model, step_loss, n_examples=len(train), epochs=spec.epochs, batch_size=spec.batch_size,
               lr=spec.lr, generator=torch.Generator().manual_seed(spec.seed), loss_name="final_train_mse")


@torch.no_grad()
def mean_reconstruction_mse(model: ConvAutoEncoder, x: Tensor, batch_size: int = 512) -> float:
    """Mean squared reconstruction error per value over images ``x`` (N, C, H, W), N ≥ 1 (the per-batch sums
    added in order as Python floats)."""
    sums = batched(lambda b: F.mse_loss(model(b), b, reduction="sum").reshape(1), x, batch_size,
                   module_device(model))
    return sum(sums.tolist()) / max(x.numel(), 1)


def train(spec: AutoEncoderSpec, device: torch.device) -> tuple[ConvAutoEncoder, dict]:
    """Train the auto-encoder of ``spec`` on ``device`` (the global RNG seeded with ``spec.seed`` and restored
    afterwards); returns it and the facts to store: test MSE, training time, sizes."""
    train_images, test = spec.training_data("train"), spec.training_data("test")
    in_channels, image_size = train_images.x.shape[1], train_images.x.shape[-1]
    model = spec.build(in_channels, image_size).to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        facts = train_autoencoder(model, train_images, spec, device)
    facts["test_mse"] = mean_reconstruction_mse(model, test.x)
    return model, {"in_channels": in_channels, "image_size": image_size, **facts}
