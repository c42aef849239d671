"""Counting arguments behind the OOD attack (Liang et al., Section 2.2).

Section 2.2 of the paper argues that an encoder ``z = f(x)`` which reduces
dimensionality cannot be injective on its discrete input space (the Pigeonhole
Principle), and then gives a worst-case estimate of how much of the latent space
the OOD inputs cover:

* **space sizes.**  An input of ``n_inputs`` values with ``input_bits`` bits each
  has ``2**(n_inputs * input_bits)`` possible values; a latent vector of
  ``n_latent`` float32 entries has at most ``2**(32 * n_latent)`` bit patterns.
  For ResNet-18 on ImageNet this is ``2**(32*512)`` latent codes against
  ``256**(224*224*3)`` images (:func:`log2_space_ratio`, :data:`PAPER_ENCODERS`).
* **coverage.**  If every OOD input were mapped i.i.d. uniformly onto the
  ``|F|`` latent spots, the probability that the ``|Omega_out|`` OOD inputs hit
  every spot is ``|F|! * S2(|Omega_out|, |F|) / |F|**|Omega_out|`` with ``S2``
  the Stirling number of the second kind (:func:`coverage_probability`).  Its
  coupon-collector limit is ``exp(-|F| * exp(-|Omega_out| / |F|))``
  (:func:`coverage_probability_asymptotic`), which is what can be evaluated at
  the paper's scale, where the sizes are only known through their base-2
  logarithms (:func:`log_coverage_from_log2_sizes`).
* **the book's encoders and an empirical check.**  :func:`encoder_space` and
  :func:`spec_encoder_space` count the sizes of the book's own models;
  :func:`coverage_curves`, :func:`simulation_table` and :func:`coverage_figure` trace
  and confirm the coverage probability; :func:`nearest_code_mape` measures whether
  codes of actual OOD images land near codes of in-distribution images.

What these numbers do and do not say
------------------------------------
The latent count is a count of float32 *bit patterns* (about ``2**32`` per
entry, including NaNs, infinities and both zeros), not of values an encoder can
actually emit.  The coverage probability is a worst-case counting argument
under an i.i.d.-uniform model of the encoder; a trained encoder is a fixed,
deterministic, highly non-uniform map.  Neither number proves that a particular
OOD image maps onto a particular in-distribution code ``z``; they only show
that dimensionality reduction leaves room for such collisions.  The
constructive side of the argument is in :mod:`oodlib.nullspace`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import mpmath
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from . import _checks
from .utils import batched

if TYPE_CHECKING:
    from .store import ModelSpec

__all__ = [
    "EncoderSpace",
    "PAPER_ENCODERS",
    "coverage_curves",
    "coverage_figure",
    "coverage_probability",
    "coverage_probability_asymptotic",
    "encoder_space",
    "format_count",
    "log2_space_ratio",
    "log_coverage_from_log2_sizes",
    "nearest_code_mape",
    "paper_scale_coverage",
    "simulate_coverage",
    "simulation_table",
    "space_table",
    "spec_encoder_space",
    "stirling2",
]

#: Largest ``n_points * log2(n_spots)`` (bits of ``n_spots**n_points``) for which
#: :func:`coverage_probability` uses exact integer arithmetic.
EXACT_BITS_LIMIT = 20_000

#: Sizes above this are treated as "symbolic" (paper scale) and go through the
#: asymptotic formula; below it the inclusion-exclusion sum is evaluated with mpmath.
SYMBOLIC_SIZE = 2**53

# log of the smallest positive subnormal double, minus a margin: probabilities whose
# rigorous upper bound lies below exp(_LOG_UNDERFLOW) round to 0.0 anyway.
_LOG_UNDERFLOW = -746.0
_LN2 = math.log(2.0)
# Largest argument of math.exp that does not overflow.
_EXP_MAX = 709.0


def _check_count(value: int, name: str, minimum: int) -> int:
    """Validate an integer count (Section 2.2 sizes are non-negative integers)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def log2_space_ratio(n_inputs: int, input_bits: int, n_latent: int, latent_bits: int = 32) -> int:
    """Exact ``log2(|latent space| / |input space|)`` of an encoder (Section 2.2).

    Parameters
    ----------
    n_inputs : int
        Number of scalar input values (e.g. ``224*224*3``).
    input_bits : int
        Bits per input value (8 for 8-bit images).
    n_latent : int
        Dimension of the latent code ``z``.
    latent_bits : int, default 32
        Bits per latent entry (32 for float32 bit patterns).

    Returns
    -------
    int
        ``n_latent * latent_bits - n_inputs * input_bits``.  Negative means the
        latent space is smaller than the input space, so the encoder cannot be
        injective (the Pigeonhole Principle).  For the paper's ResNet-18 example
        this is ``32*512 - 8*224*224*3 = -1187840``.

    Notes
    -----
    Counts float32 bit patterns, so it over-counts the codes an encoder can
    actually produce; the argument is a worst-case count, not a proof that a
    given OOD image maps onto a given ``z``.
    """
    n_inputs = _check_count(n_inputs, "n_inputs", 1)
    input_bits = _check_count(input_bits, "input_bits", 1)
    n_latent = _check_count(n_latent, "n_latent", 1)
    latent_bits = _check_count(latent_bits, "latent_bits", 1)
    return n_latent * latent_bits - n_inputs * input_bits


