"""Gram-matrix deviations (Sastry & Oore, ICML 2020) — attacked in Appendix H.

For each feature map ``F`` (C channels × S positions) and each power ``p = 1..P`` the method forms the p-th order
Gram matrix ``(F^p)(F^p)ᵀ`` (``F^p`` elementwise), sums its rows and takes the signed p-th root, giving one
C-vector per layer and power (Appendix H.1: ``G_l^p = (F_l^p F_l^{pT})^{1/p}``; the reference code,
``VectorInstitute/gram-ood-detection``, keeps the row sums). From the training data it records, per **predicted**
class, layer and power, the elementwise minimum and maximum. A test image's deviation at one layer is

    δ_l(x) = Σ_p Σ_i relu(min_i − G_i) / |min_i| + relu(G_i − max_i) / |max_i|      (over channels i)

for its predicted class; each layer's deviation is divided by its mean over held-out in-distribution images and the
layers are summed into the *total deviation* Δ(x). Δ is an OOD score, so the in-score here is **−Δ**.

Numerics (Appendix H.2). The root ``B^{1/p}`` has an infinite derivative at ``B = 0`` (a channel that is zero
everywhere, common after a ReLU), and ``F^p`` overflows float32 for large p, so the attack's gradients became inf or
NaN. The authors (a) computed in float64, (b) wrote the root as ``exp(log(B + 1e-40) / p)`` and (c) used (b) to
generate the attacked images and the original root to score them; they could not go beyond P = 5. Here ``dtype``
and ``root`` select these variants (``root="direct"``: the original ``sign(B)|B|^{1/p}``; ``root="log"``:
``sign(B) exp(log(|B| + 1e-40)/p)``), and :func:`nonfinite_gradient_fraction` measures where they break.

The row sum is computed as ``Σ_s F^p_{is} Σ_j F^p_{js}``, equal to summing the rows of the C×C Gram matrix but
without forming it.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import Tensor, nn

from .. import _checks
from ..utils import batched, eval_mode, module_device
from .base import ClassifierDetector, register_detector

ROOTS = ("direct", "log")
LOG_EPS = 1e-40  # Appendix H.2 (b)
DENOMINATOR_EPS = 1e-6  # as in the reference's |min + 1e-6|, |max + 1e-6|
SCALE_FLOOR = 1e-12  # floor on a layer's mean held-out deviation (a layer no held-out image deviates on)


def signed_root(b: Tensor, p: int, root: str) -> Tensor:
    """``sign(B)·|B|^{1/p}`` (``root="direct"``) or ``sign(B)·exp(log(|B| + 1e-40)/p)`` (``"log"``, Appendix
    H.2 (b)); the sign is a constant, so only the root is differentiated."""
    magnitude = b.abs()
    if root == "direct":
        rooted = magnitude ** (1.0 / p)
    elif root == "log":
        rooted = torch.exp(torch.log(magnitude + LOG_EPS) / p)
    else:
        raise ValueError(f"unknown root {root!r}; valid choices: {', '.join(ROOTS)}")
    return b.sign().detach() * rooted


def _as_channels(feature_map: Tensor, dtype: torch.dtype) -> Tensor:
    """(N, C, H, W) → (N, C, H·W) and (N, D) → (N, D, 1) (D channels at one position), in ``dtype``."""
    f = feature_map.to(dtype)
    return f.flatten(2) if f.dim() == 4 else f.unsqueeze(2)


def _root_of_row_sums(fp: Tensor, p: int, root: str) -> Tensor:
    """Signed p-th root of the row sums of ``fp fpᵀ`` (``fp`` = F^p, (N, C, S)), computed as
    ``Σ_s fp_{is} Σ_j fp_{js}`` without forming the C×C matrix → (N, C)."""
    return signed_root((fp * fp.sum(dim=1, keepdim=True)).sum(dim=2), p, root)


def gram_row(feature_map: Tensor, p: int, root: str, dtype: torch.dtype) -> Tensor:
    """The p-th order Gram feature of each sample's map alone, (N, C) in ``dtype``."""
    return _root_of_row_sums(_as_channels(feature_map, dtype) ** p, p, root)


