"""The Mahalanobis detector (Lee, Lee, Lee & Shin, NeurIPS 2018) — attacked in Appendix D.

For each feature layer ℓ (the classifier's ``feature_maps``), the feature map is mean-pooled over space into a
vector ``h_ℓ(x)``; class means ``μ_{ℓ,c}`` come from the training data with its true labels and one covariance
``Σ_ℓ`` is shared by the classes ("tied"), as in the reference code (``pokaxpoka/deep_Mahalanobis_detector``).
The layer's confidence score is (Lee et al., Eq. 2)

    M_ℓ(x) = max_c −½ (h_ℓ(x) − μ_{ℓ,c})ᵀ Σ_ℓ⁻¹ (h_ℓ(x) − μ_{ℓ,c}),

computed on a preprocessed input (Lee et al., Eq. 4, per layer as in the reference code)

    x̂_ℓ = x − ε · sign(∇ₓ ½ d²_ℓ(x, ĉ_ℓ)),   ĉ_ℓ = the closest class at layer ℓ.

The reference combines the layers with a logistic regression fitted on OOD validation data; the attack paper
(Appendix D.1) notes that such data does not exist in practice and **averages** the layers' scores instead, as
here: ``score(x) = mean_ℓ M_ℓ(x̂_ℓ)`` (an in-score: higher = more in-distribution).

Numerics: the means, covariances and distances are in float64, and ``Σ_ℓ`` gets a small relative ridge
``ridge · trace(Σ_ℓ)/D · I`` so that dead (always-zero) ReLU channels do not make it singular. As with ODIN
(:mod:`oodlib.detectors.odin`), the sign step is a constant (derivative zero almost everywhere), so the score is
differentiable in ``x`` with ``∂x̂_ℓ/∂x = I``; ε is in [0, 1] pixel units (the models normalise inside).
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import Tensor, nn

from .. import _checks
from ..utils import batched, eval_mode, module_device
from .base import ClassifierDetector, register_detector


def pooled(feature_map: Tensor) -> Tensor:
    """Spatial mean of an (N, C, H, W) map → (N, C); (N, D) vectors pass through (Appendix D.1, "average
    pooling per channel")."""
    return feature_map.mean(dim=(2, 3)) if feature_map.dim() == 4 else feature_map


def tied_gaussian(features: Tensor, labels: Tensor, num_classes: int, ridge: float) -> tuple[Tensor, Tensor]:
    """Class means (K, D) and the precision (D, D) of the tied covariance, in float64.

    The covariance is that of the class-centred features (maximum likelihood, divided by N, as sklearn's
    ``EmpiricalCovariance`` in the reference), plus ``ridge · trace/D · I``.
    """
    h = features.double()
    counts = torch.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"no training samples of class(es) {missing}; every class needs a mean")
    means = torch.zeros(num_classes, h.shape[1], dtype=torch.float64, device=h.device)
    means.index_add_(0, labels, h)
    means /= counts[:, None].double()
    centred = h - means[labels]
    cov = centred.T @ centred / h.shape[0]
    cov += ridge * cov.trace().clamp_min(1e-12) / cov.shape[0] * torch.eye(cov.shape[0], dtype=torch.float64,
                                                                             device=h.device)
    return means, torch.linalg.inv(cov)


def half_squared_distances(h: Tensor, means: Tensor, precision: Tensor) -> Tensor:
    """½ d²_M between each row of ``h`` (N, D) and each class mean (K, D) → (N, K), in float64."""
    h = h.double()
    ph = h @ precision
    cross = ph @ means.T
    mean_norm = ((means @ precision) * means).sum(dim=1)
    return 0.5 * ((ph * h).sum(dim=1, keepdim=True) - 2 * cross + mean_norm[None, :])