def stirling2(n: int, k: int) -> int:
    """Stirling number of the second kind ``S2(n, k)``, exactly (Section 2.2).

    ``S2(n, k)`` counts the partitions of ``n`` labelled points into ``k``
    non-empty unlabelled blocks, so ``k! * S2(n, k)`` counts the surjections from
    ``n`` points onto ``k`` spots used in the paper's coverage probability.

    Parameters
    ----------
    n, k : int
        Non-negative integers.  Intended for small ``n`` (exact big integers).

    Returns
    -------
    int
        ``S2(n, k)``; ``S2(0, 0) = 1`` and ``S2(n, k) = 0`` for ``k > n``.
    """
    n = _check_count(n, "n", 0)
    k = _check_count(k, "k", 0)
    if k > n:
        return 0
    return _surjections(n, k) // math.factorial(k)


def _surjections(m: int, n: int) -> int:
    """Exact number of maps from ``m`` points onto all of ``n`` spots, ``n! S2(m, n)``."""
    return sum((-1) ** j * math.comb(n, j) * (n - j) ** m for j in range(n + 1))


def coverage_probability(n_points: int, n_spots: int) -> float:
    """Probability that ``n_points`` uniform i.i.d. placements cover all ``n_spots``.

    This is the worst-case quantity of Section 2.2,
    ``P(F_out = F) = |F|! * S2(|Omega_out|, |F|) / |F|**|Omega_out|`` with
    ``n_points = |Omega_out|`` and ``n_spots = |F|``.

    Parameters
    ----------
    n_points : int
        Number of points (OOD inputs), ``>= 0``.
    n_spots : int
        Number of spots (latent codes), ``>= 1``.

    Returns
    -------
    float
        The probability, correctly rounded for small cases and accurate to a few
        ulps otherwise; always finite and in ``[0, 1]``.

    Notes
    -----
    Evaluation strategy, chosen by size:

    * ``n_points < n_spots``: exactly ``0.0``.
    * ``n_points * log2(n_spots) <= EXACT_BITS_LIMIT``: exact integer arithmetic,
      ``sum_j (-1)**j C(n, j) (n - j)**m / n**m``, rounded once.
    * sizes above ``SYMBOLIC_SIZE`` (paper scale): the coupon-collector limit of
      :func:`log_coverage_from_log2_sizes`, whose error is far below float
      precision there.
    * otherwise the inclusion-exclusion sum
      ``sum_j (-1)**j C(n, j) (1 - j/n)**m`` is evaluated with mpmath at a
      working precision that covers its cancellation (about ``2*lambda/ln 2``
      bits with ``lambda = n (1 - 1/n)**m``), truncated once the alternating,
      eventually decreasing terms fall below the target accuracy, and re-run at
      doubled precision if an a-posteriori rounding bound is not met.  When the
      rigorous upper bound ``(1 - (1 - 1/n)**m)**n`` (negative association of the
      empty-spot indicators) is below the smallest double, ``0.0`` is returned
      without summing.
    """
    m = _check_count(n_points, "n_points", 0)
    n = _check_count(n_spots, "n_spots", 1)
    if m < n:
        return 0.0
    if n == 1:
        return 1.0
    if m > SYMBOLIC_SIZE or n > SYMBOLIC_SIZE:
        return math.exp(log_coverage_from_log2_sizes(math.log2(m), math.log2(n)))
    if m * math.log2(n) <= EXACT_BITS_LIMIT:
        return _surjections(m, n) / n**m
    return _coverage_mpmath(m, n)


