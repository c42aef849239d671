"""The small-ball threat models of the robust-detector papers, beside Algorithm 1.

ATOM (Chen et al., ECML-PKDD 2021), ALOE (Chen et al., arXiv 2003.09711) and AOE (Botschen et al., CVPR 2025
workshop) evaluate a detector against an attacker who perturbs an input inside a small L∞ ball so as to move the
detector's score: an OOD input is pushed to look in-distribution (its in-score raised), and in ALOE also an
in-distribution input is pushed to look OOD (its in-score lowered). The OOD attack of Liang et al.
(:mod:`oodlib.attack.ood`) is a different threat: it matches an in-distribution image's representation inside a
large L2 ball. This module gives the seeds' threat models with the settings of their evaluations
(``shared/reference/defenses.md``):

- :func:`atom_threat` — L∞ PGD on OOD inputs, ε = 8/255, 40 steps of 1/255, random start, the perturbation
  rounded to whole 8-bit levels (ATOM's evaluation);
- :func:`aloe_threat` — L∞ PGD with ε = 1/255 and 10 steps on both the in-distribution inputs (lowering their
  in-score) and the OOD inputs (raising it) (ALOE's evaluation);
- :func:`fgsm` with :class:`EnergyObjective` — AOE's threat, one FGSM step that lowers an outlier's energy
  E(x) = −logsumexp(logits).

All of them are built on :func:`pgd_linf`, which is batched, deterministic for a given seed, and puts the module
behind the objective in eval mode with frozen parameters for the attack (restored afterwards, as
:func:`oodlib.attack.ood.frozen` does for Algorithm 1).

Non-finite gradients follow Algorithm 1's policy (:func:`oodlib.attack.ood_attack`): a sample whose input
gradient holds NaN or ±inf gets a zero step in that iteration, the count per sample is kept
(:attr:`PGDResult.nonfinite_steps`) and one :class:`~oodlib.attack.ood.NonFiniteGradientWarning` names the samples
after the attack; a returned image is never non-finite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from .. import _checks
from .ood import AttackedSamples, _warn_nonfinite, _zero_nonfinite_rows, attack_device, attack_target, frozen

Objective = Callable[[Tensor], Tensor]
"""A differentiable map from images (N, C, H, W) to one value per image (N,)."""

PIXEL_LEVELS = 255
ATOM_EPS, ATOM_STEPS, ATOM_STEP_SIZE = 8 / 255, 40, 1 / 255
ALOE_EPS, ALOE_STEPS = 1 / 255, 10


@dataclass
class PGDResult(AttackedSamples):
    """What :func:`pgd_linf` returns.

    Attributes
    ----------
    x : the attacked images, on the input's device.
    objective : the objective of the returned images, shape (N,).
    objective_start : the objective of the unperturbed inputs, shape (N,).
    history : (steps + 1, N) objective of the iterates (row 0: after the random start).
    nonfinite_steps : (N,) int64, per sample, the steps skipped (zero step) because its input gradient held NaN
        or ±inf; all zero in a healthy run.
    params : the settings of the run.
    """

    x: Tensor
    objective: Tensor
    objective_start: Tensor
    history: Tensor
    nonfinite_steps: Tensor
    params: dict = field(default_factory=dict)


def quantise_perturbation(delta: Tensor, levels: int = PIXEL_LEVELS) -> Tensor:
    """Round a perturbation to whole 8-bit grey levels (multiples of 1/``levels``), as ATOM's evaluation does so
    that an attacked image can be stored as an 8-bit image."""
    return torch.round(delta * levels) / levels


class EnergyObjective(torch.nn.Module):
    """The negative energy ``−E(x) = logsumexp(logits)`` of a classifier (Liu et al. 2020). Raising it lowers
    the energy: the direction of AOE's FGSM augmentation ``x̂ = x − ε·sign(∇ₓE(x))``. A module, so the attacks
    freeze the classifier inside it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return torch.logsumexp(self.model(x), dim=1)


