"""Null-space OOD attacks on linear and ReLU encoders (Liang et al., Section 2.2).

Section 2.2 of the paper sketches a constructive OOD attack.  For a one-layer
linear encoder ``z = W x`` with ``W`` of shape ``(K, M)`` and ``K < M``, any
vector ``eta`` of the null space ``{eta : W eta = 0}`` gives ``W (x + eta) = W x``,
so ``x + eta`` has exactly the code of ``x`` while ``||eta||`` can be made
arbitrarily large (:func:`null_space_attack`).  A network built only from
``Linear`` and ``ReLU`` layers is piecewise linear, so "a similar approach can be
applied": inside the activation region of ``x`` the network is an affine map
``A x + b``, a step along the null space of ``A`` keeps the output fixed until
some hidden pre-activation changes sign (:func:`relu_null_space_attack`), and
repeating the construction region after region lets the perturbation grow while
the output stays put (:func:`relu_null_space_walk`).

Beyond the paper's sketch: :func:`classifier_mlp_layers` folds the book's MLP's input
standardisation into its first layer so the walk acts on images; the null-space
construction leaves the pixel range [0, 1], and :func:`box_constrained_code_match`
solves exactly, for a linear encoder, the constrained problem Algorithm 1 addresses in
general — the image in [0, 1] nearest to an OOD start whose code is exactly ``z_in``.

All computations are done in float64; results are returned in the input's dtype
(a float32 result therefore carries float32 rounding in ``W x'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from . import _checks

__all__ = [
    "BoxMatchResult",
    "ReluNullSpaceResult",
    "box_constrained_code_match",
    "classifier_mlp_layers",
    "display_scaled",
    "fraction_outside_unit_box",
    "LinearCode",
    "linear_code",
    "mlp_layers",
    "null_space_attack",
    "null_space_basis",
    "pca_encoder",
    "relative_code_error",
    "relu_null_space_attack",
    "relu_null_space_walk",
    "relu_null_space_walks",
    "relu_region_radius",
    "stack_walks",
]

# The linear algebra runs in numpy float64: the many small products of a walk are
# far cheaper there than through torch's intra-op thread pool on a busy machine.
Params = list[tuple[np.ndarray, np.ndarray]]

# A hidden pre-activation within this relative distance of zero sits on its boundary.
_AT_ZERO = 1e-9
# Rates of change below this fraction of the largest one are rounding residue.
_NEGLIGIBLE_RATE = 1e-9


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    """Detached float64 numpy copy of a tensor."""
    return t.detach().to(device="cpu", dtype=torch.float64).numpy()


def _default_rtol(W: np.ndarray) -> float:
    """Rank tolerance relative to the largest singular value (numpy ``matrix_rank`` rule)."""
    return max(W.shape) * float(np.finfo(np.float64).eps)


def _numerical_rank(s: np.ndarray, rtol: float) -> int:
    """Number of singular values above ``rtol * max(s)``."""
    if s.size == 0 or s[0] == 0.0:
        return 0
    return int(np.count_nonzero(s > rtol * s[0]))


def _null_space_basis_np(W: np.ndarray, rtol: float | None = None) -> np.ndarray:
    """Columns spanning ``null(W)``, from a full float64 SVD."""
    _, s, Vh = np.linalg.svd(W, full_matrices=True)
    rank = _numerical_rank(s, _default_rtol(W) if rtol is None else rtol)
    return Vh[rank:].T.copy()


def null_space_basis(W: torch.Tensor, rtol: float | None = None) -> torch.Tensor:
    """Orthonormal basis of the null space ``{eta : W eta = 0}`` (Section 2.2).

    Parameters
    ----------
    W : torch.Tensor
        Matrix of shape ``(K, M)``.
    rtol : float, optional
        Singular values ``<= rtol * s_max`` count as zero; default
        ``max(K, M) * eps(float64)``.

    Returns
    -------
    torch.Tensor
        Float64 CPU tensor of shape ``(M, M - rank(W))`` whose columns are the
        paper's basis vectors ``eta_1, ..., eta_{M-K}`` (for full-rank ``W``),
        computed from a full SVD in float64.
    """
    if W.ndim != 2:
        raise ValueError(f"W must be 2-D, got shape {tuple(W.shape)}")
    return torch.from_numpy(_null_space_basis_np(_to_numpy(W), rtol))


def _unit_rows(v: np.ndarray) -> np.ndarray:
    """Normalise each row of ``v`` to unit Euclidean norm."""
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def null_space_attack(W: torch.Tensor, x: torch.Tensor, magnitude: float, seed: int = 0) -> torch.Tensor:
    """Move ``x`` a distance ``magnitude`` along the null space of ``W`` (Section 2.2).

    Implements ``x' = x + sum_i lambda_i eta_i`` with the ``eta_i`` an orthonormal
    null-space basis of ``W`` and ``lambda`` a seeded Gaussian vector rescaled so
    that ``||x' - x||_2 = magnitude``.  Then ``W x' = W x`` up to rounding, however
    large ``magnitude`` is.

    Parameters
    ----------
    W : torch.Tensor
        Encoder matrix of shape ``(K, M)`` with a non-trivial null space.
    x : torch.Tensor
        Input of shape ``(M,)`` or a batch ``(N, M)``; each row gets its own
        random direction.
    magnitude : float
        Euclidean norm of the perturbation, ``>= 0``.
    seed : int, default 0
        Seed of the local ``numpy.random.Generator`` drawing the directions.

    Returns
    -------
    torch.Tensor
        ``x'`` with the shape, dtype and device of ``x`` (computed in float64; a
        float32 result carries float32 rounding in ``W x'``).
    """
    magnitude = _checks.number(magnitude, "magnitude", nonnegative=True)
    if x.ndim not in (1, 2) or x.shape[-1] != W.shape[-1]:
        raise ValueError(f"x must have shape (M,) or (N, M) with M={W.shape[-1]}, got {tuple(x.shape)}")
    if W.ndim != 2:
        raise ValueError(f"W must be 2-D, got shape {tuple(W.shape)}")
    basis = _null_space_basis_np(_to_numpy(W))
    if basis.shape[1] == 0:
        raise ValueError("W has a trivial null space (rank(W) == M); no null-space attack exists")
    x64 = _to_numpy(x).reshape(-1, W.shape[-1])
    lam = np.random.default_rng(seed).standard_normal((x64.shape[0], basis.shape[1]))
    x_adv = x64 + magnitude * _unit_rows(lam @ basis.T)
    return torch.from_numpy(x_adv.reshape(tuple(x.shape))).to(device=x.device, dtype=x.dtype)


@dataclass
class ReluNullSpaceResult:
    """Outcome of :func:`relu_null_space_attack` or :func:`relu_null_space_walk`.

    Attributes
    ----------
    x : torch.Tensor
        The attacked input ``x'`` (shape and dtype of the original input).
    output_error : float
        ``||f(x') - f(x)||_2``, evaluated by a float64 forward pass.
    relative_output_error : float
        ``output_error / ||f(x)||_2``.
    perturbation_norm : float
        ``||x' - x||_2``.
    pattern_preserved : bool
        Whether the ReLU activation pattern at ``x'`` equals the one at ``x``.
    max_norm_in_region : float
        Largest step along the (first) null-space direction that stays in the
        activation region of ``x``; ``inf`` if the ray never leaves it.
    n_segments : int
        Number of linear segments taken (1 for :func:`relu_null_space_attack`).
    """

    x: torch.Tensor
    output_error: float
    relative_output_error: float
    perturbation_norm: float
    pattern_preserved: bool
    max_norm_in_region: float
    n_segments: int = 1


def mlp_layers(model: nn.Sequential) -> list[nn.Linear]:
    """Linear layers of a ``Linear, ReLU, Linear, ..., Linear`` MLP (Section 2.2).

    Parameters
    ----------
    model : torch.nn.Sequential
        Made of ``Flatten`` (only before the first ``Linear``), ``Linear`` and
        ``ReLU`` modules, with exactly one ``ReLU`` between consecutive
        ``Linear`` layers and none after the last.

    Returns
    -------
    list of torch.nn.Linear
        The linear layers in order; the network is
        ``L_D o relu o ... o relu o L_1``.

    Raises
    ------
    TypeError
        If ``model`` contains another module type.
    ValueError
        If the modules are not in the ``Linear (ReLU Linear)*`` order or the
        layer widths do not chain.
    """
    kinds: list[str] = []
    layers: list[nn.Linear] = []
    for module in model:
        if isinstance(module, nn.Linear):
            kinds.append("L")
            layers.append(module)
        elif isinstance(module, nn.ReLU):
            kinds.append("R")
        elif isinstance(module, nn.Flatten):
            if layers:
                raise ValueError("Flatten is only supported before the first Linear layer")
        else:
            raise TypeError(f"unsupported layer {type(module).__name__}; expected Linear, ReLU or Flatten")
    if not layers or "".join(kinds) != "LR" * (len(layers) - 1) + "L":
        raise ValueError(f"expected Linear (ReLU Linear)*, got {''.join(kinds) or 'no Linear layer'}")
    for first, second in zip(layers, layers[1:]):
        if first.out_features != second.in_features:
            raise ValueError(f"layer widths do not chain: {first.out_features} -> {second.in_features}")
    return layers


def _as_layers(layers: Sequence[nn.Linear] | nn.Sequential) -> Params:
    """Float64 ``(weight, bias)`` numpy pairs of the MLP's linear layers."""
    if isinstance(layers, nn.Sequential):
        layers = mlp_layers(layers)
    if not layers or not all(isinstance(layer, nn.Linear) for layer in layers):
        raise TypeError("layers must be a non-empty sequence of torch.nn.Linear")
    pairs = []
    for layer in layers:
        weight = _to_numpy(layer.weight)
        bias = np.zeros(weight.shape[0]) if layer.bias is None else _to_numpy(layer.bias)
        pairs.append((weight, bias))
    return pairs


def _pre_activations(params: Params, x: np.ndarray) -> list[np.ndarray]:
    """Pre-activations of every layer at ``x`` (the last entry is the output)."""
    pre = []
    a = x
    for i, (weight, bias) in enumerate(params):
        h = weight @ a + bias
        pre.append(h)
        a = np.maximum(h, 0.0) if i < len(params) - 1 else h
    return pre


def _pattern(pre: list[np.ndarray]) -> list[np.ndarray]:
    """ReLU activation pattern (``pre > 0``) of the hidden layers."""
    return [h > 0 for h in pre[:-1]]


def _same_pattern(p: list[np.ndarray], q: list[np.ndarray]) -> bool:
    """Whether two activation patterns agree unit by unit."""
    return all(np.array_equal(a, b) for a, b in zip(p, q))


def _effective_matrix(params: Params, masks: list[np.ndarray]) -> np.ndarray:
    """Exact Jacobian ``A = W_D diag(m_{D-1}) ... diag(m_1) W_1`` of the region.

    Multiplied from the output side, so every product has only ``K`` rows.
    """
    A = params[-1][0]
    for (weight, _), mask in zip(reversed(params[:-1]), reversed(masks)):
        A = (A * mask) @ weight
    return A


def _rates(params: Params, masks: list[np.ndarray], d: np.ndarray) -> list[np.ndarray]:
    """Derivatives of the hidden pre-activations along ``d`` inside the region."""
    rates = [params[0][0] @ d]
    for (weight, _), mask in zip(params[1:-1], masks):
        rates.append(weight @ (mask * rates[-1]))
    return rates


def _region_exit(pre: list[np.ndarray], masks: list[np.ndarray], rates: list[np.ndarray]) -> tuple[float, int, int]:
    """Largest step keeping every hidden pre-activation on its pattern's side.

    Active units (mask True) need ``h + t r >= 0``, inactive units ``h + t r <= 0``;
    only units moving toward zero constrain ``t``, at ``|h| / |r|``. Rates below
    ``_NEGLIGIBLE_RATE`` times the largest rate are rounding residue of a direction
    that keeps the unit fixed (see :func:`_boundary_rows`) and do not constrain ``t``.

    Returns
    -------
    tuple
        ``(t_max, layer, unit)`` of the first unit to reach zero; ``(inf, -1, -1)``
        if the ray never leaves the region.
    """
    best = (float("inf"), -1, -1)
    negligible = _NEGLIGIBLE_RATE * max(float(np.abs(r).max()) if r.size else 0.0 for r in rates)
    for layer, (h, mask, r) in enumerate(zip(pre, masks, rates)):
        slack = np.maximum(np.where(mask, h, -h), 0.0)
        speed = np.where(mask, -r, r)
        limits = np.full(h.shape, np.inf)
        moving = speed > negligible
        limits[moving] = slack[moving] / speed[moving]
        unit = int(np.argmin(limits))
        if limits[unit] < best[0]:
            best = (float(limits[unit]), layer, unit)
    return best


def _boundary_rows(params: Params, masks: list[np.ndarray], pre: list[np.ndarray]) -> np.ndarray:
    """Input gradients, inside the current region, of the hidden pre-activations that sit at zero.

    A direction orthogonal to these rows keeps every such unit exactly at zero, so it
    slides along the intersection of their boundaries and cannot be stopped by them.
    """
    rows = []
    jacobian = params[0][0]
    for i, (h, mask) in enumerate(zip(pre[:-1], masks)):
        at_zero = np.abs(h) <= _AT_ZERO * (1.0 + float(np.abs(h).max()))
        rows.append(jacobian[at_zero])
        if i + 1 < len(pre) - 1:
            jacobian = params[i + 1][0] @ (mask[:, None] * jacobian)
    return np.vstack(rows)


def _project_to_null(A: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Orthogonal projection of ``v`` onto ``null(A)``, via the row space of ``A``."""
    _, s, Vh = np.linalg.svd(A, full_matrices=False)
    Q = Vh[: _numerical_rank(s, _default_rtol(A))]
    return v - Q.T @ (Q @ v)


def _flat_input(params: Params, x: torch.Tensor) -> np.ndarray:
    """``x`` as a float64 vector of the first layer's width (single sample only)."""
    width = params[0][0].shape[1]
    if x.numel() != width:
        raise ValueError(f"x must hold one sample of {width} values, got shape {tuple(x.shape)}")
    return _to_numpy(x).reshape(width)


def _random_null_direction(A: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Seeded uniformly random unit vector in the null space of ``A``."""
    g = rng.standard_normal(A.shape[1])
    d = _project_to_null(A, g)
    norm = float(np.linalg.norm(d))
    if norm <= 1e-12 * float(np.linalg.norm(g)):
        raise ValueError("the region's Jacobian has a trivial null space; no null-space step exists")
    return d / norm


def _result(params: Params, x: torch.Tensor, x_new: np.ndarray, t_first: float, n_segments: int) -> ReluNullSpaceResult:
    """Return the attacked input in the caller's dtype and evaluate the diagnostics on it."""
    x_out = torch.from_numpy(x_new.reshape(tuple(x.shape))).to(device=x.device, dtype=x.dtype)
    x0, x1 = _flat_input(params, x), _flat_input(params, x_out)
    pre0, pre1 = _pre_activations(params, x0), _pre_activations(params, x1)
    error = float(np.linalg.norm(pre1[-1] - pre0[-1]))
    scale = float(np.linalg.norm(pre0[-1]))
    return ReluNullSpaceResult(
        x=x_out,
        output_error=error,
        relative_output_error=error / scale if scale > 0 else error,
        perturbation_norm=float(np.linalg.norm(x1 - x0)),
        pattern_preserved=_same_pattern(_pattern(pre0), _pattern(pre1)),
        max_norm_in_region=t_first,
        n_segments=n_segments,
    )


def relu_null_space_attack(
    layers: Sequence[nn.Linear] | nn.Sequential,
    x: torch.Tensor,
    magnitude: float,
    seed: int = 0,
) -> ReluNullSpaceResult:
    """Null-space step inside the activation region of a ReLU MLP (Section 2.2).

    The MLP ``L_D o relu o ... o relu o L_1`` is piecewise linear.  With the
    activation pattern of ``x`` fixed, the network is ``A x + b`` with
    ``A = W_D diag(m_{D-1}) ... diag(m_1) W_1`` (computed exactly from the masks).
    A seeded random unit direction ``d`` in ``null(A)`` leaves the output
    unchanged as long as no hidden pre-activation changes sign; the first sign
    change happens at ``t_max = min |h_u| / |r_u|`` over the units ``u`` whose
    pre-activation ``h_u`` moves toward zero at rate ``r_u``.  The step taken is
    ``min(magnitude, t_max)``.

    Parameters
    ----------
    layers : sequence of torch.nn.Linear or torch.nn.Sequential
        The MLP's linear layers (a ``Sequential`` goes through :func:`mlp_layers`).
    x : torch.Tensor
        One input with ``in_features`` values (any shape, flattened internally).
    magnitude : float
        Requested perturbation norm, ``>= 0``.
    seed : int, default 0
        Seed of the local ``numpy.random.Generator`` drawing ``d``.

    Returns
    -------
    ReluNullSpaceResult
        ``x' = x + min(magnitude, t_max) d``, its output error (rounding level
        while the pattern holds), achieved norm, ``max_norm_in_region = t_max``
        and whether the pattern was preserved.  At ``t = t_max`` one unit sits at
        zero and rounding decides its side, which does not change the output
        (ReLU is continuous) but can flip ``pattern_preserved``.
    """
    if magnitude < 0:
        raise ValueError(f"magnitude must be >= 0, got {magnitude}")
    params = _as_layers(layers)
    x64 = _flat_input(params, x)
    pre = _pre_activations(params, x64)
    masks = _pattern(pre)
    d = _random_null_direction(_effective_matrix(params, masks), np.random.default_rng(seed))
    t_max, _, _ = _region_exit(pre, masks, _rates(params, masks, d))
    return _result(params, x, x64 + min(magnitude, t_max) * d, t_max, 1)


def _walk_direction(A: np.ndarray, previous: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Next walk direction: the previous one projected onto ``null(A)``.

    Keeping the previous direction (rather than a fresh random one) makes the
    walk nearly straight, so ``||x' - x||`` grows with the path length.  Falls
    back to a fresh random null direction if the projection is negligible.
    """
    d = _project_to_null(A, previous)
    norm = float(np.linalg.norm(d))
    if norm < 1e-3:
        return _random_null_direction(A, rng)
    return d / norm


def _step_to_sphere(u: np.ndarray, d: np.ndarray, radius: float) -> float:
    """Step ``t >= 0`` with ``||u + t d|| = radius`` (``d`` unit, ``||u|| <= radius``)."""
    ud = float(u @ d)
    gap = max(radius**2 - float(u @ u), 0.0)
    return -ud + (ud**2 + gap) ** 0.5


def relu_null_space_walk(
    layers: Sequence[nn.Linear] | nn.Sequential,
    x: torch.Tensor,
    total_magnitude: float,
    seed: int = 0,
    max_segments: int = 1000,
) -> ReluNullSpaceResult:
    """Chain null-space steps across activation regions of a ReLU MLP (Section 2.2).

    Starts as :func:`relu_null_space_attack` (same seed, same first direction).
    Each segment walks along the current region's null-space direction up to the
    region boundary, where the single unit reaching zero is switched to its new
    state; the output is unchanged at the boundary because ReLU is continuous.
    The next direction is the previous one projected onto the new region's null
    space (reversed if it would push the switched unit straight back), so the
    perturbation can grow far beyond one region while the output error only
    accumulates rounding. At a corner where several units sit at zero and both
    directions are blocked at once, the direction is also projected onto the
    null space of those units' input gradients, so it slides along their common
    boundary instead of switching them back and forth.

    Parameters
    ----------
    layers : sequence of torch.nn.Linear or torch.nn.Sequential
        The MLP's linear layers.
    x : torch.Tensor
        One input with ``in_features`` values.
    total_magnitude : float
        Target perturbation norm ``||x' - x||_2``; the walk stops on reaching it.
    seed : int, default 0
        Seed of the local generator for the first (and any fallback) direction.
    max_segments : int, default 1000
        Maximum number of linear segments.

    Returns
    -------
    ReluNullSpaceResult
        ``max_norm_in_region`` is the first region's ``t_max`` (what a single
        :func:`relu_null_space_attack` could reach), ``n_segments`` the segments
        used and ``pattern_preserved`` compares the final pattern with the
        initial one (normally False once a boundary has been crossed).
    """
    if total_magnitude < 0 or max_segments < 1:
        raise ValueError("need total_magnitude >= 0 and max_segments >= 1")
    params = _as_layers(layers)
    rng = np.random.default_rng(seed)
    x0 = _flat_input(params, x)
    x_cur = x0.copy()
    masks = _pattern(_pre_activations(params, x0))
    d = _random_null_direction(_effective_matrix(params, masks), rng)
    t_first = float("nan")
    stall = 1e-12 * max(1.0, total_magnitude)
    segments = 0
    while segments < max_segments:
        pre = _pre_activations(params, x_cur)
        if segments:
            d = _walk_direction(_effective_matrix(params, masks), d, rng)
        t_max, layer, unit = _region_exit(pre, masks, _rates(params, masks, d))
        if segments and t_max <= stall:
            d = -d
            t_max, layer, unit = _region_exit(pre, masks, _rates(params, masks, d))
        if segments and t_max <= stall:  # a corner of several boundaries: slide along all of them
            constraints = np.vstack([_effective_matrix(params, masks), _boundary_rows(params, masks, pre)])
            d = _walk_direction(constraints, d, rng)
            t_max, layer, unit = _region_exit(pre, masks, _rates(params, masks, d))
        t_first = t_max if segments == 0 else t_first
        t_goal = _step_to_sphere(x_cur - x0, d, total_magnitude)
        segments += 1
        if t_goal <= t_max:
            x_cur = x_cur + t_goal * d
            break
        x_cur = x_cur + t_max * d
        masks[layer][unit] = not masks[layer][unit]
    return _result(params, x, x_cur, t_first, segments)


# ----------------------------------------------------------------------------------------- the book's encoders


def classifier_mlp_layers(model: nn.Module, include_head: bool = False) -> list[nn.Linear]:
    """Float64 linear layers of an :class:`oodlib.models.MLP` acting on images in [0, 1] (Section 2.2).

    The book's MLP standardises its input, ``(x - mean) / std`` per channel, before its first ``Linear``. That
    affine map is folded into the first layer (``W' = W / std``, ``b' = b - W (mean / std)``, per input value
    in the flattening order C, H, W), so the returned layers take the raw image as the null-space attacks
    expect.

    Parameters
    ----------
    model : oodlib.models.MLP
        The classifier (its ``normalize``, ``layers`` and ``head``).
    include_head : bool, default False
        Without the head the last layer's output is the pre-activation of the code ``z`` (the model's
        ``features`` are its ReLU), so keeping that output fixed keeps ``z`` fixed; with the head it is the
        logit vector.

    Returns
    -------
    list of torch.nn.Linear
        New float64 layers (the model is not modified), for :func:`relu_null_space_attack` and
        :func:`relu_null_space_walk`.
    """
    for name in ("normalize", "layers", "head"):
        if not hasattr(model, name):
            raise TypeError(f"{type(model).__name__} is not an MLP classifier (no {name!r})")
    linears = [*model.layers, model.head] if include_head else list(model.layers)
    first = linears[0]
    n_channels = model.normalize.mean.numel()
    per_channel = first.in_features // n_channels
    mean = model.normalize.mean.detach().double().flatten().repeat_interleave(per_channel)
    std = model.normalize.std.detach().double().flatten().repeat_interleave(per_channel)
    weight, bias = first.weight.detach().double(), first.bias.detach().double()
    folded = [_linear(weight / std, bias - weight @ (mean / std))]
    folded += [_linear(layer.weight.detach().double(), layer.bias.detach().double()) for layer in linears[1:]]
    return folded


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    """A float64 ``nn.Linear`` holding copies of ``weight`` and ``bias``."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


def pca_encoder(x: torch.Tensor, k: int) -> torch.Tensor:
    """A linear encoder ``z = W x``: the top-``k`` principal directions of ``x`` (Section 2.2's ``W``, K x M).

    Parameters
    ----------
    x : torch.Tensor
        Training images ``(N, ...)``, flattened to ``(N, M)``.
    k : int
        Code dimension ``K < M``.

    Returns
    -------
    torch.Tensor
        Float64 ``(K, M)`` matrix with orthonormal rows (the right singular vectors of the centred data).
    """
    flat = _to_numpy(x).reshape(len(x), -1)
    if not 0 < k < flat.shape[1]:
        raise ValueError(f"k must be in 1..{flat.shape[1] - 1}, got {k}")
    _, _, vh = np.linalg.svd(flat - flat.mean(axis=0), full_matrices=False)
    return torch.from_numpy(vh[:k].copy())


# ------------------------------------------------------------------------------ many samples, valid images


def relu_region_radius(layers: Sequence[nn.Linear] | nn.Sequential, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """How far each input can move along a random null-space direction before a ReLU changes state.

    For each sample ``x[i]`` this is ``max_norm_in_region`` of :func:`relu_null_space_attack` with seed
    ``seed + i``: the length of the straight null-space segment inside the activation region of ``x[i]``.

    Parameters
    ----------
    layers : sequence of torch.nn.Linear or torch.nn.Sequential
        The MLP's linear layers.
    x : torch.Tensor
        Inputs ``(N, ...)``.
    seed : int, default 0
        Seed of the first sample's direction.

    Returns
    -------
    torch.Tensor
        Float64 ``(N,)``.
    """
    return torch.tensor([relu_null_space_attack(layers, xi, float("inf"), seed=seed + i).max_norm_in_region
                         for i, xi in enumerate(x)], dtype=torch.float64)


def relu_null_space_walks(layers: Sequence[nn.Linear] | nn.Sequential, x: torch.Tensor, total_magnitude: float,
                          seed: int = 0, max_segments: int = 1000) -> list[ReluNullSpaceResult]:
    """:func:`relu_null_space_walk` for each sample ``x[i]`` (seed ``seed + i``) (Section 2.2)."""
    return [relu_null_space_walk(layers, xi, total_magnitude, seed=seed + i, max_segments=max_segments)
            for i, xi in enumerate(x)]


def stack_walks(walks: Sequence[ReluNullSpaceResult]) -> dict[str, torch.Tensor]:
    """The walks' attacked inputs and diagnostics as tensors: ``x`` (N, ...), ``relative_output_error``,
    ``perturbation_norm``, ``max_norm_in_region`` (float64) and ``n_segments`` (int64), each (N,)."""
    return {"x": torch.stack([w.x for w in walks]),
            "relative_output_error": torch.tensor([w.relative_output_error for w in walks], dtype=torch.float64),
            "perturbation_norm": torch.tensor([w.perturbation_norm for w in walks], dtype=torch.float64),
            "max_norm_in_region": torch.tensor([w.max_norm_in_region for w in walks], dtype=torch.float64),
            "n_segments": torch.tensor([w.n_segments for w in walks], dtype=torch.int64)}


def fraction_outside_unit_box(x: torch.Tensor) -> torch.Tensor:
    """Per sample, the fraction of values outside [0, 1] — pixels no 8-bit image can hold."""
    flat = x.detach().flatten(1)
    return ((flat < 0) | (flat > 1)).double().mean(dim=1)


def relative_code_error(encode, x: torch.Tensor, x_reference: torch.Tensor) -> torch.Tensor:
    """``||f(x) - f(x_ref)||_2 / ||f(x_ref)||_2`` per sample, for any encoder ``f`` (e.g. ``model.features``
    in float32, or ``lambda v: v @ W.T``)."""
    with torch.no_grad():
        z, z_ref = encode(x).flatten(1).double(), encode(x_reference).flatten(1).double()
    return (z - z_ref).norm(dim=1) / z_ref.norm(dim=1).clamp_min(1e-300)


def display_scaled(x: torch.Tensor) -> torch.Tensor:
    """Each image min-max scaled to [0, 1], for showing inputs that left the pixel range (not for encoding)."""
    flat = x.detach().flatten(1).double()
    low, high = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
    return ((flat - low) / (high - low).clamp_min(1e-12)).view_as(x).to(torch.float32)


@dataclass
class BoxMatchResult:
    """Outcome of :func:`box_constrained_code_match`.

    Attributes
    ----------
    x : torch.Tensor
        The matched images, in [0, 1] exactly, shape and dtype of ``x_start``.
    relative_code_error : torch.Tensor
        ``||W x - z|| / ||z||`` per sample (float64), evaluated on ``x`` as returned (a float32 ``x`` carries
        float32 rounding, about 1e-7).
    distance_to_start : torch.Tensor
        ``||x - x_start||_2`` per sample (float64).
    iterations : torch.Tensor
        Newton iterations used per sample (int64).
    """

    x: torch.Tensor
    relative_code_error: torch.Tensor
    distance_to_start: torch.Tensor
    iterations: torch.Tensor


def box_constrained_code_match(W: torch.Tensor, z: torch.Tensor, x_start: torch.Tensor, max_iter: int = 100,
                               tol: float = 1e-12) -> BoxMatchResult:
    """The image in [0, 1] closest to a start image whose linear code is exactly ``z`` (Section 2.2, extended).

    The paper's null-space construction ``x' = x + eta`` keeps ``W x' = W x`` but leaves the pixel range, so it
    is not an image. This solves the convex problem that Algorithm 1 addresses for a general encoder,

        minimise ||x - x_start||^2  subject to  W x = z,  0 <= x <= 1,

    exactly, for a linear encoder: the minimiser is ``x(lam) = clip(x_start - W^T lam, 0, 1)`` for the ``lam``
    that solves the piecewise-linear equation ``W x(lam) = z`` (the dual optimality condition), found by a
    semismooth Newton method with a backtracking line search on ``||W x(lam) - z||``.

    Parameters
    ----------
    W : torch.Tensor
        Encoder matrix ``(K, M)``.
    z : torch.Tensor
        Target codes ``(N, K)``; each must be the code of some image in [0, 1] (e.g. ``z = W x_in``), otherwise
        the problem is infeasible and the residual stays above ``tol``.
    x_start : torch.Tensor
        Start images ``(N, ...)`` with ``M`` values each.
    max_iter : int, default 100
        Newton iterations per sample.
    tol : float, default 1e-12
        Stop when ``||W x - z|| <= tol * ||z||``.

    Returns
    -------
    BoxMatchResult
    """
    W64 = _to_numpy(W)
    Z = _to_numpy(z).reshape(len(z), -1)
    X0 = _to_numpy(x_start).reshape(len(x_start), -1)
    if W64.shape[1] != X0.shape[1] or Z.shape[1] != W64.shape[0] or len(Z) != len(X0):
        raise ValueError(f"shapes do not match: W {W64.shape}, z {Z.shape}, x_start {X0.shape}")
    solved = [_dual_newton(W64, zi, x0, max_iter, tol) for zi, x0 in zip(Z, X0)]
    x_out = torch.from_numpy(np.stack([s[0] for s in solved]).reshape(tuple(x_start.shape))).to(
        dtype=x_start.dtype)
    X = _to_numpy(x_out).reshape(len(x_out), -1)
    error = np.linalg.norm(X @ W64.T - Z, axis=1) / np.maximum(np.linalg.norm(Z, axis=1), 1e-300)
    return BoxMatchResult(x=x_out, relative_code_error=torch.from_numpy(error),
                          distance_to_start=torch.from_numpy(np.linalg.norm(X - X0, axis=1)),
                          iterations=torch.tensor([s[1] for s in solved], dtype=torch.int64))


def _dual_newton(W: np.ndarray, z: np.ndarray, x0: np.ndarray, max_iter: int, tol: float
                 ) -> tuple[np.ndarray, int]:
    """Semismooth Newton on ``r(lam) = W clip(x0 - W^T lam, 0, 1) - z`` (see :func:`box_constrained_code_match`)."""
    lam = np.zeros(W.shape[0])
    target = tol * max(float(np.linalg.norm(z)), 1e-300)

    def primal(v: np.ndarray) -> np.ndarray:
        return np.clip(x0 - W.T @ v, 0.0, 1.0)

    x = primal(lam)
    residual = W @ x - z
    norm = float(np.linalg.norm(residual))
    iteration = 0
    for iteration in range(1, max_iter + 1):
        if norm <= target:
            return x, iteration - 1
        free = (x > 0.0) & (x < 1.0)
        jacobian = (W[:, free] @ W[:, free].T) + 1e-12 * np.eye(W.shape[0])
        step = np.linalg.solve(jacobian, residual)
        t = 1.0
        while t > 1e-8:
            candidate = primal(lam + t * step)
            candidate_residual = W @ candidate - z
            candidate_norm = float(np.linalg.norm(candidate_residual))
            if candidate_norm < (1.0 - 1e-4 * t) * norm:
                break
            t *= 0.5
        lam, x, residual, norm = lam + t * step, candidate, candidate_residual, candidate_norm
    return x, iteration


def linear_code(W: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The code ``z = W x`` of each flattened input, float64 ``(N, K)`` (Section 2.2's linear encoder)."""
    return x.detach().flatten(1).to(torch.float64) @ W.to(torch.float64).T


class LinearCode(nn.Module):
    """Section 2.2's linear encoder ``x ↦ W x`` as a module: :func:`linear_code` with ``W`` (K, D) fixed, for the
    places that take an encoder (:func:`relative_code_error`, plots). Output float64 ``(N, K)``."""

    def __init__(self, W: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("W", W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_code(self.W, x)