def _empty_spot_probability(m: int, n: int) -> float:
    """``q = (1 - 1/n)**m``, the probability that one given spot stays empty."""
    return math.exp(m * math.log1p(-1.0 / n))


def _coverage_mpmath(m: int, n: int) -> float:
    """Inclusion-exclusion at adaptive mpmath precision (see :func:`coverage_probability`)."""
    q = _empty_spot_probability(m, n)
    if n * math.log1p(-q) < _LOG_UNDERFLOW:
        return 0.0
    lam = n * q
    prec = 96 + int(3.0 * lam / _LN2)
    for _ in range(8):
        value, abs_sum, n_terms = _alternating_sum(m, n, prec)
        rounding = mpmath.ldexp(abs_sum * 8 * (n_terms + 2), -prec)
        if value > 0 and rounding <= mpmath.ldexp(value, -60):
            return min(1.0, float(value))
        prec *= 2
    raise ArithmeticError(f"inclusion-exclusion did not converge for n_points={m}, n_spots={n}")


def _alternating_sum(m: int, n: int, prec: int) -> tuple[mpmath.mpf, mpmath.mpf, int]:
    """Sum ``(-1)**j C(n, j) (1 - j/n)**m`` at ``prec`` bits until the tail is negligible.

    The ratio of consecutive term magnitudes decreases with ``j``, so once a term
    is smaller than its predecessor the remaining terms alternate with decreasing
    magnitude and the truncation error is at most the first omitted term.
    """
    with mpmath.workprec(prec):
        total = mpmath.mpf(0)
        abs_sum = mpmath.mpf(0)
        binom = mpmath.mpf(1)
        previous = mpmath.inf
        tol = mpmath.mpf(2) ** -80
        j = 0
        for j in range(n):
            term = binom * mpmath.exp(m * mpmath.log1p(-mpmath.mpf(j) / n))
            total += term if j % 2 == 0 else -term
            abs_sum += term
            if term < previous and term <= tol * abs(total):
                break
            previous = term
            binom = binom * (n - j) / (j + 1)
        return +total, +abs_sum, j + 1


def coverage_probability_asymptotic(n_points: float, n_spots: float) -> float:
    """Coupon-collector limit ``exp(-n_spots * exp(-n_points / n_spots))`` (Section 2.2).

    Erdős and Rényi showed that for ``n_points = n ln n + c n`` the coverage
    probability of :func:`coverage_probability` tends to ``exp(-exp(-c))`` as
    ``n = n_spots`` grows, which is this expression.

    Parameters
    ----------
    n_points : float
        Number of points (OOD inputs), ``>= 0``.
    n_spots : float
        Number of spots (latent codes), ``> 0``.

    Returns
    -------
    float
        The asymptotic probability, in ``[0, 1]``.

    Notes
    -----
    Accuracy.  The formula replaces the empty-spot probability ``(1 - 1/n)**m`` by
    ``exp(-m/n)`` (relative error about ``m / (2 n**2)`` in the expected number of
    empty spots ``lambda``) and the number of empty spots by a Poisson variable
    (error ``O(lambda * m / n**2)`` by Chen-Stein).  Both vanish as ``n`` grows
    with ``m/n`` near ``ln n``; measured absolute errors are about ``2e-4`` at
    ``n = 1000, m = 10000`` and below ``1e-6`` for ``n >= 1e6``.  It is useless
    for small ``n`` or for ``m`` well below ``n ln n`` (where both values are tiny
    but their ratio is not close to 1), and it does not vanish for
    ``n_points < n_spots`` where the exact probability is 0.  Sizes beyond the
    float range (paper scale) go through :func:`log_coverage_from_log2_sizes`.
    """
    if n_spots <= 0 or n_points < 0:
        raise ValueError(f"need n_spots > 0 and n_points >= 0, got {n_points}, {n_spots}")
    return math.exp(-n_spots * math.exp(-n_points / n_spots))