def gram_rows(feature_map: Tensor, powers: int, root: str, dtype: torch.dtype) -> Tensor:
    """The Gram features of each sample's map for p = 1..``powers`` → (N, P, C) in ``dtype``; ``F^p`` is built
    by repeated multiplication, cheaper than a power per p."""
    f = _as_channels(feature_map, dtype)
    rows, fp = [], f
    for p in range(1, powers + 1):
        if p > 1:
            fp = fp * f
        rows.append(_root_of_row_sums(fp, p, root))
    return torch.stack(rows, dim=1)


def deviation(g: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """Σ over the last axis of ``relu(low − g)/|low + 1e-6| + relu(g − high)/|high + 1e-6|``: how far ``g``
    lies outside the box [low, high], relative to its bounds (Sastry & Oore, Eq. 3)."""
    below = torch.relu(low - g) / (low + DENOMINATOR_EPS).abs()
    above = torch.relu(g - high) / (high + DENOMINATOR_EPS).abs()
    return (below + above).sum(dim=-1)


@register_detector
class Gram(ClassifierDetector):
    """Gram-matrix total deviation — Sastry & Oore (ICML 2020), *Detecting Out-of-Distribution Examples with
    Gram Matrices*; in-score −Δ (module docstring), the detector of the attack paper's Appendix H.

    Parameters
    ----------
    model : a classifier with ``feature_maps(x)`` and logits ``model(x)`` (:class:`oodlib.models.Classifier`).
    powers : the largest power P (powers 1..P); the reference uses 10, the attack paper 5 (Appendix H.2).
    root : ``"log"`` (default; Appendix H.2 (b): finite input gradients) or ``"direct"`` (the reference's root,
        whose input gradient is inf/NaN wherever a row sum is 0 — kept by name to reproduce Appendix H.2).
        The two scores differ by the 1e-40 inside the logarithm only.
    dtype : the precision of the Gram features and deviations (float64 per Appendix H.2 (a)).
    holdout_fraction : the share of ``fit``'s images kept aside, when no ``x_holdout`` is given, to normalise
        each layer's deviation (the reference uses held-out in-distribution test images).
    divide_by_confidence : also divide Δ by the maximum softmax probability, as the reference code does
        (off by default: the attack paper describes Δ alone).
    seed : seeds the held-out split.
    """

    name = "gram"
    paper = "Sastry & Oore, ICML 2020"

    def __init__(self, model: nn.Module, powers: int = 10, root: str = "log", dtype: torch.dtype = torch.float64,
                 holdout_fraction: float = 0.2, divide_by_confidence: bool = False, seed: int = 0) -> None:
        super().__init__(model)
        if not (isinstance(powers, int) and powers >= 1):
            raise ValueError(f"powers must be a positive integer, got {powers!r}")
        if root not in ROOTS:
            raise ValueError(f"unknown root {root!r}; valid choices: {', '.join(ROOTS)}")
        if not 0 < holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must lie in (0, 1), got {holdout_fraction!r}")
        self.powers, self.root, self.dtype = powers, root, dtype
        self.holdout_fraction, self.divide_by_confidence, self.seed = holdout_fraction, divide_by_confidence, seed
        self.fitted_powers = 0
        self.n_layers = 0
        self.n_fit_images = self.n_holdout_images = 0

    def with_options(self, *, powers: int | None = None, root: str | None = None,
                     dtype: torch.dtype | None = None) -> "Gram":
        """A copy sharing the fitted statistics with other ``powers`` (≤ the fitted P), ``root`` or ``dtype`` —
        e.g. the log-form root for the attack and the direct root for scoring (Appendix H.2 (c))."""
        limit = self.fitted_powers or self.powers
        if powers is not None and not (isinstance(powers, int) and 1 <= powers <= limit):
            raise ValueError(f"powers must be an integer in 1..{limit} (the fitted P), got {powers!r}")
        if root is not None and root not in ROOTS:
            raise ValueError(f"unknown root {root!r}; valid choices: {', '.join(ROOTS)}")
        other = copy.copy(self)
        other.powers = self.powers if powers is None else powers
        other.root = self.root if root is None else root
        other.dtype = self.dtype if dtype is None else dtype
        return other

    # ------------------------------------------------------------------------------------------------ features

    def gram_features(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """Per layer the (N, P, C_ℓ) Gram features of ``model.feature_maps(x)``, and the logits (N, K)."""
        feats = [gram_rows(m, self.powers, self.root, self.dtype) for m in self.model.feature_maps(x)]
        return feats, self.model(x)

    # ------------------------------------------------------------------------------------------------- fitting

    def _split(self, n: int) -> tuple[Tensor, Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(n, generator=generator)
        n_holdout = min(n - 1, max(1, round(self.holdout_fraction * n)))  # both parts keep at least one image
        return order[n_holdout:].sort().values, order[:n_holdout].sort().values

    @torch.no_grad()
    def fit(self, x: Tensor | None = None, y: Tensor | None = None, x_holdout: Tensor | None = None,
            batch_size: int = 500) -> "Gram":
        """Per predicted class, layer and power the elementwise min/max of the Gram features of ``x`` (labels
        ``y`` are not used: the method conditions on the *predicted* class); then each layer's mean deviation on
        ``x_holdout`` (default: a seeded ``holdout_fraction`` of ``x``, kept out of the min/max; at least one image
        on each side).

        Raises
        ------
        ValueError
            If ``x`` is missing or empty, holds a single image while ``x_holdout`` is not given, or ``x_holdout``
            is empty.
        """
        if x is None:
            raise ValueError("Gram.fit needs in-distribution training images x")
        _checks.nonempty(x, "x")
        if x_holdout is None and len(x) < 2:
            raise ValueError(f"Gram.fit needs at least 2 images x without x_holdout (a holdout_fraction of x "
                             f"calibrates the deviations and the rest gives the min/max); got {len(x)}")
        if x_holdout is not None:
            _checks.nonempty(x_holdout, "x_holdout")
        if x_holdout is None:
            keep, held = self._split(len(x))
            x, x_holdout = x[keep], x[held]
        self.n_fit_images, self.n_holdout_images = len(x), len(x_holdout)
        device = module_device(self.model)
        with eval_mode(self.model):
            feats, predicted = self._fit_features(x, batch_size, device)
            num_classes = int(getattr(self.model, "num_classes", int(predicted.max()) + 1))
            self.n_layers, self.fitted_powers = len(feats), self.powers
            for layer, f in enumerate(feats):
                low, high = _class_extremes(f, predicted, num_classes)
                self.register_buffer(f"low_{layer}", low)
                self.register_buffer(f"high_{layer}", high)
            held = batched(self.power_deviations, x_holdout, batch_size, device)
        self.register_buffer("holdout_mean", held.double().mean(dim=0).to(device))
        return self

    def _fit_features(self, x: Tensor, batch_size: int, device: torch.device) -> tuple[list[Tensor], Tensor]:
        """Per layer the (N, P, C_ℓ) Gram features of ``x`` and the predicted classes (N,), on ``device``."""
        shapes: list[torch.Size] = []

        def flat(images: Tensor) -> Tensor:
            feats, logits = self.gram_features(images)
            shapes[:] = [f.shape[1:] for f in feats]
            predicted = logits.argmax(dim=1, keepdim=True).to(feats[0].dtype)
            return torch.cat([f.flatten(1) for f in feats] + [predicted], dim=1)

        out = batched(flat, x, batch_size, device).to(device)
        parts = out.split([shape.numel() for shape in shapes] + [1], dim=1)
        feats = [part.reshape(len(x), *shape) for part, shape in zip(parts, shapes)]
        return feats, parts[-1].flatten().long()

    # ------------------------------------------------------------------------------------------------- scoring

    def _check_fitted(self, holdout: bool = True) -> None:
        """``RuntimeError`` unless the class extremes (and, with ``holdout``, the held-out normalisation) exist."""
        if self.n_layers == 0 or (holdout and "holdout_mean" not in self._buffers):
            raise RuntimeError("call fit(x_train) before scoring")

    def power_deviations(self, x: Tensor) -> Tensor:
        """δ_{ℓ,p}(x) for the predicted class of each image, shape (N, L, P), before normalisation. Raises
        ``RuntimeError`` before :meth:`fit`."""
        self._check_fitted(holdout=False)
        feats, logits = self.gram_features(x)
        predicted = logits.argmax(dim=1)
        out = []
        for layer, f in enumerate(feats):
            low = getattr(self, f"low_{layer}")[predicted, :self.powers].to(self.dtype)
            high = getattr(self, f"high_{layer}")[predicted, :self.powers].to(self.dtype)
            out.append(deviation(f, low, high))
        return torch.stack(out, dim=1)

    def layer_deviations(self, x: Tensor) -> Tensor:
        """Each layer's deviation (summed over powers 1..P) divided by its mean on held-out ID images, (N, L).
        Raises ``RuntimeError`` before :meth:`fit`."""
        self._check_fitted()
        scale = self.holdout_mean[:, :self.powers].sum(dim=1).clamp_min(SCALE_FLOOR).to(self.dtype)
        return self.power_deviations(x).sum(dim=2) / scale

    def total_deviation(self, x: Tensor) -> Tensor:
        """Δ(x) = Σ_ℓ normalised deviations (optionally divided by the max softmax probability), (N,)."""
        delta = self.layer_deviations(x).sum(dim=1)
        if self.divide_by_confidence:
            delta = delta / torch.softmax(self.model(x), dim=1).amax(dim=1).to(delta.dtype)
        return delta

    def score(self, x: Tensor) -> Tensor:
        """In-score −Δ(x) (the method's total deviation is an OOD score, negated here)."""
        return -self.total_deviation(x)

    def ood_score(self, x: Tensor) -> Tensor:
        """The method's OOD score, the total deviation Δ(x), (N,)."""
        return self.total_deviation(x)


def _class_extremes(features: Tensor, predicted: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per predicted class the elementwise min and max of (N, P, C) features → two (K, P, C) tensors. A class
    that no training image is predicted as gets the extremes over all images."""
    low = features.amin(dim=0, keepdim=True).repeat(num_classes, 1, 1)
    high = features.amax(dim=0, keepdim=True).repeat(num_classes, 1, 1)
    for c in predicted.unique().tolist():
        members = features[predicted == c]
        low[c], high[c] = members.amin(dim=0), members.amax(dim=0)
    return low, high


def nonfinite_gradient_fraction(score: Callable[[Tensor], Tensor], x: Tensor) -> float:
    """The fraction of images whose input gradient of ``score`` has an inf or NaN entry (Appendix H.2)."""
    leaf = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(score(leaf).sum(), leaf)
    return float((~torch.isfinite(grad.flatten(1))).any(dim=1).float().mean())


def nonfinite_gradients_by_power(model: nn.Module, x: Tensor, max_power: int, root: str = "direct",
                                 dtype: torch.dtype = torch.float32) -> Tensor:
    """For each power p = 1..``max_power``, the fraction of images whose input gradient of the p-th order Gram
    features summed over layers and channels, ``Σ_ℓ Σ_i G^p_{ℓ,i}(x)``, has an inf or NaN entry — where the
    attack's back-propagation breaks (Appendix H.2), for one choice of ``root`` and ``dtype``. Shape (P,)."""
    leaf = x.detach().clone().requires_grad_(True)
    maps = model.feature_maps(leaf)
    fractions = []
    for p in range(1, max_power + 1):
        total = sum(gram_row(m, p, root, dtype).sum() for m in maps)
        (grad,) = torch.autograd.grad(total, leaf, retain_graph=p < max_power)
        fractions.append((~torch.isfinite(grad.flatten(1))).any(dim=1).float().mean())
    return torch.stack(fractions)


def first_nonfinite_power(model: nn.Module, x: Tensor, max_power: int, root: str = "direct",
                          dtype: torch.dtype = torch.float32) -> int | None:
    """The smallest p ≤ ``max_power`` at which some image's gradient is non-finite
    (:func:`nonfinite_gradients_by_power`), or None if none is."""
    fractions = nonfinite_gradients_by_power(model, x, max_power, root, dtype)
    broken = torch.nonzero(fractions > 0).flatten()
    return int(broken[0]) + 1 if len(broken) else None
