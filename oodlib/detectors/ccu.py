"""Certified Certain Uncertainty (CCU) — Meinke & Hein, ICLR 2020, *Towards Neural Networks that Provably Know
When They Don't Know*; the detector the attack paper could not break (Section 4).

CCU combines a classifier ``p(y|x, i)`` with two Gaussian mixture models **in input space**, one of the
in-distribution ``p(x|i)`` and one of an auxiliary out-distribution ``p(x|o)``, and predicts (their Eq. 3)

    p(y|x) = ( p(y|x, i) p(x|i) + λ/K · p(x|o) ) / ( p(x|i) + λ p(x|o) ),        λ = p(o)/p(i),

so that far from the in-distribution mixture the prediction falls to the uniform 1/K whatever the classifier
says. The in-score is the maximum log-confidence ``max_y log p(y|x)``.

The mixtures are spherical in a PCA-based metric fitted on the in-distribution data: each principal coordinate of
``x − mean`` is divided by the square root of its singular value (floored at the largest over ``sv_floor``),
as in the reference code's ``PCAMetric``. There is no dimensionality reduction: every input dimension enters the
density, which is why the attack paper's Section 4 finds that its attack cannot move a noise image into the
in-distribution mixture within a bounded ε.

Departure from the reference: the reference initialises the mixtures (k-means/EM) and then fine-tunes them jointly
with the classifier on in- and out-distribution batches (the mixtures with a small learning rate); here the
mixtures are fitted by EM only and the classifier is any trained classifier. Either way the mixtures live in input
space, which is what the attack paper's argument rests on.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import _checks
from ..utils import batched
from .base import ClassifierDetector, register_detector

_DOUBLE = torch.float64


class PCAMetric(nn.Module):
    """The input-space metric of Meinke & Hein (reference ``PCAMetric``):
    ``d(x, x')² = Σ_j ⟨v_j, x − x'⟩² / s_j`` over the principal directions ``v_j`` of the fitting data, with
    ``s_j`` its singular values floored at ``s_1 / sv_floor``.

    :meth:`transform` maps images to coordinates in which ``d`` is the Euclidean distance; ``log_jacobian`` is
    the log-determinant of that map, so a density in those coordinates plus ``log_jacobian`` is a density of
    the images.
    """

    def __init__(self, x: Tensor, sv_floor: float = 1e6) -> None:
        super().__init__()
        if sv_floor < 1:
            raise ValueError(f"sv_floor must be >= 1, got {sv_floor}")
        flat = x.flatten(1).to(_DOUBLE)
        mean = flat.mean(0)
        centred = flat - mean
        eigenvalues, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending; eigenvalues = s²
        s = eigenvalues.flip(0).clamp_min(0).sqrt()
        s = s.clamp_min(s[0] / sv_floor)
        self.register_buffer("mean", mean)
        self.register_buffer("components", vectors.flip(1).contiguous())  # (D, D), columns are the v_j
        self.register_buffer("scale", s.rsqrt())
        self.log_jacobian = float(self.scale.log().sum())

    def transform(self, x: Tensor) -> Tensor:
        """Images (N, C, H, W) → metric coordinates (N, D), float64."""
        return ((x.flatten(1).to(_DOUBLE) - self.mean) @ self.components) * self.scale


class SphericalGMM(nn.Module):
    """A mixture of spherical Gaussians in the metric coordinates: weights α_k, means μ_k, variances v_k,

    ``log p(u) = logsumexp_k [ log α_k − D/2 · log(2π v_k) − ‖u − μ_k‖² / (2 v_k) ]``.
    """

    def __init__(self, means: Tensor, log_var: Tensor, log_weight: Tensor) -> None:
        super().__init__()
        self.register_buffer("means", means.to(_DOUBLE))
        self.register_buffer("log_var", log_var.to(_DOUBLE))
        self.register_buffer("log_weight", log_weight.to(_DOUBLE))

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def component_log_prob(self, u: Tensor) -> Tensor:
        """(N, K) log α_k + log N(u; μ_k, v_k I)."""
        dim = u.shape[1]
        sq = torch.cdist(u, self.means).pow(2)
        return (self.log_weight - 0.5 * dim * (math.log(2 * math.pi) + self.log_var)
                - 0.5 * sq / self.log_var.exp())

    def log_prob(self, u: Tensor) -> Tensor:
        """(N,) mixture log-density of the coordinates ``u``."""
        return torch.logsumexp(self.component_log_prob(u), dim=1)


def fit_spherical_gmm(u: Tensor, n_components: int, *, iterations: int = 50, seed: int = 0,
                      min_var: float | None = None, tol: float = 1e-4) -> SphericalGMM:
    """EM for a spherical Gaussian mixture on the rows of ``u`` (float64).

    Initialisation as in the reference's ``find_solution``: means from k-means (here 10 Lloyd iterations from
    ``n_components`` distinct data points drawn with ``seed``), each variance the mean squared distance of its
    cluster's points to the centre divided by ``D``, weights the cluster sizes. The variances are floored at
    ``min_var`` (default ``var(u) / N``, the reference's bound) so that no component collapses onto one point.
    EM stops after ``iterations`` steps or once the mean log-likelihood per sample improves by less than ``tol``.
    """
    u = u.to(_DOUBLE)
    n, dim = u.shape
    if not 1 <= n_components <= n:
        raise ValueError(f"need 1 <= n_components <= number of samples ({n}), got {n_components}")
    gen = torch.Generator().manual_seed(seed)
    means = u[torch.randperm(n, generator=gen)[:n_components].to(u.device)].clone()
    for _ in range(10):
        assign = torch.cdist(u, means).argmin(1)
        for k in range(n_components):
            members = u[assign == k]
            if len(members):
                means[k] = members.mean(0)
    floor = float(u.var() / n) if min_var is None else min_var
    assign = torch.cdist(u, means).argmin(1)
    counts = torch.bincount(assign, minlength=n_components).to(_DOUBLE).clamp_min(1)
    sq = (u - means[assign]).pow(2).sum(1)
    var = torch.zeros(n_components, dtype=_DOUBLE, device=u.device).index_add_(0, assign, sq) / (counts * dim)
    gmm = SphericalGMM(means, var.clamp_min(floor).log(), (counts / counts.sum()).log())
    previous = -math.inf
    for _ in range(iterations):
        log_likelihood = _em_step(gmm, u, floor)
        if log_likelihood - previous < tol:
            break
        previous = log_likelihood
    return gmm


def _em_step(gmm: SphericalGMM, u: Tensor, min_var: float) -> float:
    """One EM step in place (responsibilities, then weights, means and spherical variances); returns the mean
    log-likelihood per sample before the step."""
    log_joint = gmm.component_log_prob(u)
    log_px = torch.logsumexp(log_joint, dim=1, keepdim=True)
    resp = (log_joint - log_px).exp()
    nk = resp.sum(0).clamp_min(1e-12)
    means = (resp.T @ u) / nk[:, None]
    # Σ_n r_nk ‖u_n − μ_k‖² = Σ_n r_nk ‖u_n‖² − n_k ‖μ_k‖² for the new (weighted-mean) μ_k
    scatter = resp.T @ u.pow(2).sum(1) - nk * means.pow(2).sum(1)
    var = scatter.clamp_min(0) / (nk * u.shape[1])
    gmm.means.copy_(means)
    gmm.log_var.copy_(var.clamp_min(min_var).log())
    gmm.log_weight.copy_((nk / nk.sum()).log())
    return float(log_px.mean())


@register_detector
class CCU(ClassifierDetector):
    """Certified Certain Uncertainty — Meinke & Hein (2020), *Towards Neural Networks that Provably Know When
    They Don't Know*, Eq. 3: the classifier's posterior mixed with the uniform distribution by the ratio of an
    in- and an out-distribution Gaussian mixture in input space. In-score: ``max_y log p(y|x)``.

    Parameters
    ----------
    model : the classifier giving ``p(y|x, i) = softmax(model(x))``.

    Attack targets: the classifier's ``"logits"`` and ``"features"``, the CCU model's ``"output"``
    (:meth:`output`) and the mixtures' ``"density_log_odds"`` (:meth:`density_log_odds`).
    n_components : Gaussians in each mixture (reference: 100).
    lam : λ = p(o)/p(i) (reference: 1).
    sv_floor : floor of the metric's singular values, as a ratio to the largest (reference ``gen_gmm.py``: 1e6).
    em_iterations : EM iterations after the k-means initialisation (reference: at most 50).
    n_outliers : auxiliary outliers drawn by :func:`oodlib.data.auxiliary_outliers` when :meth:`fit` is not
        given any (the reference uses 80 Million Tiny Images).
    seed : seeds the initialisation and the outliers.
    """

    name = "ccu"
    paper = "Meinke & Hein, ICLR 2020"
    targets = ("score", "logits", "features", "output", "density_log_odds")

    def __init__(self, model: nn.Module, n_components: int = 100, lam: float = 1.0, sv_floor: float = 1e6,
                 em_iterations: int = 50, n_outliers: int = 4000, seed: int = 0) -> None:
        super().__init__(model)
        self.n_components = _checks.integer(n_components, "n_components", minimum=1)
        self.lam = _checks.number(lam, "lam", positive=True)
        self.sv_floor = _checks.number(sv_floor, "sv_floor", minimum=1.0)
        self.em_iterations = _checks.integer(em_iterations, "em_iterations", minimum=1)
        self.n_outliers = _checks.integer(n_outliers, "n_outliers", minimum=1)
        self.seed = _checks.integer(seed, "seed")
        self.metric: PCAMetric | None = None
        self.gmm_in: SphericalGMM | None = None
        self.gmm_out: SphericalGMM | None = None

    def fit(self, x: Tensor | None = None, y: Tensor | None = None, x_out: Tensor | None = None) -> "CCU":
        """Fit the metric and the in-distribution mixture on ``x`` (ID training images) and the out-distribution
        mixture on ``x_out`` (auxiliary outliers; drawn from :func:`oodlib.data.auxiliary_outliers` if None —
        never the evaluation OOD set). ``y`` is not used."""
        if x is None:
            raise ValueError("CCU needs in-distribution training images to fit its mixtures")
        if x_out is None:
            from ..data import auxiliary_outliers

            x_out = auxiliary_outliers(self.n_outliers, size=x.shape[-1], channels=x.shape[1], seed=self.seed)
        device = next(self.model.parameters()).device
        self.metric = PCAMetric(x.to(device), self.sv_floor)
        self.gmm_in = fit_spherical_gmm(self.metric.transform(x.to(device)), self.n_components,
                                        iterations=self.em_iterations, seed=self.seed)
        self.gmm_out = fit_spherical_gmm(self.metric.transform(x_out.to(device)), self.n_components,
                                         iterations=self.em_iterations, seed=self.seed + 1)
        return self

    def _check_fitted(self) -> None:
        if self.metric is None or self.gmm_in is None or self.gmm_out is None:
            raise RuntimeError("CCU is not fitted: call fit(x_train) first")

    def log_densities(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(log p(x|i), log p(x|o))`` in float64, each (N,): densities of the images in [0, 1] pixel space."""
        self._check_fitted()
        u = self.metric.transform(x)
        jac = self.metric.log_jacobian
        return self.gmm_in.log_prob(u) + jac, self.gmm_out.log_prob(u) + jac

    def log_odds(self, x: Tensor) -> Tensor:
        """``log p(x|i) − log λ p(x|o)``, (N,) float64: positive where the in-distribution mixture dominates."""
        log_in, log_out = self.log_densities(x)
        return log_in - log_out - math.log(self.lam)

    def log_confidence(self, x: Tensor) -> Tensor:
        """``log p(y|x)`` of Eq. 3 for every class, (N, K) float64."""
        log_in, log_out = self.log_densities(x)
        log_p_y = torch.log_softmax(self.model(x).to(_DOUBLE), dim=1)
        n_classes = log_p_y.shape[1]
        log_lam = math.log(self.lam)
        numerator = torch.logaddexp(log_p_y + log_in[:, None], (log_lam - math.log(n_classes) + log_out)[:, None])
        return numerator - torch.logaddexp(log_in, log_lam + log_out)[:, None]

    def output(self, x: Tensor) -> Tensor:
        """The CCU model's output ``log p(y|x)`` (N, K) in the input's dtype — what the reference network returns,
        and the attack target f(x) that corresponds to the logits of a plain classifier."""
        return self.log_confidence(x).to(x.dtype)

    def density_log_odds(self, x: Tensor) -> Tensor:
        """:meth:`log_odds` as an (N, 1) column in the input's dtype: the target of an adaptive attack that drives
        the mixtures' log-odds of an OOD image to that of an in-distribution image."""
        return self.log_odds(x).to(x.dtype)[:, None]

    def score(self, x: Tensor) -> Tensor:
        return self.log_confidence(x).amax(dim=1).to(x.dtype)


def nearest_neighbour_distance(x: Tensor, data: Tensor, batch_size: int = 256) -> Tensor:
    """L2 distance in pixel space from each image of ``x`` to its nearest image in ``data``, shape (N,).

    How far an image is from the training data in the input space, where the mixtures of Eq. 3 live: the OOD
    attack cannot bring an image into the in-distribution mixture's support with a budget ε much smaller than
    this distance (Section 4).
    """
    _checks.nonempty(data, "data")
    flat_data = data.flatten(1).to(_DOUBLE)
    distances = batched(lambda b: torch.cdist(b.flatten(1).to(_DOUBLE), flat_data.to(b.device)).amin(1), x, batch_size)
    return distances.to(x.device, x.dtype)


def ink_outside_support(x: Tensor, data: Tensor) -> Tensor:
    """Whether each image of ``x`` has a non-zero pixel where every image of ``data`` is zero, shape (N,) bool.

    Such pixels are directions of zero variance in the training data, so the PCA metric gives them the floored
    singular value and a tiny perturbation there costs an enormous metric distance: an in-distribution test image
    with a stray stroke in such a pixel is rejected by the mixtures (the convergence problem of GMMs in high
    dimensions that Section 4 mentions).
    """
    empty = data.flatten(1).amax(0) == 0
    return (x.flatten(1)[:, empty] > 0).any(1)
