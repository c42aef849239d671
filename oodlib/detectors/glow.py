"""Likelihood-based OOD detectors on a Glow flow, and Algorithm 1 against them (Liang et al., Section 3.2 and
Appendix I).

- :class:`GlowNLL` — the flow's negative log-likelihood as an OOD score (Nalisnick et al., 2019, on Glow of
  Kingma & Dhariwal, 2018); the paper's Section 3.2 attacks it with ``f(x) = NLL(x)``.
- :class:`InputComplexity` — Serrà et al. (2020): ``S(x) = NLL(x) − L(x)`` with ``L`` the PNG-compressed length
  of the 8-bit image in bits per dimension; the paper's Appendix I attacks it with ``f(x) = S(x)``.

Both wrap a :class:`oodlib.flows.Glow` (the ``model``) and follow the detector conventions: ``score`` is an
**in-score** (the negated OOD score) and their one attack target; ``ood_score`` is the paper's quantity (NLL,
``S``) for tables and figures. The paper attacks ``f(x)`` = the OOD score; matching the in-score ``−f(x)`` to
``−f(x_in)`` is the same attack (the squared error and the MAPE are unchanged by negating both sides, bit for bit).

``L(x)`` is not differentiable: it is the length of a lossless code of the *quantised* image, a piecewise
constant function of ``x`` whose derivative is zero wherever it exists. The detectors therefore evaluate ``L``
exactly at every call and give it zero gradient; the attack on ``S`` follows the gradient of the NLL term
toward a target that moves with ``L`` — equivalently, it attacks ``NLL(x) → S(x_in) + L(x)`` with ``L`` held at
its current value for each step.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .. import _checks, data, metrics
from ..attack import REPRODUCTION_ROUTINE, AttackResult, ood_attack
from ..flows import Glow
from .base import Detector, register_detector

__all__ = ["GlowNLL", "InputComplexity", "ScoreAttack", "attack_from_starts", "attack_to_values", "png_bits_per_dim",
           "quantise_8bit"]


def quantise_8bit(x: Tensor) -> Tensor:
    """Images in [0, 1] rounded to the nearest of the 256 levels ``k/255`` — the image as it would be stored."""
    return (x.clamp(0.0, 1.0) * 255.0).round() / 255.0


@torch.no_grad()
def png_bits_per_dim(x: Tensor, compress_level: int = 9) -> Tensor:
    """The input complexity ``L(x)`` of Serrà et al. (2020): the length in bits of the lossless PNG encoding
    (PIL, ``compress_level`` 9 = the strongest) of each 8-bit image, divided by its number of values C·H·W.

    Parameters
    ----------
    x : images (N, C, H, W) in [0, 1], C in {1, 3}; rounded to 8 bits first.

    Returns
    -------
    Tensor
        (N,) float32 on ``x``'s device. Constant in ``x`` between quantisation levels (no gradient).
    """
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected (N, C, H, W) images with C in {{1, 3}}, got shape {tuple(x.shape)}")
    pixels = (quantise_8bit(x.detach()) * 255.0).round().to(torch.uint8).cpu().numpy()
    n_values = pixels[0].size if len(pixels) else 1
    lengths = [_png_bytes(image, compress_level) for image in pixels]
    return torch.tensor([8.0 * n / n_values for n in lengths], dtype=torch.float32, device=x.device)


def _png_bytes(chw: np.ndarray, compress_level: int) -> int:
    """Bytes of the PNG file of one (C, H, W) uint8 image."""
    array = chw[0] if chw.shape[0] == 1 else np.ascontiguousarray(chw.transpose(1, 2, 0))
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=compress_level)
    return len(buffer.getvalue())


@register_detector
class GlowNLL(Detector):
    """Likelihood of a Glow flow as an OOD detector — Nalisnick et al. (2019), *Do Deep Generative Models Know
    What They Don't Know?*, with Glow of Kingma & Dhariwal (2018). The OOD score is the NLL in bits per
    dimension (:meth:`oodlib.flows.Glow.nll`); the in-score is its negation ``−NLL(x)``."""

    name = "glow_nll"
    paper = "Nalisnick et al., ICLR 2019 (Glow: Kingma & Dhariwal, NeurIPS 2018)"
    batch_size = 256

    def __init__(self, model: Glow) -> None:
        super().__init__(model)

    def ood_score(self, x: Tensor) -> Tensor:
        """NLL(x) in bits per dimension, (N,)."""
        return self.model.nll(x)

    def score(self, x: Tensor) -> Tensor:
        """In-score ``−NLL(x)`` (the method's NLL is an OOD score, negated here)."""
        return -self.ood_score(x)


@register_detector
class InputComplexity(GlowNLL):
    """Input complexity — Serrà et al. (2020), *Input Complexity and Out-of-Distribution Detection with
    Likelihood-based Generative Models*. OOD score ``S(x) = NLL(x) − L(x)``, both in bits per dimension, ``L``
    from :func:`png_bits_per_dim`; the in-score is ``−S(x) = L(x) − NLL(x)``. ``L`` is evaluated exactly and
    carries no gradient (it is piecewise constant in ``x``), so ``score`` is differentiable through the NLL."""

    name = "input_complexity"
    paper = "Serrà et al., ICLR 2020"

    def __init__(self, model: Glow, compress_level: int = 9) -> None:
        super().__init__(model)
        self.compress_level = compress_level

    def complexity(self, x: Tensor) -> Tensor:
        """L(x): PNG bits per dimension of the 8-bit image, (N,), no gradient."""
        return png_bits_per_dim(x, self.compress_level)

    def ood_score(self, x: Tensor) -> Tensor:
        """S(x) = NLL(x) − L(x), (N,) (Appendix I: "The OOD score is NLL − L")."""
        return self.model.nll(x) - self.complexity(x)


# --------------------------------------------------------------------------------------------------- the attack


@dataclass
class ScoreAttack:
    """Algorithm 1 on a detector's score from one start image. Every score here is an **in-score** (−NLL,
    −S; float32 on the CPU); :attr:`attacked_ood` gives the paper's OOD score (NLL, S) of the attacked images.

    Attributes
    ----------
    start : name of the start image.
    x_start, x_attacked : start images x'_out and attacked images x_out, (N, C, H, W).
    target : the in-scores the attack matched (those of the paired in-distribution images, or chosen values).
    clean, attacked : in-scores of the start and attacked images, (N,).
    attacked_8bit : in-scores of the attacked images rounded to 8 bits (:func:`quantise_8bit`), (N,).
    mape : per-sample MAPE of the attacked score against the target (Section 3), (N,).
    result : the attack's full :class:`~oodlib.attack.AttackResult`.
    """

    start: str
    x_start: Tensor
    x_attacked: Tensor
    target: Tensor
    clean: Tensor
    attacked: Tensor
    attacked_8bit: Tensor
    mape: Tensor
    result: AttackResult

    @property
    def attacked_ood(self) -> Tensor:
        """The paper's OOD score (NLL or S, bits per dimension) of the attacked images, (N,)."""
        return -self.attacked


def attack_from_starts(detector: GlowNLL, x_in: Tensor, starts: list[str], *, eps: float, steps: int,
                       seed: int = 0, **attack_options) -> dict[str, ScoreAttack]:
    """Algorithm 1 with ``f`` = the detector's score (Section 3.2: the NLL; Appendix I: NLL − L; as in-scores):
    from each start image, one attacked image per in-distribution image of ``x_in``, whose score is matched.

    The start images are built at ``x_in``'s size and channels (a colour spiral becomes grey on a grey flow);
    all starts are attacked in one batch. ``attack_options`` go to :func:`~oodlib.attack.ood_attack` (the routine is
    :data:`oodlib.attack.REPRODUCTION_ROUTINE` unless they name another).
    """
    _checks.nonempty(x_in, "x_in")
    n, size, channels = len(x_in), x_in.shape[-1], x_in.shape[1]
    x_start = torch.cat([data.start_batch(s, n, size=size, channels=channels, seed=seed) for s in starts])
    target = detector.score_batched(x_in).repeat(len(starts))
    runs = _attack(detector, x_start, target, eps=eps, steps=steps, seed=seed, **attack_options)
    return {s: runs.part(s, slice(i * n, (i + 1) * n)) for i, s in enumerate(starts)}


def attack_to_values(detector: GlowNLL, start: str, values: list[float], *, size: int, channels: int,
                     eps: float, steps: int, seed: int = 0, **attack_options) -> ScoreAttack:
    """Algorithm 1 from one start image toward chosen values of the paper's OOD score (NLL, S: ``values``, the
    in-score targets are their negations): Section 3.2's claim that the NLL of an OOD image can be made "close to
    0 or very large"."""
    x_start = data.start_batch(start, len(values), size=size, channels=channels, seed=seed)
    target = -torch.tensor(values, dtype=torch.float32)
    return _attack(detector, x_start, target, eps=eps, steps=steps, seed=seed, **attack_options).part(
        start, slice(0, len(values)))


@dataclass
class _Batch:
    """One attack over a concatenated batch, sliced per start by :meth:`part`."""

    detector: GlowNLL
    x_start: Tensor
    target: Tensor
    result: AttackResult

    def part(self, start: str, rows: slice) -> ScoreAttack:
        x_attacked = self.result.x[rows]
        attacked = self.detector.score_batched(x_attacked)
        target = self.target[rows]
        return ScoreAttack(start=start, x_start=self.x_start[rows], x_attacked=x_attacked, target=target,
                           clean=self.detector.score_batched(self.x_start[rows]), attacked=attacked,
                           attacked_8bit=self.detector.score_batched(quantise_8bit(x_attacked)),
                           mape=metrics.mape(attacked.unsqueeze(1), target.unsqueeze(1)).float(),
                           result=_rows(self.result, rows))


def _attack(detector: GlowNLL, x_start: Tensor, target: Tensor, *, eps: float, steps: int, seed: int,
            **attack_options) -> _Batch:
    attack_options.setdefault("routine", REPRODUCTION_ROUTINE)
    result = ood_attack(detector, None, x_start, z_in=target.unsqueeze(1), target="score", eps=eps, steps=steps,
                        seed=seed, **attack_options)
    return _Batch(detector, x_start, target, result)


def _rows(result: AttackResult, rows: slice) -> AttackResult:
    """The samples ``rows`` of an attack result."""
    return AttackResult(x=result.x[rows], loss=result.loss[rows], mape=result.mape[rows],
                        loss_history=result.loss_history[:, rows], mape_history=result.mape_history[:, rows],
                        iterations=result.iterations, steps_run=result.steps_run, z_target=result.z_target[rows],
                        nonfinite_steps=result.nonfinite_steps[rows], params=result.params)
