"""BAL — Boundary Aware Learning (Pei, Zhang, Fan, Meng, *Out-of-distribution Detection with Boundary Aware
Learning*, ECCV 2022).

BAL keeps a pre-trained classifier frozen and learns, on its **penultimate features** f = h(x) (Eq. 3), a
conditional discriminator D(f, c) that separates in-distribution feature–label pairs from synthetic OOD ones
(Algorithm 1 of the paper):

- *trivial* OOD features (REM, Eqs. 4–5): uniform samples in the batch's per-dimension [min, max] box, with random
  labels;
- *hard* OOD features (RSM, Eq. 6): features made by a conditional generator G(z, c) and pushed by one FGSM step
  toward a lower discriminator score, with a Gaussian-distributed step ε;
- the discriminator's loss (Eq. 11) ``L_d = L_t + L_s + L_u``: the conditional-GAN loss L_t (Eq. 10), the
  *shuffle* loss L_s (Eq. 8: a real feature with a wrong label is negative) and the *uniform* loss L_u (Eq. 9:
  trivial OOD pairs are negative with weight λ_c = 0.7, hard OOD pairs with weight 1, real pairs positive);
- the generator's loss (Eq. 12) ``log(1 − D(G(z, c), c)) + λ · min_{f_c} ‖f_c − G(z, c)‖₁`` with λ = 0.01, the
  minimum over the real features of class c.

Inference (Algorithm 1, lines 15–19): p1, ĉ = the classifier's maximum softmax and its class; p2 = D(f, ĉ); the
in-score is p1 · p2.

Implementation choices the paper leaves open (and the authors' public code, a 2-D toy, does not settle): D and G
are three-layer MLPs taking the label one-hot encoded; features are standardised with the training features'
mean and standard deviation before D and G (a fixed per-dimension affine map, so the uniform box of Eq. 4 is the
same box); the negative terms of Eqs. 8–9 use the bounded binary cross-entropy ``−log(1 − D)`` of Eq. 10 (the
printed ``+log D`` is unbounded below for a sigmoid output); the FGSM step ε is drawn from ``|N(0.5, 0.25²)|`` in
standardised units; Adam (lr 2e-4, β = (0.5, 0.999)). BAL trains only the GAN, so the GAN is fitted by
:meth:`BAL.fit` on the frozen classifier's training features, like a detector's statistics.

Because BAL scores only the penultimate features and the classifier's head on them, an OOD attack that matches
those features (Algorithm 1 of Liang et al. with f = the penultimate layer) also matches D(f, ĉ) and p1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _checks
from ..detectors.base import ClassifierDetector, register_detector
from ..utils import batched, eval_mode, module_device

PAPER = "Pei, Zhang, Fan & Meng, Out-of-distribution Detection with Boundary Aware Learning (ECCV 2022)"


class ConditionalMLP(nn.Module):
    """``MLP([v, onehot(c)])``: three linear layers with LeakyReLU(0.2) — BAL's conditional generator
    (v = noise z, output a feature) and discriminator (v = a feature, output one logit)."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.net = nn.Sequential(nn.Linear(in_dim + num_classes, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, out_dim))

    def forward(self, v: Tensor, c: Tensor) -> Tensor:
        return self.net(torch.cat([v, F.one_hot(c, self.num_classes).to(v.dtype)], dim=1))


def _positive(logit: Tensor) -> Tensor:
    """Binary cross-entropy of D's logit to "in-distribution pair": ``−log D``."""
    return F.softplus(-logit).mean()


def _negative(logit: Tensor) -> Tensor:
    """Binary cross-entropy of D's logit to "OOD pair": ``−log(1 − D)``."""
    return F.softplus(logit).mean()


def shuffled_labels(c: Tensor, num_classes: int, generator: torch.Generator) -> Tensor:
    """The shuffle function T of Eq. 8: a label different from ``c`` for every sample, uniformly at random."""
    shift = torch.randint(1, num_classes, c.shape, generator=generator).to(c.device)
    return (c + shift) % num_classes


def uniform_box_samples(f: Tensor, generator: torch.Generator) -> Tensor:
    """Trivial OOD features (Eqs. 4–5): uniform samples in the batch's per-dimension [min, max] box, one per row
    of ``f``."""
    low, high = f.min(dim=0).values, f.max(dim=0).values
    u = torch.rand(f.shape, generator=generator).to(f.device)
    return low + (high - low) * u