def _check_images(x: Tensor, name: str = "x") -> None:
    _checks.nonempty(x, name)
    if x.dim() != 4:
        raise ValueError(f"{name} must be an NCHW image batch, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ValueError(f"{name} must hold finite values in [0, 1]")


def _target_and_device(f: Objective | torch.nn.Module, target: str | None, module: torch.nn.Module | None,
                       device: str | torch.device) -> tuple[Objective, torch.nn.Module, torch.device]:
    """The objective, the module behind it (frozen during an attack; :func:`oodlib.attack.ood.attack_target`) and
    the device to attack on (:func:`oodlib.attack.ood.attack_device`)."""
    f, module = attack_target(f, target, module)
    return f, module, attack_device(module, device)


def pgd_linf(f: Objective, x: Tensor, *, eps: float, steps: int, step_size: float, maximize: bool = True,
             random_start: bool = True, quantise: bool = False, keep_best: bool = False, batch_size: int = 256,
             device: str | torch.device = "auto", seed: int = 0, target: str | None = None,
             module: torch.nn.Module | None = None) -> PGDResult:
    """Projected gradient ascent (or descent) on ``f`` inside the L∞ ball of radius ``eps`` around ``x``
    (Madry et al. 2018), the attack of ATOM's and ALOE's evaluations.

    Each step moves every pixel by ``step_size`` along the sign of the gradient, then projects the perturbation
    onto [−ε, ε] (and, with ``quantise``, rounds it to whole 8-bit levels) and the image onto [0, 1].

    Parameters
    ----------
    f : differentiable map from images to one value per image: a detector (its in-score, or the attack target
        named by ``target``), an ``nn.Module`` or a bound method of one; that module is put in eval mode with
        frozen parameters for the attack and restored afterwards. Another callable needs ``module``
        (:func:`oodlib.attack.ood.attack_target`).
    x : images (N, C, H, W) in [0, 1].
    eps, steps, step_size : radius of the L∞ ball, number of iterations and per-step change per pixel, in [0, 1]
        pixel units. ``steps = 0`` with ``random_start`` returns a random point of the ball.
    maximize : raise ``f`` (an OOD input made to look in-distribution) or lower it (``False``).
    random_start : start from a uniform random point of the ball (ATOM, ALOE); else from ``x``.
    quantise : round the perturbation to whole 8-bit levels after every step (ATOM).
    keep_best : return each sample's best iterate instead of the last one (ATOM's training attack).
    batch_size : at most this many images at once; the result does not depend on it.
    device : ``"auto"`` → the module's device if ``f`` has one, else CUDA when available, else CPU.
    seed : seeds the random start.
    target, module : as in :func:`oodlib.attack.ood_attack`.

    Numbers may be Python or NumPy scalars or 0-d tensors. A sample whose input gradient is NaN or ±inf in a
    step gets a zero step there (see the module's docstring): counted in ``nonfinite_steps``, named in one
    warning after the attack.

    Returns
    -------
    PGDResult

    Raises
    ------
    ValueError
        ``x`` empty (zero images), not NCHW or outside [0, 1]; ``eps`` / ``step_size`` not positive or not finite;
        ``steps`` negative; ``batch_size`` not positive; ``f`` not returning one value per image.
    TypeError
        A boolean, a non-number, or a float where an integer is expected; an ``f`` refused by
        :func:`oodlib.attack.ood.attack_target`.
    """
    _check_images(x)
    eps = _checks.number(eps, "eps", positive=True)
    step_size = _checks.number(step_size, "step_size", positive=True)
    steps = _checks.integer(steps, "steps", minimum=0)
    batch_size = _checks.integer(batch_size, "batch_size", minimum=1)
    seed = _checks.integer(seed, "seed", minimum=0, maximum=_checks.SEED_MAX)
    f, module, dev = _target_and_device(f, target, module, device)
    sign = 1.0 if maximize else -1.0
    gen = torch.Generator().manual_seed(seed)
    noise = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps if random_start else torch.zeros(x.shape)
    if quantise:
        noise = quantise_perturbation(noise).clamp(-eps, eps)
    outs: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]] = []
    with frozen(module):
        for i in range(0, x.shape[0], batch_size):
            outs.append(_pgd_batch(f, x[i:i + batch_size], noise[i:i + batch_size], eps=eps, steps=steps,
                                   step_size=step_size, sign=sign, quantise=quantise, keep_best=keep_best,
                                   dev=dev))
    x_adv, objective, start, history, nonfinite = zip(*outs)
    params = dict(eps=eps, steps=steps, step_size=step_size, maximize=maximize, random_start=random_start,
                  quantise=quantise, keep_best=keep_best, seed=seed)
    counts = torch.cat(nonfinite)
    _warn_nonfinite(counts, 0)
    return PGDResult(x=torch.cat(x_adv).to(x.device), objective=torch.cat(objective),
                     objective_start=torch.cat(start), history=torch.cat(history, dim=1),
                     nonfinite_steps=counts, params=params)


