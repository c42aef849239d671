"""Metrics of the OOD attack and of the detectors it is run against.

Two families live here:

* the attack metric, the per-sample MAPE of Liang et al., Section 3, which says how
  closely the encoder output of an attacked OOD image matches that of its paired
  in-distribution (ID) image;
* the detection metrics (AUROC, AUPR-In, AUPR-Out, FPR at 95% TPR) that the paper's
  tables report for each detector (Section 4 and the appendices).

Convention: every detector score is an **in-score** (higher = more in-distribution).
AUROC and AUPR-In treat ID as the positive class; AUPR-Out treats OOD as positive on
the negated in-score. FPR at 95% TPR comes in two conventions, ``"A"`` (the default,
used by ODIN, Energy, ATOM and ALOE) and ``"B"`` (pytorch-ood, OpenOOD); see
:func:`fpr_at_95_tpr`.

Every function accepts numpy arrays, Python sequences or torch tensors on any device;
inputs are detached, moved to the CPU and converted to float64 before computing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from . import _checks
from .utils import batched

__all__ = [
    "MetricInputError",
    "as_float64_array",
    "mape",
    "auroc",
    "auroc_standard_error",
    "aupr_in",
    "aupr_out",
    "fpr_at_95_tpr",
    "detection_summary",
    "mape_fraction_below",
    "nearest_image_distance",
]

#: Floor on the MAPE denominator ``max(|z_in|)``, so an all-zero ``z_in`` gives a finite value.
MAPE_DENOMINATOR_FLOOR = 1e-12

_FPR_CONVENTIONS = ("A", "B")


class MetricInputError(ValueError):
    """Raised when a metric receives NaN/inf, empty or wrongly-shaped input.

    The message names the offending argument and, for non-finite values, how many
    values are bad.
    """


def as_float64_array(x: Any, name: str) -> np.ndarray:
    """Convert ``x`` to a finite, non-empty float64 numpy array.

    Parameters
    ----------
    x : array-like or torch.Tensor
        Values to convert; tensors are detached and moved to the CPU first.
    name : str
        Name of the argument, used in error messages.

    Returns
    -------
    numpy.ndarray
        A float64 copy (or view) of ``x`` with the same shape.

    Raises
    ------
    MetricInputError
        If ``x`` cannot be read as numbers, is empty, or holds NaN or inf.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().to(device="cpu", dtype=torch.float64).numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise MetricInputError(f"{name} must hold real numbers ({err})") from err
    if arr.size == 0:
        raise MetricInputError(f"{name} is empty (shape {arr.shape})")
    _check_finite(arr, name)
    return arr


def _check_finite(arr: np.ndarray, name: str) -> None:
    """Raise :class:`MetricInputError` naming ``name`` if ``arr`` has NaN or inf."""
    n_nan = int(np.isnan(arr).sum())
    n_inf = int(np.isinf(arr).sum())
    if n_nan or n_inf:
        raise MetricInputError(
            f"{name} has {n_nan} NaN and {n_inf} inf value(s) out of {arr.size}"
        )


def _scores(x: Any, name: str) -> np.ndarray:
    """Validate a 1-D vector of detector scores (one per sample)."""
    arr = as_float64_array(x, name)
    if arr.ndim != 1:
        raise MetricInputError(
            f"{name} must be 1-D (one score per sample), got shape {arr.shape}"
        )
    return arr