@register_detector
class Mahalanobis(ClassifierDetector):
    """Mahalanobis distance on multi-layer features — Lee, Lee, Lee & Shin (NeurIPS 2018), *A Simple Unified
    Framework for Detecting Out-of-Distribution Samples and Adversarial Attacks*; layers averaged as in the attack
    paper's Appendix D.1 (module docstring).

    Parameters
    ----------
    model : a classifier with ``feature_maps(x)`` (:class:`oodlib.models.Classifier`).
    magnitude : the preprocessing step ε ≥ 0 in [0, 1] pixel units ("PM" in Tables 3–4; the reference's grid
        {0, 0.0005, 0.001, 0.0014, 0.002, 0.005, 0.01}).
    layers : indices into ``model.feature_maps(x)``; default all of them (the reference's ResNet-34 uses its five
        stages, the first conv block and layer1..layer4).
    ridge : relative ridge added to each tied covariance.
    """

    name = "mahalanobis"
    paper = "Lee, Lee, Lee & Shin, NeurIPS 2018"

    def __init__(self, model: nn.Module, magnitude: float = 0.0, layers: Sequence[int] | None = None,
                 ridge: float = 1e-6) -> None:
        super().__init__(model)
        self.magnitude = float(_checks.number(magnitude, "magnitude", nonnegative=True))
        self.layers = None if layers is None else tuple(int(i) for i in layers)
        self.ridge = float(_checks.number(ridge, "ridge", nonnegative=True))
        self.n_layers = 0

    def with_magnitude(self, magnitude: float) -> "Mahalanobis":
        """A copy sharing the fitted means and precisions, with another preprocessing magnitude (PM)."""
        other = copy.copy(self)
        other.magnitude = float(_checks.number(magnitude, "magnitude", nonnegative=True))
        return other

    # ----------------------------------------------------------------------------------------------- features

    def pooled_features(self, x: Tensor) -> list[Tensor]:
        """The mean-pooled feature vector of each selected layer, ``[(N, D_ℓ), ...]``."""
        maps = self.model.feature_maps(x)
        chosen = maps if self.layers is None else [maps[i] for i in self.layers]
        return [pooled(m) for m in chosen]

    def features(self, x: Tensor) -> Tensor:
        """The concatenated pooled features of the original (not preprocessed) input, (N, Σ D_ℓ): the attack
        target ``"features"``, the second ``f(x)`` of Appendix D.2 ("the concatenation of the feature vectors")."""
        return torch.cat(self.pooled_features(x), dim=1)

    # ------------------------------------------------------------------------------------------------ fitting

    @torch.no_grad()
    def fit(self, x: Tensor | None = None, y: Tensor | None = None, batch_size: int = 500) -> "Mahalanobis":
        """Class means and tied precision per layer from training images ``x`` (N, C, H, W) with their true labels
        ``y`` (N,).

        Raises
        ------
        ValueError
            If ``x`` or ``y`` is missing, ``x`` is empty, ``y`` is not one label per image
            (:func:`oodlib._checks.labels`), or a class has no training image.
        TypeError
            If ``y`` does not hold integer labels.
        """
        if x is None or y is None:
            raise ValueError("Mahalanobis.fit needs training images x and their labels y")
        _checks.nonempty(x, "x")
        y = _checks.labels(y, len(x))
        device = module_device(self.model)
        widths: list[int] = []

        def concatenated(images: Tensor) -> Tensor:
            layers = self.pooled_features(images)
            widths[:] = [h.shape[1] for h in layers]
            return torch.cat(layers, dim=1)

        with eval_mode(self.model):
            features = batched(concatenated, x, batch_size, device).to(device)
        labels = y.to(device)
        num_classes = int(getattr(self.model, "num_classes", int(labels.max()) + 1))
        self.n_layers = len(widths)
        for layer, h in enumerate(features.split(widths, dim=1)):
            means, precision = tied_gaussian(h, labels, num_classes, self.ridge)
            self.register_buffer(f"means_{layer}", means)
            self.register_buffer(f"precision_{layer}", precision)
        return self

    def _gaussian(self, layer: int) -> tuple[Tensor, Tensor]:
        if self.n_layers == 0:
            raise RuntimeError("call fit(x_train, y_train) before scoring")
        return getattr(self, f"means_{layer}"), getattr(self, f"precision_{layer}")

    # ------------------------------------------------------------------------------------------------ scoring

    def step_directions(self, x: Tensor) -> list[Tensor]:
        """Per layer, ``sign(∇ₓ ½ d²_ℓ(x, closest class))`` (Lee et al., Eq. 4), each a constant (detached)."""
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            features = self.pooled_features(leaf)
            closest = []
            for layer, h in enumerate(features):
                means, precision = self._gaussian(layer)
                closest.append(half_squared_distances(h, means, precision).amin(dim=1).sum())
            grads = [torch.autograd.grad(d, leaf, retain_graph=layer < len(closest) - 1)[0]
                     for layer, d in enumerate(closest)]
        return [g.sign() for g in grads]

    def layer_scores(self, x: Tensor) -> Tensor:
        """``M_ℓ(x̂_ℓ) = max_c −½ d²_{ℓ,c}`` of each layer on its own preprocessed input, (N, L) float64."""
        n = x.shape[0]
        if self.magnitude == 0:
            features = self.pooled_features(x)
        else:
            steps = self.step_directions(x)
            stacked = torch.cat([x - self.magnitude * s for s in steps])
            features = [h[layer * n:(layer + 1) * n] for layer, h in enumerate(self.pooled_features(stacked))]
        scores = [-half_squared_distances(h, *self._gaussian(layer)).amin(dim=1) for layer, h in enumerate(features)]
        return torch.stack(scores, dim=1)

    def score(self, x: Tensor) -> Tensor:
        """In-score: the mean over layers of ``max_c −½ d²_M`` (Appendix D.1), float64, shape (N,)."""
        return self.layer_scores(x).mean(dim=1)