def _pgd_batch(f: Objective, x0: Tensor, noise: Tensor, *, eps: float, steps: int, step_size: float, sign: float,
               quantise: bool, keep_best: bool, dev: torch.device
               ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The PGD loop on one batch; returns CPU tensors (x, objective, objective at x0, history, count of skipped
    steps per sample)."""
    x0 = x0.to(dev, torch.float32)
    start = f(x0).detach()  # with autograd on: a score may differentiate internally (ODIN's preprocessing)
    x = (x0 + noise.to(dev)).clamp(0, 1)
    history = []
    best_x, best_value = x.clone(), torch.full((x.shape[0],), -float("inf"), device=dev)
    nonfinite = torch.zeros(x.shape[0], dtype=torch.int64, device=dev)
    for _ in range(steps + 1):
        x.requires_grad_(True)
        value = f(x)
        if value.shape != (x.shape[0],):
            raise ValueError(f"the objective must return one value per image, shape ({x.shape[0]},); got "
                             f"{tuple(value.shape)}")
        (grad,) = torch.autograd.grad(value.sum(), x)
        x = x.detach()
        value = value.detach()
        history.append(value)
        with torch.no_grad():
            improved = sign * value > best_value
            best_value = torch.where(improved, sign * value, best_value)
            best_x[improved] = x[improved]
            if len(history) > steps:
                break
            finite = _zero_nonfinite_rows(grad, nonfinite)
            delta = (x + sign * step_size * grad.sign() - x0).clamp(-eps, eps)
            if quantise:
                delta = quantise_perturbation(delta).clamp(-eps, eps)
            x = torch.where(finite, (x0 + delta).clamp(0, 1), x)  # a zero step where the gradient was not finite
    final_x = best_x if keep_best else x
    final_value = sign * best_value if keep_best else history[-1]
    return final_x.cpu(), final_value.cpu(), start.cpu(), torch.stack(history).cpu(), nonfinite.cpu()


def fgsm(f: Objective, x: Tensor, *, eps: float, maximize: bool = True, clamp: bool = True,
         batch_size: int = 256, device: str | torch.device = "auto", target: str | None = None,
         module: torch.nn.Module | None = None) -> Tensor:
    """One fast-gradient-sign step (Goodfellow et al. 2015): ``x ± ε·sign(∇ₓ f(x))``.

    With ``f = EnergyObjective(model)`` and ``maximize=True`` this is AOE's augmentation / threat
    ``x̂ = x − ε·sign(∇ₓ E(x))`` (Botschen et al., "Adversarial Outlier Exposure"). ``clamp`` keeps the result in
    [0, 1]; AOE's training code does not clamp (``clamp=False``).

    ``x`` : images (N, C, H, W) in [0, 1], N ≥ 1; ``eps`` a positive finite number (Python, NumPy or 0-d
    tensor). ``f``, ``target``, ``module`` as in :func:`pgd_linf`. A sample whose input gradient holds NaN or ±inf
    is returned unchanged (a zero step), and one :class:`~oodlib.attack.ood.NonFiniteGradientWarning` names it.
    Raises ``ValueError`` / ``TypeError`` as :func:`pgd_linf`.
    """
    _check_images(x)
    eps = _checks.number(eps, "eps", positive=True)
    batch_size = _checks.integer(batch_size, "batch_size", minimum=1)
    f, module, dev = _target_and_device(f, target, module, device)
    sign = 1.0 if maximize else -1.0
    parts, counts = [], []
    with frozen(module):
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size].to(dev, torch.float32).requires_grad_(True)
            (grad,) = torch.autograd.grad(f(xb).sum(), xb)
            count = torch.zeros(xb.shape[0], dtype=torch.int64, device=dev)
            finite = _zero_nonfinite_rows(grad, count)
            out = xb.detach() + sign * eps * grad.sign()
            out = torch.where(finite, out.clamp(0, 1) if clamp else out, xb.detach())
            parts.append(out.cpu())
            counts.append(count.cpu())
    _warn_nonfinite(torch.cat(counts), 0)
    return torch.cat(parts).to(x.device)


def atom_threat(f: Objective, x_ood: Tensor, *, eps: float = ATOM_EPS, steps: int = ATOM_STEPS,
                step_size: float = ATOM_STEP_SIZE, seed: int = 0, batch_size: int = 256, target: str | None = None,
                module: torch.nn.Module | None = None) -> PGDResult:
    """ATOM's evaluation threat (Chen et al., *ATOM: Robustifying Out-of-Distribution Detection Using Outlier
    Mining*, ECML-PKDD 2021): L∞ PGD on the OOD inputs raising the detector's in-score ``f``, ε = 8/255, 40 steps
    of 1/255, random start, perturbation rounded to whole 8-bit levels. ``target``, ``module``: as in
    :func:`pgd_linf`."""
    _check_images(x_ood, "x_ood")
    return pgd_linf(f, x_ood, eps=eps, steps=steps, step_size=step_size, maximize=True, random_start=True,
                    quantise=True, batch_size=batch_size, seed=seed, target=target, module=module)


def aloe_threat(f: Objective, x_in: Tensor, x_ood: Tensor, *, eps: float = ALOE_EPS, steps: int = ALOE_STEPS,
                step_size: float | None = None, seed: int = 0, batch_size: int = 256, target: str | None = None,
                module: torch.nn.Module | None = None) -> tuple[PGDResult, PGDResult]:
    """ALOE's evaluation threat (Chen et al., *Robust Out-of-distribution Detection for Neural Networks*,
    arXiv 2003.09711): L∞ PGD with ε = 1/255 and 10 steps on **both** sides — the in-distribution inputs are
    pushed to lose in-score, the OOD inputs to gain it. Our sources do not give the step size; the default is
    2.5·ε/steps (Madry et al. 2018). ``target``, ``module``: as in :func:`pgd_linf`. Returns (attacked
    in-distribution, attacked OOD)."""
    _check_images(x_in, "x_in")
    _check_images(x_ood, "x_ood")
    eps = _checks.number(eps, "eps", positive=True)
    steps = _checks.integer(steps, "steps", minimum=0 if step_size is not None else 1)
    alpha = 2.5 * eps / steps if step_size is None else step_size
    common = dict(eps=eps, steps=steps, step_size=alpha, random_start=True, batch_size=batch_size, target=target,
                  module=module)
    attacked_in = pgd_linf(f, x_in, maximize=False, seed=seed, **common)
    attacked_out = pgd_linf(f, x_ood, maximize=True, seed=seed + 1, **common)
    return attacked_in, attacked_out


def aoe_threat(model: torch.nn.Module, x_ood: Tensor, *, eps: float, batch_size: int = 256) -> Tensor:
    """AOE's threat (Botschen, Kirchheim, Ortmeier, *Out-of-Distribution Detection with Adversarial Outlier
    Exposure*, CVPR 2025 workshop): one FGSM step lowering the energy of the OOD inputs under ``model``,
    kept in [0, 1]."""
    _check_images(x_ood, "x_ood")
    return fgsm(EnergyObjective(model), x_ood, eps=eps, maximize=True, batch_size=batch_size)
