"""The ``"confidence_calibrated"`` recipe: a classifier trained jointly with a GAN by the joint confidence loss of
Lee, Lee, Lee & Shin (ICLR 2018; the attack paper's Appendix G), with the GAN's networks.

Following the reference code (``alinlab/Confident_classifier``, ``run_joint_confidence.py``):

- discriminator D: the usual GAN loss, real images against generated ones;
- generator G: the GAN loss plus ``β · KL(U ‖ softmax(f(G(z))))``, pulling its samples to where f is uncertain;
- classifier f: ``NLL(f(x), y) + β · KL(U ‖ softmax(f(G(z))))`` (:func:`oodlib.losses.confidence_loss`).

The reference writes the KL term as ``F.kl_div(log_softmax(f(G(z))), U) · K`` — the mean over the N·K entries
times K, i.e. the per-sample ``KL(U ‖ p)`` averaged over the batch, as :func:`oodlib.losses.kl_from_uniform`
computes it. β = 0.1 for CIFAR-10 in the reference script (its default, used for SVHN, is 1); Adam with learning
rate 2e-4 for all three networks (betas 0.5/0.999 for G and D). The detector is
:class:`oodlib.detectors.confidence.ConfidenceCalibrated`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import ImageSet
from ..losses import BETA, confidence_loss, kl_from_uniform
from ..training import ModelSpec, fit, register_recipe, tail_mean
from ..utils import eval_mode

__all__ = ["BETA", "Discriminator", "GAN_LR", "Generator", "train_confidence_calibrated"]

GAN_LR = 2e-4
"""Adam learning rate of the generator and the discriminator (reference; betas 0.5/0.999 as DCGAN)."""


def _dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation (Radford et al. 2016): conv weights N(0, 0.02), batch-norm scales N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _check_gan_size(image_size: int) -> int:
    if image_size % 4 or image_size < 4:
        raise ValueError(f"the DCGAN needs an image side divisible by 4, got {image_size}")
    return image_size // 4


class Generator(nn.Module):
    """A small DCGAN generator (Radford et al. 2016; the reference uses the PyTorch DCGAN example): latent
    ``z`` (N, latent_dim) → transposed convolutions (widths 2w, w) with batch norm and ReLU → a sigmoid image
    (N, channels, image_size, image_size) in [0, 1]. ``image_size`` must be divisible by 4 (else ``ValueError``)."""

    def __init__(self, latent_dim: int, channels: int, image_size: int, width: int = 16) -> None:
        super().__init__()
        k = _check_gan_size(image_size)
        self.latent_dim = latent_dim
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 2 * width, k, 1, 0, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Sigmoid())
        self.apply(_dcgan_init)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.view(z.shape[0], self.latent_dim, 1, 1))


class Discriminator(nn.Module):
    """A small DCGAN discriminator: strided convolutions (widths w, 2w) with leaky ReLU (0.2) and batch norm,
    then one convolution over the remaining map to a real-vs-generated **logit** per image, shape (N,)."""

    def __init__(self, channels: int, image_size: int, width: int = 16) -> None:
        super().__init__()
        k = _check_gan_size(image_size)
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 1, k, 1, 0, bias=False))
        self.apply(_dcgan_init)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten()


def _gan_step(model: nn.Module, generator: Generator, discriminator: Discriminator, x: Tensor, z: Tensor,
              beta: float, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer) -> tuple[float, float]:
    """Steps (1) and (2) of the reference loop: update D on real against generated images, then G on the GAN
    loss plus ``β · KL(U ‖ softmax(f(G(z))))``. Returns (D loss, G's KL term). The classifier's gradients from
    this step are discarded by the classifier step that follows."""
    real, generated = torch.ones(len(x), device=x.device), torch.zeros(len(z), device=x.device)
    fake = generator(z)
    loss_d = (F.binary_cross_entropy_with_logits(discriminator(x), real)
              + F.binary_cross_entropy_with_logits(discriminator(fake.detach()), generated))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    with eval_mode(model):  # batch norm uses (and keeps) its running statistics while G is updated
        kl = kl_from_uniform(model(fake)).mean()
    loss_g = F.binary_cross_entropy_with_logits(discriminator(fake), torch.ones_like(generated)) + beta * kl
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return loss_d.item(), kl.item()


@register_recipe("confidence_calibrated")
def train_confidence_calibrated(model: nn.Module, train: ImageSet, spec: ModelSpec, device: torch.device
                                ) -> dict:
    """Train ``model`` jointly with a small DCGAN by the joint confidence loss of Lee et al. (2018), following the
    reference's ``run_joint_confidence.py`` loop: D step, G step, classifier step on every batch.

    Recipe options: ``beta`` (default :data:`~oodlib.losses.BETA`); ``lr`` of the classifier (default 3e-3, as the
    ``"standard"`` recipe; the reference uses 2e-4 over 100 epochs — a larger rate for the small budget); ``gan_lr``
    (default :data:`GAN_LR`); ``batch_size`` (default 64); ``gan_latent`` (latent size, default 64; reference 100)
    and ``gan_width`` w (default 16: generator stages of 2w and w channels; the reference's three stages have 512,
    256 and 128). The classifier's rate decays with a cosine over ``spec.epochs``; G and D keep theirs. Generator,
    discriminator and latent draws are seeded by ``spec.seed``. Only the classifier is kept.

    Batch norm: the reference VGG13 has none. For a classifier with batch norm, the classifier step forwards the
    real and the generated batch together (as Outlier Exposure does), and the generator step runs the classifier
    in eval mode. Forwarding generated batches alone in train mode, as the reference loop does, fills the
    running statistics with those of generated images; in our trials on MNIST-5k that cost tens of points of
    test accuracy.

    Returns
    -------
    dict
        ``final_train_loss`` (classifier, mean of the last 10 steps), ``final_kl_generated`` (its KL term on
        generated images), ``final_discriminator_loss`` and ``train_seconds``.
    """
    beta, lr, gan_lr = spec.option("beta", BETA), spec.option("lr", 3e-3), spec.option("gan_lr", GAN_LR)
    batch_size, latent = spec.option("batch_size", 64), spec.option("gan_latent", 64)
    width, channels, size = spec.option("gan_width", 16), train.x.shape[1], train.x.shape[-1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        generator = Generator(latent, channels, size, width).to(device)
        discriminator = Discriminator(channels, size, width).to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=gan_lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=gan_lr, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(spec.seed)
    x_all, y_all = train.x.to(device), train.y.to(device)
    kl_generated, loss_discriminator = [], []
    generator.train()
    discriminator.train()

    def step_loss(step: int, idx: Tensor) -> Tensor:
        """Steps (1) and (2) on G and D, then the classifier's joint confidence loss (step (3), taken by fit)."""
        x, y = x_all[idx.to(device)], y_all[idx.to(device)]
        z1, z2 = torch.randn((2, len(idx), latent), generator=gen).to(device)
        loss_d, _ = _gan_step(model, generator, discriminator, x, z1, beta, opt_g, opt_d)
        with torch.no_grad():
            generated = generator(z2)
        logits = model(torch.cat([x, generated]))
        logits_generated = logits[len(idx):]
        kl_generated.append(kl_from_uniform(logits_generated.detach()).mean().item())
        loss_discriminator.append(loss_d)
        return confidence_loss(logits[:len(idx)], y, logits_generated, beta)

    facts = fit(model, step_loss, n_examples=len(train), epochs=spec.epochs, batch_size=batch_size, lr=lr,
                generator=gen)
    return {**facts, "final_kl_generated": tail_mean(kl_generated),
            "final_discriminator_loss": tail_mean(loss_discriminator)}
