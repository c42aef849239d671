"""The experiment pipeline shared by the encoder chapters (Section 1, Section 3.1, Appendix B).

For each start image x'_out (Section 3.1: "Using each of the three initial OOD samples ... we generated 1000 OOD
samples paired with the 1000 (in-distribution) samples"), attack the encoder ``model.features`` so that every
attacked image matches the code of its paired in-distribution image, then measure MAPE (Section 3) and the MSP
detector's AUROC (Table 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from . import data, metrics
from .attack import AttackResult, ood_attack
from .detectors import Detector, make_detector
from .models import Classifier
from .report import Results

PAPER_IMAGE_VALUES = 3 * 224 * 224  # the ImageNet experiments' input size (Section 3.1)


def scale_eps(eps_paper: float, n_values: int, paper_values: int = PAPER_IMAGE_VALUES) -> float:
    """ε scaled by √(number of input values): the same root-mean-square change per pixel as the paper's ε on its
    own image size (``shared/reference/attack.md``)."""
    return eps_paper * math.sqrt(n_values / paper_values)


def rms_per_value(eps: float, n_values: int) -> float:
    """The root-mean-square per-value change of a perturbation of L2 norm ε spread over ``n_values`` values."""
    return eps / math.sqrt(n_values)


@dataclass
class StartRun:
    """The attack from one start image against every in-distribution sample."""

    start: str
    eps: float
    x_start: Tensor
    x_attacked: Tensor
    z_in: Tensor
    z_start: Tensor
    z_attacked: Tensor
    mape: Tensor
    mape_start: Tensor
    result: AttackResult

    @property
    def fraction_below(self) -> float:
        """Fraction of samples with MAPE < 0.1% (the paper's headline threshold)."""
        return metrics.mape_fraction_below(self.mape, 1e-3)


@torch.no_grad()
def encode(model: Classifier, x: Tensor, batch_size: int = 512) -> Tensor:
    """``model.features`` of many images, batched, in eval mode, returned on the CPU."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    z = torch.cat([model.features(x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return z


def attack_from_start(model: Classifier, x_in: Tensor, start: str, *, eps: float, steps: int, seed: int = 0,
                      **attack_options) -> StartRun:
    """Algorithm 1 on ``model.features`` from the start image ``start`` (per-sample noise for ``"noise"``),
    paired with each image of ``x_in``. The reproduction chapters claim to reproduce the paper, so the routine is
    the authors' (``routine="authors"``) unless ``attack_options`` names another."""
    attack_options.setdefault("routine", "authors")
    x_start = data.start_batch(start, len(x_in), size=x_in.shape[-1], channels=x_in.shape[1], seed=seed)
    result = ood_attack(model.features, x_in, x_start, eps=eps, steps=steps, seed=seed, **attack_options)
    z_in, z_start, z_attacked = encode(model, x_in), encode(model, x_start), encode(model, result.x)
    return StartRun(start=start, eps=eps, x_start=x_start, x_attacked=result.x, z_in=z_in, z_start=z_start,
                    z_attacked=z_attacked, mape=metrics.mape(z_attacked, z_in).float(),
                    mape_start=metrics.mape(z_start, z_in).float(), result=result)


def attack_from_starts(model: Classifier, x_in: Tensor, starts: list[str], eps: list[float], *, steps: int,
                       seed: int = 0, **attack_options) -> dict[str, StartRun]:
    """:func:`attack_from_start` for each (start image, ε) pair."""
    if len(starts) != len(eps):
        raise ValueError(f"give one ε per start image: {len(starts)} start images, {len(eps)} values of ε")
    return {s: attack_from_start(model, x_in, s, eps=e, steps=steps, seed=seed, **attack_options)
            for s, e in zip(starts, eps)}


def detector_auroc(detector: Detector, x_in: Tensor, x_out: Tensor) -> float:
    """AUROC (ID positive, in-score) of ``detector`` separating ``x_in`` from ``x_out``."""
    return metrics.auroc(detector.score_batched(x_in), detector.score_batched(x_out))


def msp_table(model: Classifier, x_in: Tensor, runs: dict[str, StartRun], x_natural: Tensor | None = None
              ) -> dict[str, dict[str, float]]:
    """Table 1's measurement: MSP AUROC of the in-distribution images against the start images (clean) and
    against the attacked images, per start image; plus a natural OOD set (clean) if given."""
    msp = make_detector("msp", model)
    table = {name: {"clean": detector_auroc(msp, x_in, run.x_start),
                    "attacked": detector_auroc(msp, x_in, run.x_attacked)} for name, run in runs.items()}
    if x_natural is not None:
        table["natural images"] = {"clean": detector_auroc(msp, x_in, x_natural), "attacked": float("nan")}
    return table


def add_mape_rows(results: Results, item_prefix: str, runs: dict[str, StartRun], paper_fraction: float | None
                  = None, note: str = "") -> None:
    """Rows "<prefix>, <start> start" with the fraction of MAPE < 0.1% and the median MAPE."""
    for name, run in runs.items():
        results.add(f"{item_prefix}, {name} start", "fraction of MAPE < 0.1%", run.fraction_below,
                    paper=paper_fraction, note=note)
        results.add(f"{item_prefix}, {name} start", "median MAPE", run.mape.median(), note=note)


def compare_variants(f, x_in: Tensor, x_start: Tensor, variants: dict[str, dict], **common) -> dict[str, AttackResult]:
    """Run :func:`~oodlib.attack.ood_attack` once per named variant (keyword overrides of ``common``), e.g. the
    authors' Adamax update against the printed rule at equal iterations (Section 2.1)."""
    return {name: ood_attack(f, x_in, x_start, **{**common, **options}) for name, options in variants.items()}


def median_curve(result: AttackResult) -> tuple[Tensor, Tensor]:
    """(iterations, median MAPE over samples) of an attack's recorded history."""
    return result.iterations, result.mape_history.nanmedian(dim=1).values