def log_coverage_from_log2_sizes(log2_points: float, log2_spots: float) -> float:
    """Natural log of the asymptotic coverage probability from ``log2`` sizes (Section 2.2).

    Evaluates ``ln P = -n * exp(-m / n)`` with ``m = 2**log2_points`` and
    ``n = 2**log2_spots`` without ever forming ``m`` or ``n``, so that the paper's
    ResNet-18 case (``n = 2**(32*512)`` latent codes, ``m = 256**(224*224*3)``
    inputs, minus the 1.4e7 ImageNet images, which changes nothing at this scale)
    can be evaluated.

    Parameters
    ----------
    log2_points : float
        ``log2 |Omega_out|``.
    log2_spots : float
        ``log2 |F|``.

    Returns
    -------
    float
        ``ln P`` in ``[-inf, 0]``.  It is ``0.0`` (``P`` equal to 1 in double
        precision) in the regime ``m >> n``, e.g. at paper scale, and ``-inf``
        when ``P`` is smaller than ``exp(-1e308)``.

    Notes
    -----
    Inherits the accuracy caveats of :func:`coverage_probability_asymptotic`;
    at paper scale those errors are far below double precision.  The result is
    a worst-case counting statement under an i.i.d.-uniform encoder model, not a
    property of any trained encoder.
    """
    log2_ratio = log2_points - log2_spots
    if log2_ratio >= 1024.0:
        return 0.0
    exponent = log2_spots * _LN2 - 2.0**log2_ratio
    if exponent > _EXP_MAX:
        return -math.inf
    value = -math.exp(exponent)
    return value if value != 0.0 else 0.0