def nearest_l1(f: Tensor, c: Tensor, reference: Tensor, labels: Tensor) -> Tensor:
    """``min_{f_c ∈ M_c} ‖f_c − f‖₁`` of Eq. 12 for every row of ``f``: the L1 distance to the nearest
    ``reference`` feature with the same label."""
    out = f.new_empty(len(f))
    for label in c.unique():
        rows = c == label
        out[rows] = torch.cdist(f[rows], reference[labels == label], p=1).min(dim=1).values
    return out


@register_detector
class BAL(ClassifierDetector):
    """Boundary Aware Learning — Pei et al., *Out-of-distribution Detection with Boundary Aware Learning*
    (ECCV 2022). In-score ``max softmax(x) · D(h(x), ĉ)`` with ĉ the predicted class (Algorithm 1, line 19).

    Parameters
    ----------
    model : the frozen pre-trained classifier (``features`` = the penultimate layer h, ``head`` its last layer).
    noise_dim, hidden : sizes of G's noise and of both MLPs' hidden layers.
    epochs, batch_size, lr : GAN training in :meth:`fit` (passes over the training features).
    lambda_c : weight of the trivial OOD pairs in the uniform loss (Eq. 9; the paper's 0.7).
    lambda_g : weight of the generator's L1 term (Eq. 12; the paper's 0.01).
    fgsm_eps_mean, fgsm_eps_std : the Gaussian of the hard-OOD FGSM step (Eq. 6), standardised units.
    seed : seeds the networks' initialisation and every random draw of :meth:`fit`.
    """

    name = "bal"
    paper = PAPER

    def __init__(self, model: nn.Module, *, noise_dim: int = 16, hidden: int = 128, epochs: int = 30,
                 batch_size: int = 128, lr: float = 2e-4, lambda_c: float = 0.7, lambda_g: float = 0.01,
                 fgsm_eps_mean: float = 0.5, fgsm_eps_std: float = 0.25, seed: int = 0) -> None:
        super().__init__(model)
        num_classes, dim = model.num_classes, model.latent_dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.generator = ConditionalMLP(noise_dim, num_classes, hidden, dim)
            self.discriminator = ConditionalMLP(dim, num_classes, hidden, 1)
        device = next(model.parameters()).device
        self.generator.to(device)
        self.discriminator.to(device)
        self.register_buffer("feature_mean", torch.zeros(dim, device=device))
        self.register_buffer("feature_std", torch.ones(dim, device=device))
        self.num_classes, self.noise_dim = num_classes, noise_dim
        self.epochs, self.batch_size, self.lr = epochs, batch_size, lr
        self.lambda_c, self.lambda_g = lambda_c, lambda_g
        self.fgsm_eps_mean, self.fgsm_eps_std, self.seed = fgsm_eps_mean, fgsm_eps_std, seed
        self.history: dict[str, list[float]] = {"loss_d": [], "loss_g": []}
        self.eval()  # the classifier is frozen (BAL never trains it) and D, G have no mode-dependent layers

    # ------------------------------------------------------------------------------------------------ inference

    def standardise(self, f: Tensor) -> Tensor:
        return (f - self.feature_mean) / self.feature_std

    def in_distribution_probability(self, z: Tensor, c: Tensor) -> Tensor:
        """p2 = D(f, c) for penultimate features ``z`` (unstandardised) and labels ``c``."""
        return torch.sigmoid(self.discriminator(self.standardise(z), c)).squeeze(1)

    def discriminator_score(self, x: Tensor) -> Tensor:
        """p2 = D(h(x), ĉ) of images ``x`` (Algorithm 1, line 18), ĉ the classifier's predicted class."""
        z = self.model.features(x)
        return self.in_distribution_probability(z, self.model.head(z).argmax(dim=1))

    def discriminator_score_batched(self, x: Tensor, batch_size: int | None = None) -> Tensor:
        """:meth:`discriminator_score` of many images, without a graph, in eval mode; float32 on the CPU, (N,)."""
        return self._batched(self.discriminator_score, x, batch_size)

    def score(self, x: Tensor) -> Tensor:
        z = self.model.features(x)
        probs = torch.softmax(self.model.head(z), dim=1)
        p1, c_hat = probs.max(dim=1)
        return p1 * self.in_distribution_probability(z, c_hat)

    # ------------------------------------------------------------------------------------------------ training

    @torch.no_grad()
    def _features(self, x: Tensor, batch_size: int = 512) -> Tensor:
        device = module_device(self.model)
        with eval_mode(self.model):
            return batched(self.model.features, x, batch_size, device).to(device)

    def fit(self, x: Tensor | None = None, y: Tensor | None = None) -> "BAL":
        """Train the conditional GAN (Algorithm 1, lines 1–14) on the frozen classifier's features of the
        in-distribution training images ``x`` (N, C, H, W) with their labels ``y`` (N,).

        Raises
        ------
        ValueError
            If ``x`` or ``y`` is missing, ``x`` is empty or ``y`` is not one label per image.
        TypeError
            If ``y`` does not hold integer labels.
        """
        if x is None or y is None:
            raise ValueError("BAL.fit needs the in-distribution training images and their labels")
        _checks.nonempty(x, "x")
        y = _checks.labels(y, len(x))
        z = self._features(x)
        device = z.device
        labels = y.to(device)
        self.feature_mean.copy_(z.mean(dim=0))
        self.feature_std.copy_(z.std(dim=0).clamp_min(1e-6))
        f_all = self.standardise(z)
        gen = torch.Generator().manual_seed(self.seed)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.lr, betas=(0.5, 0.999))
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=(0.5, 0.999))
        for _ in range(self.epochs):
            for idx in torch.randperm(len(f_all), generator=gen).split(self.batch_size):
                if len(idx) < 2:
                    continue
                idx = idx.to(device)
                self.history["loss_d"].append(self._discriminator_step(f_all[idx], labels[idx], opt_d, gen))
                self.history["loss_g"].append(self._generator_step(f_all, labels, len(idx), opt_g, gen))
        return self

    def _random_labels(self, n: int, gen: torch.Generator, device: torch.device) -> Tensor:
        return torch.randint(0, self.num_classes, (n,), generator=gen).to(device)

    def _noise(self, n: int, gen: torch.Generator, device: torch.device) -> Tensor:
        return torch.randn(n, self.noise_dim, generator=gen).to(device)

    def hard_ood(self, f_gen: Tensor, c: Tensor, gen: torch.Generator) -> Tensor:
        """RSM (Eq. 6): ``f̃ = f − ε·sign(∂D(f; c)/∂f)`` on generated features, ε ~ |N(mean, std²)| per sample."""
        f = f_gen.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.discriminator(f, c).sum(), f)
        eps = (self.fgsm_eps_mean + self.fgsm_eps_std * torch.randn(len(f), 1, generator=gen)).abs()
        return (f - eps.to(f.device) * grad.sign()).detach()

    def _discriminator_step(self, f: Tensor, c: Tensor, opt: torch.optim.Optimizer, gen: torch.Generator
                            ) -> float:
        n, device = len(f), f.device
        c_gen = self._random_labels(n, gen, device)
        with torch.no_grad():
            f_gen = self.generator(self._noise(n, gen, device), c_gen)
        f_hard = self.hard_ood(f_gen, c_gen, gen)
        f_trivial, c_trivial = uniform_box_samples(f, gen), self._random_labels(n, gen, device)
        d = self.discriminator
        real = _positive(d(f, c))
        loss_t = real + _negative(d(f_gen, c_gen))                                              # Eq. 10
        loss_s = _negative(d(f, shuffled_labels(c, self.num_classes, gen))) + real              # Eq. 8
        loss_u = self.lambda_c * _negative(d(f_trivial, c_trivial)) + _negative(d(f_hard, c_gen)) + real  # Eq. 9
        loss = loss_t + loss_s + loss_u                                                         # Eq. 11
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    def _generator_step(self, f_all: Tensor, labels: Tensor, n: int, opt: torch.optim.Optimizer,
                        gen: torch.Generator) -> float:
        device = f_all.device
        c = self._random_labels(n, gen, device)
        f_gen = self.generator(self._noise(n, gen, device), c)
        adversarial = -F.softplus(self.discriminator(f_gen, c)).mean()  # log(1 − D(G(z, c), c)), Eq. 12
        loss = adversarial + self.lambda_g * nearest_l1(f_gen, c, f_all, labels).mean()
        for p in self.discriminator.parameters():
            p.requires_grad_(False)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for p in self.discriminator.parameters():
            p.requires_grad_(True)
        return loss.item()
