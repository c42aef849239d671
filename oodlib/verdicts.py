"""Whether a measurement reproduces one of the paper's claims: the rule, fixed before the numbers are seen.

The paper's claims are of two kinds. An *AUROC-under-attack* claim (Sections 3.1, 3.2, 4 and the appendices: "the
attacked OOD images are scored like the ID images, AUROC ≈ 0.5") only means something when the detector catches the
unattacked start images first; the *MAPE* claim of Section 3.1 ("most MAPE values are less than 0.1%") is a fraction
of pairs. One function applies each rule, so that no chapter tunes its own:

* an AUROC claim is :data:`REPRODUCED` when the detector's clean AUROC on the same, unattacked start images is
  ≥ :data:`CLEAN_AUROC_MIN` (0.8), the AUROC under attack is within :data:`AUROC_TOLERANCE` (0.1) of the paper's
  value, and the attacked images are still out-of-distribution (:func:`ood_check`); :data:`NOT_TESTABLE` when the
  clean AUROC is below 0.8 for every start image the chapter can offer; :data:`NOT_REPRODUCED` otherwise;
* the MAPE claim is reproduced when at least half of the pairs (:data:`MAPE_MAJORITY`) have MAPE below 0.1%
  (:data:`MAPE_THRESHOLD`), and not reproduced otherwise.

AUROC convention: ID positive, in-scores (:mod:`oodlib.metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from . import _checks, metrics

__all__ = ["REPRODUCED", "NOT_REPRODUCED", "NOT_TESTABLE", "CLEAN_AUROC_MIN", "AUROC_TOLERANCE", "MAPE_THRESHOLD",
           "MAPE_MAJORITY", "ID_LIKE_QUANTILE", "Verdict", "OODCheck", "auroc_verdict", "mape_verdict", "ood_check"]

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_TESTABLE = "not testable here"

#: A detector "catches" the start images when its clean AUROC against them is at least this.
CLEAN_AUROC_MIN = 0.8
#: An AUROC under attack within this distance of the paper's value reproduces it.
AUROC_TOLERANCE = 0.1
#: "MAPE < 0.1%" (Section 3.1).
MAPE_THRESHOLD = 1e-3
#: "Most" pairs: at least this fraction.
MAPE_MAJORITY = 0.5
#: An attacked image is in-distribution-like when its nearest-training-image (correlation) distance is at most this
#: quantile of the ID test images' nearest-training-image distances.
ID_LIKE_QUANTILE = 0.95


@dataclass(frozen=True)
class Verdict:
    """A claim's verdict (:data:`REPRODUCED`, :data:`NOT_REPRODUCED` or :data:`NOT_TESTABLE`) and why."""

    label: str
    reason: str

    def __str__(self) -> str:
        return self.label