def simulate_coverage(n_points: int, n_spots: int, trials: int, seed: int = 0) -> float:
    """Monte-Carlo estimate of :func:`coverage_probability` (Section 2.2).

    Parameters
    ----------
    n_points : int
        Points placed per trial.
    n_spots : int
        Number of spots.
    trials : int
        Number of independent trials.
    seed : int, default 0
        Seed of the local ``numpy.random.Generator``.

    Returns
    -------
    float
        Fraction of trials in which every spot received at least one point;
        its standard error is ``sqrt(p (1 - p) / trials)``.
    """
    m = _check_count(n_points, "n_points", 0)
    n = _check_count(n_spots, "n_spots", 1)
    trials = _check_count(trials, "trials", 1)
    rng = np.random.default_rng(seed)
    chunk = max(1, 2**22 // max(m, n, 1))
    covered = 0
    for start in range(0, trials, chunk):
        size = min(chunk, trials - start)
        covered += _count_covered(rng.integers(0, n, size=(size, m)), n)
    return covered / trials


def _count_covered(placements: np.ndarray, n_spots: int) -> int:
    """Number of rows of ``placements`` (trials x points) that hit every spot."""
    size = placements.shape[0]
    flat = (placements + n_spots * np.arange(size)[:, None]).ravel()
    counts = np.bincount(flat, minlength=size * n_spots).reshape(size, n_spots)
    return int(np.count_nonzero((counts > 0).all(axis=1)))


@dataclass(frozen=True)
class EncoderSpace:
    """Discrete input and latent space sizes of one encoder (Section 2.2).

    Parameters
    ----------
    name : str
        Label of the encoder and dataset.
    input_shape : tuple of int
        Input tensor shape without the batch axis, e.g. ``(3, 224, 224)``.
    input_bits : int
        Bits per input value (8 for 8-bit images).
    latent_dim : int
        Dimension of the latent code ``z``.
    latent_bits : int, default 32
        Bits per latent entry (float32 bit patterns).
    """

    name: str
    input_shape: tuple[int, ...]
    input_bits: int
    latent_dim: int
    latent_bits: int = 32

    @property
    def n_inputs(self) -> int:
        """Number of scalar input values, the product of ``input_shape``."""
        return math.prod(self.input_shape)

    @property
    def log2_input_space(self) -> int:
        """``log2`` of the number of distinct inputs, ``n_inputs * input_bits``."""
        return self.n_inputs * self.input_bits

    @property
    def log2_latent_space(self) -> int:
        """``log2`` of the number of latent bit patterns, ``latent_dim * latent_bits``."""
        return self.latent_dim * self.latent_bits

    @property
    def log2_ratio(self) -> int:
        """``log2(|latent| / |input|)``, see :func:`log2_space_ratio`."""
        return log2_space_ratio(self.n_inputs, self.input_bits, self.latent_dim, self.latent_bits)

    @property
    def compression(self) -> float:
        """Dimensionality reduction factor ``n_inputs / latent_dim``."""
        return self.n_inputs / self.latent_dim


#: Encoders evaluated in the paper (8-bit inputs, float32 latents).  The OCT and
#: COVID-19 CT images are grayscale; they are counted with one channel because
#: replicating a channel for a 3-channel ResNet-18 does not add distinct inputs.
PAPER_ENCODERS: tuple[EncoderSpace, ...] = (
    EncoderSpace("ResNet-18 (ImageNet)", (3, 224, 224), 8, 512),
    EncoderSpace("DenseNet-121 (ImageNet)", (3, 224, 224), 8, 1024),
    EncoderSpace("ResNet-18 (OCT)", (1, 224, 224), 8, 512),
    EncoderSpace("ResNet-18 (COVID-19 CT)", (1, 224, 224), 8, 512),
    EncoderSpace("STN classifier (GTSRB)", (3, 32, 32), 8, 128),
    EncoderSpace("WRN-28-10 logits (CIFAR-10)", (3, 32, 32), 8, 10),
)

#: Column names of :func:`space_table`.
SPACE_TABLE_COLUMNS = (
    "encoder",
    "input values",
    "latent dim",
    "log2|input|",
    "log2|latent|",
    "log2 ratio",
    "compression",
)


def space_table(encoders: Sequence[EncoderSpace] = PAPER_ENCODERS) -> pd.DataFrame:
    """Tabulate input/latent space sizes of encoders (Section 2.2).

    Parameters
    ----------
    encoders : sequence of EncoderSpace, default PAPER_ENCODERS
        Encoders to list, one row each.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`SPACE_TABLE_COLUMNS`: name, number of input values, latent
        dimension, ``log2`` of the input and latent space sizes, their difference
        (``log2`` of the size ratio; exact Python ints) and the compression factor.
    """
    rows = [
        (e.name, e.n_inputs, e.latent_dim, e.log2_input_space, e.log2_latent_space, e.log2_ratio, e.compression)
        for e in encoders
    ]
    return pd.DataFrame(rows, columns=list(SPACE_TABLE_COLUMNS))


def encoder_space(name: str, model: torch.nn.Module, input_bits: int = 8, latent_bits: int = 32) -> EncoderSpace:
    """The :class:`EncoderSpace` of one of the book's models, read from the model itself (Section 2.2).

    Parameters
    ----------
    name : str
        Label of the row.
    model : torch.nn.Module
        A model with ``in_channels``, ``image_size`` and ``latent_dim`` attributes: any
        :class:`oodlib.models.Classifier` or :class:`oodlib.autoencoder.ConvAutoEncoder`. It need not be trained:
        only its input and code sizes are read.
    input_bits : int, default 8
        Bits per input value (the book's datasets are 8-bit images).
    latent_bits : int, default 32
        Bits per latent entry (float32).

    Returns
    -------
    EncoderSpace
        Input shape ``(in_channels, image_size, image_size)`` and latent dimension ``latent_dim``.
    """
    missing = [a for a in ("in_channels", "image_size", "latent_dim") if not hasattr(model, a)]
    if missing:
        raise TypeError(f"{type(model).__name__} lacks {', '.join(missing)}")
    shape = (int(model.in_channels), int(model.image_size), int(model.image_size))
    return EncoderSpace(name, shape, input_bits, int(model.latent_dim), latent_bits)


def paper_scale_coverage(encoder: EncoderSpace, n_in_distribution: int = 0) -> float:
    """The worst-case coverage probability ``P(F_out = F)`` of one encoder, at its true sizes (Section 2.2).

    ``|F| = 2**log2_latent_space`` and ``|Omega_out| = 2**log2_input_space - n_in_distribution`` (the paper
    subtracts the 1.4e7 ImageNet images, which does not change a double).

    Parameters
    ----------
    encoder : EncoderSpace
        The encoder's discrete sizes.
    n_in_distribution : int, default 0
        Number of in-distribution inputs removed from the input space.

    Returns
    -------
    float
        ``exp(log_coverage_from_log2_sizes(...))``; 1.0 for every encoder of the paper and of the book.
    """
    n_points = 2**encoder.log2_input_space - _check_count(n_in_distribution, "n_in_distribution", 0)
    if n_points < 1:
        raise ValueError("n_in_distribution must be smaller than the input space")
    log2_points = math.log2(n_points)
    return math.exp(log_coverage_from_log2_sizes(log2_points, encoder.log2_latent_space))


def coverage_curves(spots: Sequence[int], points_per_spot: Sequence[float], exact_up_to: int = 100
                    ) -> pd.DataFrame:
    """``P(F_out = F)`` against the number of OOD inputs per latent spot, for several ``|F|`` (Section 2.2).

    Parameters
    ----------
    spots : sequence of int
        Values of ``|F|``; Python ints of any size (``2**(32*512)`` for ResNet-18 works).
    points_per_spot : sequence of float
        Values of ``|Omega_out| / |F|``; ``|Omega_out|`` is rounded to an integer (exactly, in integer
        arithmetic, to 20 fractional bits of the ratio).
    exact_up_to : int, default 100
        ``|F|`` up to which :func:`coverage_probability` is evaluated exactly; larger ``|F|`` use the
        coupon-collector limit :func:`log_coverage_from_log2_sizes`, whose absolute error is about ``2e-4`` at
        ``|F| = 1000`` and below ``1e-6`` from ``|F| = 1e6`` (the exact sum costs seconds per point there).

    Returns
    -------
    pandas.DataFrame
        One row per ``(|F|, ratio)`` with columns ``spots`` (the size as a label, :func:`format_count`),
        ``log2_spots``, ``points_per_spot`` (the ratio after rounding), ``probability`` and ``method``
        (``"exact"`` or ``"asymptotic"``).
    """
    rows = []
    for n in spots:
        n = _check_count(n, "spots", 1)
        for ratio in points_per_spot:
            m = (n * int(round(ratio * 2**20))) >> 20
            if n <= exact_up_to:
                p, method = coverage_probability(m, n), "exact"
            else:
                p, method = math.exp(log_coverage_from_log2_sizes(math.log2(max(m, 1)), math.log2(n))), "asymptotic"
            rows.append((format_count(n), math.log2(n), (m << 20) // n / 2**20, p, method))
    return pd.DataFrame(rows, columns=["spots", "log2_spots", "points_per_spot", "probability", "method"])


def format_count(n: int) -> str:
    """A size for a label: ``1,000`` below a million, ``10^k`` for powers of ten, ``2^k`` for powers of two."""
    n = _check_count(n, "n", 0)
    if n < 10**6:
        return f"{n:,}"
    if n & (n - 1) == 0:
        return f"2^{{{n.bit_length() - 1}}}"
    k = len(str(n)) - 1
    return f"10^{{{k}}}" if n == 10**k else f"{n:.3g}"


def simulation_table(cases: Sequence[tuple[int, int]], trials: int, seed: int = 0) -> pd.DataFrame:
    """Monte-Carlo confirmation of :func:`coverage_probability` on small cases (Section 2.2).

    Parameters
    ----------
    cases : sequence of (int, int)
        ``(|Omega_out|, |F|)`` pairs.
    trials : int
        Trials per case.
    seed : int, default 0
        Seed of the first case; case ``i`` uses ``seed + i``.

    Returns
    -------
    pandas.DataFrame
        Columns ``points``, ``spots``, ``points_per_spot``, ``exact``, ``simulated``, ``std_error`` (binomial,
        from the exact value) and ``z_score`` (``(simulated - exact) / std_error``, 0 where the error is 0).
    """
    rows = []
    for i, (m, n) in enumerate(cases):
        exact = coverage_probability(m, n)
        simulated = simulate_coverage(m, n, trials, seed=seed + i)
        error = math.sqrt(exact * (1.0 - exact) / trials)
        z_score = (simulated - exact) / error if error > 0 else 0.0
        rows.append((m, n, m / n, exact, simulated, error, z_score))
    return pd.DataFrame(rows, columns=["points", "spots", "points_per_spot", "exact", "simulated", "std_error",
                                       "z_score"])


def nearest_code_mape(z_query: torch.Tensor, z_reference: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """For each query code, the smallest MAPE to any reference code (Section 2.2, tested empirically).

    The counting argument says that OOD codes *may* cover the latent space; this measures whether codes of
    actual OOD images land near codes of in-distribution images. ``MAPE(q, r) = mean|q - r| / max|r|``
    (Section 3's metric with ``r`` in the role of ``z_in``).

    Parameters
    ----------
    z_query : torch.Tensor
        Codes ``(Q, D)`` (e.g. of noise images).
    z_reference : torch.Tensor
        Codes ``(R, D)`` (e.g. of the in-distribution training images).
    batch_size : int, default 1024
        Queries per block (memory bound ``batch_size * R``).

    Returns
    -------
    torch.Tensor
        Float64 tensor ``(Q,)`` of ``min_r MAPE(q, r)``.
    """
    _checks.nonempty(z_query, "z_query")
    _checks.nonempty(z_reference, "z_reference")
    batch_size = _checks.integer(batch_size, "batch_size", minimum=1)
    q = z_query.detach().flatten(1).double().cpu()
    r = z_reference.detach().flatten(1).double().cpu()
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"codes differ in dimension: {q.shape[1]} and {r.shape[1]}")
    scale = r.abs().amax(dim=1).clamp_min(1e-12) * r.shape[1]
    return batched(lambda block: (torch.cdist(block, r, p=1) / scale).amin(dim=1), q, batch_size)


def coverage_figure(curves: pd.DataFrame, simulated: pd.DataFrame | None = None) -> Figure:
    """``P(F_out = F)`` against ``|Omega_out| / |F|``, one line per ``|F|`` (Section 2.2), in the book's style.

    Parameters
    ----------
    curves : pandas.DataFrame
        Output of :func:`coverage_curves`.
    simulated : pandas.DataFrame, optional
        Output of :func:`simulation_table`, drawn as markers with two-standard-error bars.

    Returns
    -------
    matplotlib.figure.Figure
        One axes; exact curves solid, coupon-collector limits dashed, and a dotted vertical line at the
        threshold ``ln |F|`` of each curve.
    """
    import matplotlib.pyplot as plt

    from . import plots

    plots.set_style()
    fig, ax = plt.subplots(figsize=(7.4, 3.5))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    log2_sizes = sorted(curves["log2_spots"].unique())
    colours = {v: palette[(3 + i) % len(palette)] for i, v in enumerate(log2_sizes)}
    for key, part in curves.groupby("log2_spots", sort=True):
        style = "-" if (part["method"] == "exact").all() else "--"
        ax.plot(part["points_per_spot"], part["probability"], style, color=colours[key], linewidth=1.6,
                label=f"$|\\mathcal{{F}}| = {part['spots'].iloc[0]}$")
        ax.axvline(key * math.log(2.0), color=colours[key], linestyle=":", linewidth=1.0)
    if simulated is not None and len(simulated):
        for n, part in simulated.groupby("spots"):
            ax.errorbar(part["points_per_spot"], part["simulated"], yerr=2 * part["std_error"], fmt="o",
                        markersize=4, capsize=2, color=colours.get(math.log2(n), plots.CLEAN_OOD_COLOR),
                        markerfacecolor="white", linewidth=1.0)
        ax.plot([], [], "o", color="0.3", markerfacecolor="white", label="Monte Carlo (±2 s.e.)")
    ax.set_xscale("log")
    ax.set_xlabel(r"OOD inputs per latent code, $|\Omega_{out}| / |\mathcal{F}|$")
    ax.set_ylabel(r"$P(\mathcal{F}_{out} = \mathcal{F})$")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
    fig.tight_layout()
    return fig


def spec_encoder_space(name: str, spec: "ModelSpec", input_bits: int = 8) -> EncoderSpace:
    """The :class:`EncoderSpace` of the classifier a :class:`~oodlib.store.ModelSpec` describes (Section 2.2).

    The model is built untrained (nothing is trained or loaded): only its input geometry, from the spec's
    dataset, and its latent dimension are read.
    """
    from . import store

    model = store.build_untrained(spec, store.input_geometry(store.training_data(spec, "test")))
    return encoder_space(name, model, input_bits=input_bits)