def _latent_pair(z_out: Any, z_in: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate two batches of encoder outputs of equal shape (N, ...); flatten to (N, D)."""
    a = as_float64_array(z_out, "z_out")
    b = as_float64_array(z_in, "z_in")
    for arr, name in ((a, "z_out"), (b, "z_in")):
        if arr.ndim < 2:
            raise MetricInputError(
                f"{name} must have shape (N, ...) with a batch axis, got shape {arr.shape}; "
                "pass z[None] for a single sample"
            )
    if a.shape != b.shape:
        raise MetricInputError(
            f"z_out and z_in must have the same shape, got {a.shape} and {b.shape}"
        )
    return a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)


def mape(z_out: Any, z_in: Any) -> torch.Tensor | np.ndarray:
    """Per-sample mean absolute percentage error between two encoder outputs.

    Section 3 of Liang et al. measures how well the attack matched the encoder output
    of an attacked OOD image ``z_out = f(x_out)`` to that of its paired ID image
    ``z_in = f(x_in)``::

        MAPE = mean(|z_out - z_in|) / max(|z_in|)

    per sample, the mean and max running over the entries of the flattened vector.
    An early arXiv version of the paper printed ``max`` in the numerator; the authors'
    public code (``core/RobustDNN_PGD_OOD.py``) uses the mean, as here. The paper's
    headline claim is that "most MAPE values are less than 0.1%", i.e. ``MAPE < 1e-3``
    (see :func:`mape_fraction_below`).

    Parameters
    ----------
    z_out : array-like or torch.Tensor, shape (N, ...)
        Encoder outputs of the attacked OOD samples.
    z_in : array-like or torch.Tensor, shape (N, ...)
        Encoder outputs of the paired ID samples; same shape as ``z_out``.

    Returns
    -------
    torch.Tensor or numpy.ndarray, shape (N,)
        MAPE of each sample as a fraction (0.001 = 0.1%), float64 (float32 on Apple
        MPS, which has no float64). A torch tensor on
        the device of the first tensor argument if either argument is a tensor (not
        attached to the autograd graph), a numpy array otherwise. The denominator is
        floored at ``MAPE_DENOMINATOR_FLOOR`` (1e-12).

    Raises
    ------
    MetricInputError
        If either input is empty, non-finite, lacks a batch axis, or the shapes differ.
    """
    a, b = _latent_pair(z_out, z_in)
    numerator = np.abs(a - b).mean(axis=1)
    denominator = np.maximum(np.abs(b).max(axis=1), MAPE_DENOMINATOR_FLOOR)
    values = numerator / denominator
    device = _tensor_device(z_out, z_in)
    if device is None:
        return values
    dtype = torch.float32 if device.type == "mps" else torch.float64
    return torch.from_numpy(values).to(device=device, dtype=dtype)


def mape_tensor(z_out: torch.Tensor, z_in: torch.Tensor) -> torch.Tensor:
    """:func:`mape` computed in torch on the tensors' own device and dtype, without validation or copies.

    For the attack's inner loop (:func:`oodlib.attack.ood_attack`), where a host round trip per iteration would
    cost time (and a device synchronisation on a GPU). Same formula and denominator floor as :func:`mape`.
    """
    a, b = z_out.flatten(1), z_in.flatten(1)
    return (a - b).abs().mean(dim=1) / b.abs().amax(dim=1).clamp_min(MAPE_DENOMINATOR_FLOOR)


def _tensor_device(*xs: Any) -> torch.device | None:
    """Device of the first torch tensor among ``xs``, or ``None`` if there is none."""
    for x in xs:
        if isinstance(x, torch.Tensor):
            return x.device
    return None


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``, ties sharing the average of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    is_new = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    group = np.cumsum(is_new) - 1
    starts = np.flatnonzero(is_new)
    ends = np.r_[starts[1:], values.size]
    group_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = group_rank[group]
    return ranks


def auroc(score_in: Any, score_out: Any) -> float:
    """Area under the ROC curve, ID as the positive class.

    Computed as the normalised Mann-Whitney U statistic,
    ``P(s_in > s_out) + 0.5 * P(s_in = s_out)``, with ties given their average rank.
    It equals the AUROC with OOD as positive on the negated score (``detectors.md``,
    "Metric conventions"), the form used by the paper's tables: 0.5 means the detector
    cannot tell attacked OOD from ID samples. Constant scores give exactly 0.5.

    Parameters
    ----------
    score_in : array-like or torch.Tensor, shape (N_in,)
        In-scores of the ID samples (higher = more in-distribution).
    score_out : array-like or torch.Tensor, shape (N_out,)
        In-scores of the OOD samples.

    Returns
    -------
    float
        AUROC in [0, 1]: 1 when every ID score exceeds every OOD score, 0 when reversed.
    """
    s_in = _scores(score_in, "score_in")
    s_out = _scores(score_out, "score_out")
    ranks = _average_ranks(np.concatenate([s_in, s_out]))
    n_in, n_out = s_in.size, s_out.size
    u_statistic = ranks[:n_in].sum() - n_in * (n_in + 1) / 2.0
    return float(u_statistic / (n_in * n_out))


def auroc_standard_error(auroc_value: float, n_in: int, n_out: int) -> float:
    """Standard error of an AUROC measured on ``n_in`` ID and ``n_out`` OOD samples (Hanley & McNeil 1982, Eq. 1;
    the exponential approximation of its ``Q1``, ``Q2``).

    ``SE = sqrt((A(1 − A) + (n_in − 1)(Q1 − A²) + (n_out − 1)(Q2 − A²)) / (n_in · n_out))`` with
    ``Q1 = A / (2 − A)`` and ``Q2 = 2A² / (1 + A)``. It tells how far two AUROCs of one detector on different
    samples of the same sets can differ by sampling alone (about ±0.03 at A = 0.83 on 100 against 100 images).

    Raises
    ------
    ValueError
        If ``auroc_value`` is outside [0, 1] or a sample count is below 1.
    """
    a = float(auroc_value)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"auroc_value must be in [0, 1], got {auroc_value!r}")
    if int(n_in) < 1 or int(n_out) < 1:
        raise ValueError(f"the sample counts must be at least 1, got n_in={n_in!r}, n_out={n_out!r}")
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    variance = (a * (1.0 - a) + (n_in - 1) * (q1 - a * a) + (n_out - 1) * (q2 - a * a)) / (n_in * n_out)
    return math.sqrt(max(variance, 0.0))


def _average_precision(positive: np.ndarray, negative: np.ndarray) -> float:
    """Step-wise average precision, ``sum_k (R_k - R_{k-1}) P_k``.

    The thresholds ``k`` run over the distinct scores in decreasing order; samples tied
    at a score enter together, as in scikit-learn's ``average_precision_score``.
    """
    scores = np.concatenate([positive, negative])
    labels = np.r_[np.ones(positive.size), np.zeros(negative.size)]
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]
    true_pos = np.cumsum(labels)[last_of_tie]
    predicted_pos = np.flatnonzero(last_of_tie) + 1.0
    precision = true_pos / predicted_pos
    recall = true_pos / positive.size
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def aupr_in(score_in: Any, score_out: Any) -> float:
    """Area under the precision-recall curve with ID as the positive class (AUPR-In).

    Average precision of the in-score with ID samples as positives
    (``detectors.md``, "Metric conventions"); step-wise, as scikit-learn's
    ``average_precision_score``. Its chance level is the ID fraction
    ``N_in / (N_in + N_out)``.

    Parameters
    ----------
    score_in : array-like or torch.Tensor, shape (N_in,)
        In-scores of the ID samples.
    score_out : array-like or torch.Tensor, shape (N_out,)
        In-scores of the OOD samples.

    Returns
    -------
    float
        AUPR-In in (0, 1].
    """
    return _average_precision(_scores(score_in, "score_in"), _scores(score_out, "score_out"))


def aupr_out(score_in: Any, score_out: Any) -> float:
    """Area under the precision-recall curve with OOD as the positive class (AUPR-Out).

    Average precision of the negated in-score with OOD samples as positives
    (``detectors.md``, "Metric conventions"). Its chance level is the OOD fraction
    ``N_out / (N_in + N_out)``. Takes the same in-scores as :func:`aupr_in` (shapes
    ``(N_in,)`` and ``(N_out,)``, raising the same errors) and returns AUPR-Out in (0, 1].
    """
    s_in = _scores(score_in, "score_in")
    s_out = _scores(score_out, "score_out")
    return _average_precision(-s_out, -s_in)


def _fpr_keep_positives(positive: np.ndarray, negative: np.ndarray, tpr: float) -> float:
    """Fraction of ``negative`` at or above the largest threshold keeping ``tpr`` of ``positive``.

    The threshold is ``t = max{t : mean(positive >= t) >= tpr}``, which is the
    ``k``-th largest positive score with ``k = ceil(tpr * n)``.
    """
    k = int(np.ceil(round(tpr * positive.size, 9)))
    threshold = np.sort(positive)[::-1][k - 1]
    return float(np.mean(negative >= threshold))


def fpr_at_95_tpr(score_in: Any, score_out: Any, convention: str = "A") -> float:
    """False-positive rate at 95% true-positive rate, in one of two named conventions.

    The literature uses two conventions that give different numbers on the same scores
    (``detectors.md``, "Metric conventions"); tables must say which one they use.

    * ``"A"`` (default; ODIN, Energy, ATOM, ALOE): ID is positive. The threshold is the
      largest ``t`` such that ``mean(score_in >= t) >= 0.95``, i.e. the
      ``ceil(0.95 * N_in)``-th largest ID score; the result is the fraction of OOD
      samples accepted as ID, ``mean(score_out >= t)``.
    * ``"B"`` (pytorch-ood, OpenOOD since 2023): OOD is positive on the negated score.
      The threshold is the smallest ``u`` such that ``mean(score_out <= u) >= 0.95``,
      i.e. the ``ceil(0.95 * N_out)``-th smallest OOD score; the result is the fraction
      of ID samples rejected as OOD, ``mean(score_in <= u)``.

    Both thresholds are the first point of the (non-interpolated) ROC curve whose TPR
    reaches 0.95, with ties on the threshold counted on the positive side.

    Parameters
    ----------
    score_in, score_out : array-like or torch.Tensor, shapes (N_in,) and (N_out,)
        In-scores of the ID and of the OOD samples.
    convention : {"A", "B"}, default "A"
        Which convention to use, see above.

    Returns
    -------
    float
        The false-positive rate in [0, 1].

    Raises
    ------
    ValueError
        If ``convention`` is neither ``"A"`` nor ``"B"``.
    """
    if convention not in _FPR_CONVENTIONS:
        raise ValueError(f'convention must be "A" or "B", got {convention!r}')
    s_in = _scores(score_in, "score_in")
    s_out = _scores(score_out, "score_out")
    if convention == "A":
        return _fpr_keep_positives(s_in, s_out, 0.95)
    return _fpr_keep_positives(-s_out, -s_in, 0.95)


def detection_summary(score_in: Any, score_out: Any) -> dict[str, float]:
    """All detection metrics of one detector on one ID/OOD pair.

    Parameters
    ----------
    score_in : array-like or torch.Tensor, shape (N_in,)
        In-scores of the ID samples.
    score_out : array-like or torch.Tensor, shape (N_out,)
        In-scores of the OOD (e.g. attacked) samples.

    Returns
    -------
    dict of str to float
        Keys ``"auroc"``, ``"aupr_in"``, ``"aupr_out"``, ``"fpr95_A"`` and
        ``"fpr95_B"``, as computed by the functions of the same names.
    """
    s_in = _scores(score_in, "score_in")
    s_out = _scores(score_out, "score_out")
    return {
        "auroc": auroc(s_in, s_out),
        "aupr_in": aupr_in(s_in, s_out),
        "aupr_out": aupr_out(s_in, s_out),
        "fpr95_A": fpr_at_95_tpr(s_in, s_out, "A"),
        "fpr95_B": fpr_at_95_tpr(s_in, s_out, "B"),
    }


def mape_fraction_below(mape_values: Any, threshold: float = 1e-3) -> float:
    """Fraction of samples whose MAPE is strictly below ``threshold``.

    Quantifies the paper's headline claim (Section 4): "most MAPE values are less
    than 0.1%", i.e. below ``threshold = 1e-3``.

    Parameters
    ----------
    mape_values : array-like or torch.Tensor
        Per-sample MAPE values as fractions, e.g. the output of :func:`mape`; any shape.
    threshold : float, default 1e-3
        The threshold as a fraction (1e-3 = 0.1%); a Python or NumPy scalar or a 0-d tensor.

    Returns
    -------
    float
        The fraction in [0, 1].

    Raises
    ------
    MetricInputError
        If ``mape_values`` is empty or holds NaN/inf.
    ValueError, TypeError
        If ``threshold`` is not a finite number (booleans refused).
    """
    threshold = _checks.number(threshold, "threshold")
    values = as_float64_array(mape_values, "mape_values")
    return float(np.mean(values < threshold))


def standardize_images(x: torch.Tensor) -> torch.Tensor:
    """Each image (N, ...) flattened to (N, D), centred to zero mean and scaled to unit L2 norm (a constant image
    becomes the zero vector). The L2 distance of two standardized images is √(2(1 − r)), r their Pearson
    correlation: a distance blind to each image's brightness and contrast."""
    flat = x.detach().flatten(1).float()
    centred = flat - flat.mean(dim=1, keepdim=True)
    return centred / centred.norm(dim=1, keepdim=True).clamp_min(1e-12)


def nearest_image_distance(x: torch.Tensor, reference: torch.Tensor, exclude_self: bool = False,
                           batch_size: int = 512, standardize: bool = False) -> torch.Tensor:
    """L2 distance from each image to its nearest image in ``reference`` (Section 2.4: is an attacked ``x_out``
    still out-of-distribution?).

    An attacked "OOD" image closer to an in-distribution image than in-distribution images are to each other
    has drifted into the in-distribution set (the caveat of the paper's JEM appendix).

    Parameters
    ----------
    x, reference : torch.Tensor
        Image batches (N, ...) and (R, ...).
    exclude_self : bool, default False
        Ignore zero distances (for ``x`` drawn from ``reference`` itself).
    batch_size : int, default 512
        Queries per block (memory bound ``batch_size * R``).
    standardize : bool, default False
        Compare :func:`standardize_images` of both batches (the correlation distance, in [0, 2]) instead of the
        raw pixels: low-contrast images are then judged by their pattern, not by their small pixel values.

    Returns
    -------
    torch.Tensor
        (N,) float64 distances (computed in float32, blockwise).
    """
    _checks.nonempty(x, "x")
    _checks.nonempty(reference, "reference")
    batch_size = _checks.integer(batch_size, "batch_size", minimum=1)
    prepare = standardize_images if standardize else (lambda t: t.detach().flatten(1).float())
    queries, refs = prepare(x).cpu(), prepare(reference).cpu()

    def nearest(block: torch.Tensor) -> torch.Tensor:
        d = torch.cdist(block, refs)
        if exclude_self:
            d = torch.where(d > 0, d, torch.full_like(d, float("inf")))
        return d.amin(dim=1)

    return batched(nearest, queries, batch_size).double()