def _finite(value: Any, name: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    return number


def auroc_verdict(paper: float, clean: float, attacked: float, *, id_like: bool = False,
                  clean_offered: Sequence[float] = ()) -> Verdict:
    """The verdict on an AUROC-under-attack claim (module docstring).

    Parameters
    ----------
    paper : float
        The paper's AUROC under attack.
    clean, attacked : float
        The detector's AUROC of ID images against the unattacked start images, and against the same start images
        after the attack (same detector, model and images).
    id_like : bool, default False
        The attacked images became in-distribution-like (:attr:`OODCheck.id_like`): the result cannot count.
    clean_offered : sequence of float, optional
        The clean AUROCs of the other start images the chapter offers; the claim is *not testable* only when
        ``clean`` and every one of these are below :data:`CLEAN_AUROC_MIN`.

    Raises
    ------
    ValueError
        If ``paper``, ``clean``, ``attacked`` or a value of ``clean_offered`` is not a finite number.
    """
    paper, clean, attacked = (_finite(v, n) for v, n in ((paper, "paper"), (clean, "clean"), (attacked, "attacked")))
    offered = [_finite(v, "clean_offered") for v in clean_offered]
    if clean < CLEAN_AUROC_MIN:
        if all(c < CLEAN_AUROC_MIN for c in offered):
            return Verdict(NOT_TESTABLE, f"the clean detector does not catch the start images (AUROC {clean:.3f} "
                                         f"< {CLEAN_AUROC_MIN}), nor any other start offered here")
        return Verdict(NOT_REPRODUCED, f"the clean detector does not catch this start (AUROC {clean:.3f}) but "
                                       f"catches another start offered here (best {max(offered):.3f})")
    if id_like:
        return Verdict(NOT_REPRODUCED, "the attacked images are in-distribution-like")
    if abs(attacked - paper) <= AUROC_TOLERANCE:
        return Verdict(REPRODUCED, f"clean {clean:.3f} → attacked {attacked:.3f}, within {AUROC_TOLERANCE} of "
                                   f"the paper's {paper:.3f}")
    return Verdict(NOT_REPRODUCED, f"clean {clean:.3f} → attacked {attacked:.3f}, more than {AUROC_TOLERANCE} from "
                                   f"the paper's {paper:.3f}")


def mape_verdict(mape_values: Any) -> Verdict:
    """The verdict on Section 3.1's "most MAPE values are less than 0.1%": reproduced when at least
    :data:`MAPE_MAJORITY` of the pairs have MAPE < :data:`MAPE_THRESHOLD`.

    Raises
    ------
    ValueError
        (:class:`oodlib.metrics.MetricInputError`) if ``mape_values`` is empty or holds a non-finite value.
    """
    values = metrics.as_float64_array(mape_values, "mape_values")
    fraction = metrics.mape_fraction_below(values, MAPE_THRESHOLD)
    label = REPRODUCED if fraction >= MAPE_MAJORITY else NOT_REPRODUCED
    return Verdict(label, f"{fraction:.1%} of {values.size} pairs have MAPE < {MAPE_THRESHOLD:.1%}")


@dataclass(frozen=True)
class OODCheck:
    """Are attacked images still out-of-distribution? Their distance to the nearest in-distribution training
    image, against the same distance of held-out ID test images.

    The distance is the correlation distance (:func:`oodlib.metrics.standardize_images`: each image centred and
    scaled to unit norm before the L2 distance). Raw pixel distances call low-contrast images in-distribution:
    on MNIST-5k, every unattacked mean-matched noise image and the thin grey spiral lie as close (in raw L2) to
    some training digit as held-out digits do, while none of them does in correlation distance (Appendix J and the
    leaderboard show this control).

    ``distance`` (N,) float64: each attacked image's nearest-training-image distance; ``threshold``: the
    :data:`ID_LIKE_QUANTILE` quantile of the ID test images' distances; ``fraction_id_like``: the fraction of
    attacked images at or below it.
    """

    distance: torch.Tensor
    threshold: float
    fraction_id_like: float

    @property
    def id_like(self) -> bool:
        """More than half of the attacked images are as close to the training set as typical ID test images."""
        return self.fraction_id_like > 0.5


def ood_check(x_attacked: torch.Tensor, x_train: torch.Tensor, x_id_test: torch.Tensor) -> OODCheck:
    """Measure whether attacked images (N, C, H, W) drifted into the in-distribution set (the paper's caveat in its
    JEM appendix, and Section 2.4's question whether an attacked image is still OOD).

    Parameters
    ----------
    x_attacked : torch.Tensor
        The attacked images, (N, C, H, W) in [0, 1].
    x_train : torch.Tensor
        In-distribution training images (R, C, H, W): the reference set.
    x_id_test : torch.Tensor
        Held-out in-distribution images (M, C, H, W), disjoint from ``x_train``: their distances set the ID range.

    Raises
    ------
    ValueError
        If any of the three batches is empty.
    """
    for name, x in (("x_attacked", x_attacked), ("x_train", x_train), ("x_id_test", x_id_test)):
        _checks.nonempty(x, name)
    reference = metrics.nearest_image_distance(x_id_test, x_train, standardize=True)
    threshold = float(torch.quantile(reference, ID_LIKE_QUANTILE))
    distance = metrics.nearest_image_distance(x_attacked, x_train, standardize=True)
    return OODCheck(distance=distance, threshold=threshold,
                    fraction_id_like=float((distance <= threshold).double().mean()))
