"""The OOD attack on a neural-network encoder (Algorithm 1 of Liang et al., Section 2.1).

Given in-distribution images ``x_in`` and out-of-distribution start images ``x'_out``, search inside the
ε-ball around ``x'_out`` for ``x_out`` with ``f(x_out) ≈ f(x_in)`` by minimising

    J(x_out) = || f(x_out) - f(x_in) ||²                                   (Algorithm 1, line 3)

``f`` is any differentiable map from images to a tensor: encoder features, logits, a detector's score, an NLL.

By default (``update="adamax"``) this reproduces the authors' public implementation, which differs from the
printed algorithm (see ``shared/reference/attack.md``): the per-sample normalised gradient is handed as the
gradient of the perturbation δ to ``torch.optim.Adamax(lr=step_size)``; δ is then projected onto the ε-ball and
``x = clamp(x'_out + δ, 0, 1)``. With Adamax the per-pixel step is ≈ ``step_size`` whatever the gradient's
scale, so the iterate moves far faster than the printed rule ``x ← clip(x − α·h(J'))`` (``update="printed"``),
which moves exactly α in the attack norm per iteration.

Numerical safety: a sample whose input gradient holds NaN or ±inf in an iteration (a square root at 0 inside the
model, an overflow) gets a zero step for that iteration — its iterate does not move, its gradient counts as zero in
Adamax's moments — and the other samples are untouched (bit for bit). The count per sample is kept on the device
(:attr:`AttackResult.nonfinite_steps`, no host copy inside the loop) and one :class:`NonFiniteGradientWarning`
after the attack names the samples. A returned image is never non-finite. Non-finite targets ``f(x_in)`` / ``z_in``
are refused before the loop (``ValueError`` naming the samples).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

from .. import _checks
from ..metrics import mape_tensor as _mape
from ..models import resolve_device
from ..terminal import terminal_progress
from ..utils import batched, eval_mode, module_device

NORMS = ("l2", "linf")
UPDATES = ("adamax", "printed")
SCHEDULES = ("constant", "cosine")
ROUTINES: dict[str, dict] = {
    # The authors' public implementation: Adamax on δ with a fixed step α = ε/100, the last iterate, no early stop.
    "authors": {"update": "adamax", "schedule": "constant", "tol": None},
    # Algorithm 1 as printed: x ← clip(x − α·h(J')), fixed α.
    "printed": {"update": "printed", "schedule": "constant", "tol": None},
    # The default: the authors' update with a cosine-decayed step (the fixed step keeps the iterate jittering at a
    # plateau), stopping once every sample's MAPE is below 1e-4.
    "fast": {"update": "adamax", "schedule": "cosine", "tol": 1e-4},
}

ROUTINE_DESCRIPTIONS: dict[str, str] = {
    "authors": "the authors' routine (Adamax on the perturbation, fixed step α = ε/100, last iterate)",
    "printed": "Algorithm 1 as printed (x ← clip(x − α·h(J')), fixed step α = ε/100)",
    "fast": "the library's fast routine (the authors' Adamax update with a cosine-decayed step and early stopping "
            "at MAPE ≤ 1e-4)",
}
"""One phrase per routine of :data:`ROUTINES`, for the pages that state which routine they ran."""

MAX_STEPS = 10**7
"""The most iterations one attack accepts: a thousand times the paper's N = 10⁴, days of GPU time on its models;
a larger value is a typo (``-p steps 1e9``), not an experiment."""

REPRODUCTION_ROUTINE = "authors"
"""The routine of every experiment helper of this package when the caller names none (``oodlib.experiments``,
``oodlib.sweeps``, ``oodlib.autoencoder``, ``oodlib.detectors.glow``): the authors' public implementation, because
the chapters reproduce the authors' experiments. A chapter about what the attack *can* reach passes
``routine="fast"`` explicitly and says so (the defaults policy, Appendix A). :func:`ood_attack` itself, a library
function, defaults to ``"fast"``."""


class NonFiniteGradientWarning(RuntimeWarning):
    """Some samples' input gradients were NaN or ±inf in some iterations; those steps were skipped (zero step)."""


class AttackedSamples:
    """What every attack's result has: attacked images ``x`` (N, ...) and ``nonfinite_steps`` (N,) int64, the
    iterations per sample skipped because the input gradient held NaN or ±inf."""

    x: Tensor
    nonfinite_steps: Tensor

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def nonfinite_gradient(self) -> Tensor:
        """(N,) bool: the samples that had a non-finite input gradient in at least one iteration."""
        return self.nonfinite_steps > 0


@dataclass
class AttackResult(AttackedSamples):
    """What :func:`ood_attack` returns.

    Attributes
    ----------
    x : attacked images, the shape of the (broadcast) start images, on the start images' device.
    loss, mape : final per-sample squared error ``||f(x) - z_in||²`` and MAPE (Section 3), shape (N,).
    loss_history, mape_history : (T, N) per-sample values at the recorded iterations ``iterations`` (T,);
        the value at iteration t is that of the iterate *before* update t.
    steps_run : iterations actually run (fewer than ``steps`` after an early stop; the largest over batches
        and restarts).
    z_target : the detached targets f(x_in), shape (N, ...).
    nonfinite_steps : (N,) int64, per sample, the iterations (summed over restarts) whose input gradient held NaN
        or ±inf and that were therefore skipped (zero step); all zero in a healthy run.
    """

    x: Tensor
    loss: Tensor
    mape: Tensor
    loss_history: Tensor
    mape_history: Tensor
    iterations: Tensor
    steps_run: int
    z_target: Tensor
    nonfinite_steps: Tensor
    params: dict = field(default_factory=dict)


def frozen(module: nn.Module | None) -> contextlib.AbstractContextManager[None]:
    """Put ``module`` in eval mode with parameters not requiring grad; restore both afterwards (each submodule's
    own mode and each parameter's flag): :func:`oodlib.utils.eval_mode` with ``freeze=True``."""
    return eval_mode(module, freeze=True)


def owning_module(f: Callable) -> nn.Module | None:
    """The ``nn.Module`` behind ``f``: ``f`` itself, or the object of a bound method (``model.features``)."""
    if isinstance(f, nn.Module):
        return f
    owner = getattr(f, "__self__", None)
    return owner if inspect.ismethod(f) and isinstance(owner, nn.Module) else None


def attack_target(f: Callable[[Tensor], Tensor] | nn.Module, target: str | None = None,
                  module: nn.Module | None = None) -> tuple[Callable[[Tensor], Tensor], nn.Module]:
    """The map an attack differentiates and the module it freezes (eval mode, parameters out of autograd).

    ``f`` is one of: a detector with ``target`` the name of one of its attack targets
    (:meth:`oodlib.detectors.Detector.target`; ``target=None`` means its score); an ``nn.Module``; a bound method
    of one (``model.features``). Any other callable (a lambda, a ``functools.partial``) needs ``module=``, the
    module whose parameters it uses, so that the eval-mode/frozen guarantee and the device choice still hold.

    Raises ``TypeError`` for another callable without ``module``, a ``module`` that is not an ``nn.Module``, or a
    ``target`` given with something that does not name targets; ``ValueError`` for an unknown target name."""
    if module is not None and not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    if target is not None:
        if not (isinstance(f, nn.Module) and callable(getattr(f, "target", None))):
            raise TypeError(f"target={target!r} needs a detector (which names its attack targets), got "
                            f"{type(f).__name__}")
        return f.target(target), module or f
    owner = owning_module(f)
    if owner is None and module is None:
        raise TypeError(f"the attack's f must be a detector with a target name, an nn.Module or a bound method of "
                        f"one, so that it can be put in eval mode and frozen; got {_describe(f)}. Pass "
                        f"(detector, target=name), or module= the module whose parameters it uses.")
    return f, module or owner


def _describe(f: object) -> str:
    name = getattr(f, "__name__", None) or type(f).__name__
    return f"{type(f).__name__} {name!r}" if name != type(f).__name__ else type(f).__name__


def attack_device(module: nn.Module, device: str | torch.device) -> torch.device:
    """``"auto"`` → ``module``'s device if it has parameters or buffers, else CUDA when available, else CPU;
    another value is resolved by :func:`oodlib.models.resolve_device`."""
    if device == "auto" and any(True for _ in (*module.parameters(), *module.buffers())):
        return module_device(module)
    return resolve_device(device)


def start_noise(shape: torch.Size, seed: int, sample_ids: Tensor) -> Tensor:
    """Uniform [0, 1) noise of ``shape`` whose row i depends only on ``(seed, sample_ids[i])`` — so a sample's
    random start is the same whichever batch or process (:mod:`oodlib.distributed`) it is attacked in."""
    rows = [torch.rand(shape[1:], generator=torch.Generator().manual_seed(seed * 1_000_003 + int(i)))
            for i in sample_ids]
    return torch.stack(rows) if rows else torch.empty(shape)


def random_start(x0: Tensor, eps: float, norm: str, seed: int, sample_ids: Tensor | None = None) -> Tensor:
    """Algorithm 1, lines 1–2, as the authors implement them: ξ uniform in [-ε, ε]; for L2 each sample's ξ is
    rescaled to norm exactly ε (a random point on the ε-sphere); returns ``clamp(x0 + ξ, 0, 1)``. Sample i's ξ is
    drawn from its own generator seeded by ``(seed, sample_ids[i])`` (default ids 0..N-1)."""
    ids = torch.arange(x0.shape[0]) if sample_ids is None else sample_ids
    noise = (start_noise(x0.shape, seed, ids) * 2 - 1) * eps
    if norm == "l2":
        flat = noise.flatten(1)
        noise = (flat * (eps / flat.norm(dim=1, keepdim=True).clamp_min(1e-12))).view_as(noise)
    return (x0 + noise.to(x0.device)).clamp(0, 1)


def normalise_gradient(g: Tensor, norm: str, *, in_place: bool = False) -> Tensor:
    """h(J') of Algorithm 1: the per-sample L2-normalised gradient (floor 1e-12) or its sign (L∞). With
    ``in_place`` it overwrites ``g`` (the attack loop's own gradient buffer) instead of allocating."""
    g = g if in_place else g.clone()
    if norm == "linf":
        return g.sign_()
    return g.div_(_sample_norms(g).clamp_min_(1e-12))


def project(delta: Tensor, eps: float, norm: str) -> Tensor:
    """Project each sample's perturbation onto the ε-ball, in place: L2 rescales rows whose norm exceeds ε, L∞
    clamps to ±ε."""
    if norm == "linf":
        return delta.clamp_(-eps, eps)
    return delta.mul_((eps / _sample_norms(delta).clamp_min(1e-12)).clamp(max=1.0))


def schedule_factor(schedule: str, iteration: int, steps: int, floor: float = 0.01) -> float:
    """Multiplier of the step size at ``iteration``: 1 for ``"constant"``; a cosine decay from 1 to ``floor``
    for ``"cosine"``."""
    if schedule == "constant":
        return 1.0
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * iteration / max(steps, 1)))


def _check_numbers(**values: object) -> dict:
    """The attack's numeric arguments as Python numbers (NumPy scalars and 0-d tensors accepted; booleans,
    NaN and inf refused by name)."""
    out = dict(eps=_checks.number(values["eps"], "eps", positive=True),
               # at most 1e30: Adamax's bias correction multiplies the step by up to 10 in float32
               step_size=_checks.optional_number(values["step_size"], "step_size", positive=True, maximum=1e30),
               tol=_checks.optional_number(values["tol"], "tol", nonnegative=True),
               record_every=_checks.optional_integer(values["record_every"], "record_every", minimum=1),
               seed=_checks.integer(values["seed"], "seed", minimum=0, maximum=_checks.SEED_MAX),
               first_index=_checks.integer(values["first_index"], "first_index", minimum=0))
    for name in ("restarts", "batch_size", "check_every"):
        out[name] = _checks.integer(values[name], name, minimum=1)
    out["steps"] = _checks.integer(values["steps"], "steps", minimum=1, maximum=MAX_STEPS)
    return out


def _check_inputs(x_in: Tensor | None, z_in: Tensor | None, x_ood: Tensor, norm: str, update: str,
                  schedule: str, module: nn.Module | None) -> None:
    for name, value, valid in (("norm", norm, NORMS), ("update", update, UPDATES),
                               ("schedule", schedule, SCHEDULES)):
        if value not in valid:
            raise ValueError(f"unknown {name} {value!r}; valid choices: {', '.join(valid)}")
    if (x_in is None) == (z_in is None):
        raise ValueError("give exactly one of x_in (images whose f(x_in) is matched) or z_in (the targets)")
    images = [("x_ood", x_ood)] + ([("x_in", x_in)] if x_in is not None else [])
    for name, x in images + ([("z_in", z_in)] if z_in is not None else []):
        _checks.nonempty(x, name)
    for name, x in images:
        if x.dim() != 4:
            raise ValueError(f"{name} must be an NCHW image batch, got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise ValueError(f"{name} must hold finite values in [0, 1] (got min {x.min().item():.3g}, "
                             f"max {x.max().item():.3g})")
        expected = getattr(module, "in_channels", None)
        if expected is not None and x.shape[1] != expected:
            raise ValueError(f"{name} has {x.shape[1]} channels but the model takes {expected}")
    n_target = (x_in if x_in is not None else z_in).shape[0]
    if x_ood.shape[0] not in (1, n_target):
        raise ValueError(f"x_ood must hold 1 start image or one per target ({n_target}), got {x_ood.shape[0]}")
    if x_in is not None and x_in.shape[1:] != x_ood.shape[1:]:
        raise ValueError(f"x_in images {tuple(x_in.shape[1:])} and x_ood images {tuple(x_ood.shape[1:])} differ")


def ood_attack(f: Callable[[Tensor], Tensor] | nn.Module, x_in: Tensor | None, x_ood: Tensor, *, eps: float, steps: int,
               norm: str = "l2", step_size: float | None = None, routine: str = "fast", update: str | None = None,
               schedule: str | None = None, restarts: int = 1, keep_best: bool = False, tol: float | None = None,
               check_every: int = 10, batch_size: int = 256, record_every: int | None = None,
               z_in: Tensor | None = None, device: str | torch.device = "auto", seed: int = 0,
               first_index: int = 0, progress: bool = False, channels_last: bool = False,
               autocast: bool = False, target: str | None = None, module: nn.Module | None = None
               ) -> AttackResult:
    """Algorithm 1: make OOD images whose ``f`` matches that of in-distribution images.

    Parameters
    ----------
    f : differentiable map from images (N, C, H, W) in [0, 1] to a tensor (N, ...): a detector (with ``target``
        the name of one of its attack targets, default its score), an ``nn.Module``, or a bound method of one
        (``model.features``). That module is put in eval mode with frozen parameters for the attack and restored
        afterwards. Any other callable (lambda, partial) is refused unless ``module`` names its module
        (:func:`attack_target`).
    x_in : in-distribution images (N, C, H, W); their ``f(x_in)`` (detached) are the targets. Or pass ``z_in``.
    x_ood : start images x'_out, (N, C, H, W) or one image (1, C, H, W) used for every target.
    eps : radius of the ball around x'_out (L2 or L∞, in [0, 1] pixel units).
    steps : iterations N of Algorithm 1.
    norm : ``"l2"`` (all of the paper's experiments) or ``"linf"``.
    step_size : α; default ε/100 as in the paper (Appendix A).
    routine : a preset of ``update``, ``schedule`` and ``tol`` (see :data:`ROUTINES`): ``"fast"`` (default;
        the authors' update with a cosine-decayed step and early stopping), ``"authors"`` (the authors' public
        implementation, exactly — what the reproduction chapters use), ``"printed"`` (Algorithm 1 as printed).
        Explicit ``update`` / ``schedule`` / ``tol`` override the preset.
    update : ``"adamax"`` — the authors' implementation; ``"printed"`` — the printed rule
        ``x ← clip(x − α·h(J'))``.
    schedule : ``"constant"`` (authors) or ``"cosine"`` decay of the step size to 1% over ``steps``.
    restarts : independent random starts; each sample keeps its best (lowest-loss) result.
    keep_best : return each sample's best iterate within a run instead of the last one (authors: last).
    tol : a sample whose MAPE is ≤ ``tol`` (checked every ``check_every`` iterations) is done: its iterate at
        that moment is what it returns, and the run stops once every sample is done (a per-sample decision).
    batch_size : at most this many samples are attacked at once (memory bound). Every step is per sample, so the
        results do not depend on it except through floating-point rounding of batched kernels (which a long run
        can amplify).
    record_every : history stride; default keeps at most ~1000 records.
    device : ``"auto"`` → the module's device if ``f`` has one, else CUDA when available, else CPU.
    seed : seeds the random start (``seed + restart``), so a run is reproducible.
    first_index : the global index of the first sample (a shard's offset): sample i's random start is seeded by
        ``first_index + i``, so a sharded run (:mod:`oodlib.distributed`) reproduces the unsharded one.
    channels_last : keep the images in channels-last memory layout (faster convolutions on GPUs; convert the
        model with ``model.to(memory_format=torch.channels_last)`` yourself).
    autocast : evaluate ``f`` under ``torch.autocast`` in bfloat16 (targets, iterations and the final
        evaluation alike); the loss, the gradient's normalisation and the update stay in float32.
    target : with a detector ``f``, the name of the attack target (``f.targets``: ``"score"``, ``"logits"``, …).
    module : the module behind a callable ``f`` that is neither a module nor a bound method of one.

    Numbers (``eps``, ``steps``, ``step_size``, ``tol``, ``batch_size``, …) may be Python or NumPy scalars or 0-d
    tensors.

    Non-finite gradients (one policy for every routine and norm): a sample whose input gradient holds NaN or
    ±inf in an iteration gets a zero step in that iteration (its iterate stays where it was; with Adamax the
    gradient counts as zero in the moments), the other samples are unaffected bit for bit, the count per sample
    is returned in ``nonfinite_steps`` and, after the attack, one :class:`NonFiniteGradientWarning` names the
    affected samples (global indices, ``first_index`` included). The check is one ``isfinite`` reduction per
    sample on the device — no host↔device copy inside the loop. A returned image is never non-finite (its loss
    and MAPE are NaN only where ``f`` itself is non-finite there).

    Returns
    -------
    AttackResult

    Raises
    ------
    ValueError
        An empty batch (``x_in``, ``x_ood``, ``z_in``; the message names it), images outside [0, 1] or of the
        wrong shape, unknown ``norm`` / ``update`` / ``schedule`` / ``routine``, a non-positive ``eps`` /
        ``steps`` / ``step_size`` / ``batch_size`` / ``restarts``, a NaN or inf number, or non-finite targets
        ``f(x_in)`` / ``z_in`` (the message lists the samples).
    TypeError
        A boolean, a non-number, or a float where an integer is expected (``steps=10.0``); an ``f`` that is not a
        detector, module or bound method without ``module`` (see :func:`attack_target`).
    """
    if routine not in ROUTINES:
        raise ValueError(f"unknown routine {routine!r}; valid choices: {', '.join(ROUTINES)}")
    preset = ROUTINES[routine]
    update = preset["update"] if update is None else update
    schedule = preset["schedule"] if schedule is None else schedule
    tol = preset["tol"] if tol is None else tol
    f, module = attack_target(f, target, module)
    f = _in_precision(f, autocast)
    nums = _check_numbers(eps=eps, steps=steps, step_size=step_size, tol=tol, restarts=restarts,
                          check_every=check_every, batch_size=batch_size, record_every=record_every, seed=seed,
                          first_index=first_index)
    eps, steps, step_size, tol, restarts = (nums[k] for k in ("eps", "steps", "step_size", "tol", "restarts"))
    check_every, batch_size, record_every, seed, first_index = (
        nums[k] for k in ("check_every", "batch_size", "record_every", "seed", "first_index"))
    _check_inputs(x_in, z_in, x_ood, norm, update, schedule, module)
    dev = attack_device(module, device)
    alpha = eps / 100 if step_size is None else step_size
    stride = record_every or max(1, math.ceil(steps / 1000))
    out_device = x_ood.device
    with frozen(module):
        with torch.no_grad():
            targets = _as_rows(z_in if z_in is not None else batched(lambda x: _as_rows(f(x)), x_in, batch_size, dev)
                               ).detach().to(dev)
        _check_targets(targets, "z_in" if z_in is not None else "f(x_in)", first_index)
        n = targets.shape[0]
        x0_all = x_ood.expand(n, *x_ood.shape[1:]) if x_ood.shape[0] == 1 else x_ood
        best: AttackResult | None = None
        for restart in range(restarts):
            ids = torch.arange(first_index, first_index + n)
            starts = random_start(x0_all.detach().cpu().float(), eps, norm, seed + restart, ids)
            run = _attack_batches(f, targets, x0_all, starts, eps=eps, steps=steps, norm=norm, alpha=alpha,
                                  update=update, schedule=schedule, keep_best=keep_best, tol=tol,
                                  check_every=check_every, batch_size=batch_size, stride=stride, dev=dev,
                                  progress=progress, channels_last=channels_last)
            best = run if best is None else _keep_better(best, run)
    assert best is not None
    _warn_nonfinite(best.nonfinite_steps, first_index)
    best.x = best.x.to(out_device)
    best.z_target = targets.to(out_device)
    best.params = dict(eps=eps, steps=steps, norm=norm, step_size=alpha, routine=routine, update=update,
                       schedule=schedule, first_index=first_index, channels_last=channels_last, autocast=autocast,
                       restarts=restarts, keep_best=keep_best, tol=tol, seed=seed)
    return best


def _check_targets(targets: Tensor, name: str, first_index: int) -> None:
    """Refuse NaN/inf targets before the loop (one host copy per call, none per iteration)."""
    bad = ~torch.isfinite(targets.flatten(1)).all(dim=1)
    if bool(bad.any()):
        idx = (torch.nonzero(bad).flatten() + first_index).tolist()
        raise ValueError(f"{name} holds NaN or inf for sample(s) {_index_list(idx)}; the attack needs finite "
                         "targets (check the model on those inputs)")


def _index_list(idx: list[int], limit: int = 20) -> str:
    shown = ", ".join(map(str, idx[:limit]))
    return shown + (f", … ({len(idx)} in all)" if len(idx) > limit else "")


def _warn_nonfinite(counts: Tensor, first_index: int, stacklevel: int = 3) -> None:
    """One warning after an attack naming the samples (global indices) whose gradient was non-finite."""
    idx = torch.nonzero(counts.cpu()).flatten()
    if idx.numel():
        warnings.warn(f"the input gradient was NaN or inf for sample(s) {_index_list((idx + first_index).tolist())}"
                      f" in {int(counts.sum())} iteration(s) in all; those steps were skipped (zero step), so "
                      "their images are finite but may be less well attacked. See nonfinite_steps.",
                      NonFiniteGradientWarning, stacklevel=stacklevel)


def _in_precision(f: Callable[[Tensor], Tensor], autocast: bool) -> Callable[[Tensor], Tensor]:
    """``f``, or ``f`` evaluated under bfloat16 autocast with its output cast back to float32."""
    if not autocast:
        return f

    def f_autocast(x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            z = f(x)
        return z.float()

    return f_autocast


def _as_rows(z: Tensor) -> Tensor:
    """A scalar-per-image output (N,) — a detector's score, an NLL — as an (N, 1) code."""
    return z.unsqueeze(1) if z.dim() == 1 else z


def _keep_better(a: AttackResult, b: AttackResult) -> AttackResult:
    """Per sample, the result with the lower final loss (restarts keep each sample's best)."""
    take_b = b.loss < a.loss
    mask = take_b.view(-1, *([1] * (a.x.dim() - 1)))
    return AttackResult(x=torch.where(mask, b.x, a.x), loss=torch.where(take_b, b.loss, a.loss),
                        mape=torch.where(take_b, b.mape, a.mape),
                        loss_history=torch.where(take_b, b.loss_history, a.loss_history),
                        mape_history=torch.where(take_b, b.mape_history, a.mape_history),
                        iterations=a.iterations, steps_run=max(a.steps_run, b.steps_run), z_target=a.z_target,
                        nonfinite_steps=a.nonfinite_steps + b.nonfinite_steps)


def _attack_batches(f, targets, x0_all, starts, *, batch_size, stride, steps, progress, **kw) -> AttackResult:
    n_records = math.ceil(steps / stride)
    n = targets.shape[0]
    loss_hist = torch.full((n_records, n), float("nan"))
    mape_hist = torch.full((n_records, n), float("nan"))
    xs, losses, mapes, bad, steps_run = [], [], [], [], 0
    chunks = range(0, n, batch_size)
    for i in _progress(chunks, progress, "OOD attack (batches)"):
        sl = slice(i, i + batch_size)
        x, loss, mp, lh, mh, ran, nonfinite = _attack_one_batch(f, targets[sl], x0_all[sl], starts[sl],
                                                                steps=steps, stride=stride, **kw)
        xs.append(x)
        losses.append(loss)
        mapes.append(mp)
        bad.append(nonfinite)
        loss_hist[:, sl], mape_hist[:, sl] = lh, mh
        steps_run = max(steps_run, ran)
    iterations = torch.arange(0, n_records * stride, stride)
    return AttackResult(x=torch.cat(xs), loss=torch.cat(losses), mape=torch.cat(mapes), loss_history=loss_hist,
                        mape_history=mape_hist, iterations=iterations, steps_run=steps_run, z_target=targets,
                        nonfinite_steps=torch.cat(bad))


class AdamaxStep:
    """``torch.optim.Adamax`` (β = (0.9, 0.999), ε = 1e-8; Kingma & Ba 2015, Algorithm 2) on one tensor, fused
    and in place: the same arithmetic, in the same order, as PyTorch's single-tensor Adamax — so the authors'
    routine is reproduced bit for bit — but with no optimizer object, no per-step allocations and no host
    round-trip for the step count. ``h`` is consumed (overwritten)."""

    def __init__(self, param: Tensor, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.param, self.betas, self.eps, self.steps = param, betas, eps, 0
        self.exp_avg = torch.zeros_like(param)
        self.exp_inf = torch.zeros_like(param)

    @torch.no_grad()
    def __call__(self, h: Tensor, lr: float) -> None:
        beta1, beta2 = self.betas
        self.steps += 1
        self.exp_avg.lerp_(h, 1 - beta1)
        torch.maximum(self.exp_inf.mul_(beta2), h.abs_().add_(self.eps), out=self.exp_inf)
        self.param.addcdiv_(self.exp_avg, self.exp_inf, value=-lr / (1 - beta1 ** self.steps))


def _sample_norms(t: Tensor) -> Tensor:
    """Each sample's L2 norm, shape (N, 1, ..., 1); works on any memory layout (channels-last included)."""
    return torch.linalg.vector_norm(t, dim=tuple(range(1, t.dim())), keepdim=True)


def _attack_one_batch(f, z_target, x0, start, *, eps, steps, norm, alpha, update, schedule, keep_best, tol,
                      check_every, stride, dev, channels_last=False):
    """The inner loop of Algorithm 1 for one batch; returns CPU tensors (x, loss, MAPE, loss and MAPE histories,
    iterations run, non-finite-gradient count per sample).

    Every iteration is one forward and one backward to the input, plus a handful of in-place element-wise
    operations on preallocated buffers (finiteness check, normalise, Adamax, project, clamp, keep the iterate of
    samples whose gradient was non-finite) and no host-device copy; the MAPE is computed only on iterations that
    record or check it. Other image-sized selections (``torch.where``) are made only on check iterations
    (``tol``) and, with ``keep_best``, on every iteration."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x0 = x0.to(dev, torch.float32).contiguous(memory_format=layout)
    x = start.to(dev, torch.float32).contiguous(memory_format=layout).clone()  # the iterate, updated in place
    delta = x - x0
    adamax = AdamaxStep(delta) if update == "adamax" else None
    n_records = math.ceil(steps / stride)
    loss_hist = torch.full((n_records, x.shape[0]), float("nan"), device=dev)
    mape_hist = torch.full_like(loss_hist, float("nan"))
    best_x, best_loss = x.clone(), torch.full((x.shape[0],), float("inf"), device=dev)
    done = torch.zeros(x.shape[0], dtype=torch.bool, device=dev)  # samples whose MAPE reached tol
    done_x, done_mape, done_loss = x.clone(), torch.zeros_like(best_loss), torch.zeros_like(best_loss)
    nonfinite = torch.zeros(x.shape[0], dtype=torch.int64, device=dev)  # per sample: skipped iterations
    ran = 0
    for t in terminal_progress(range(steps), "OOD attack"):
        leaf = x.detach().requires_grad_(True)  # shares x's storage: no copy
        z = _as_rows(f(leaf))
        per_sample = (z - z_target).pow(2).flatten(1).sum(1)
        (grad,) = torch.autograd.grad(per_sample.sum(), leaf)
        ran = t + 1
        with torch.no_grad():
            check = tol is not None and t % check_every == 0
            record = t % stride == 0
            current_loss = per_sample.detach().to(done_loss.dtype)
            if check or record:
                current_mape = _mape(z.detach(), z_target).to(done_mape.dtype)
            if check:
                newly = (current_mape <= tol) & ~done  # selections by torch.where: no device→host sync
                done_x = torch.where(_per_image(newly, x), x, done_x)
                done_mape = torch.where(newly, current_mape, done_mape)
                done_loss = torch.where(newly, current_loss, done_loss)
                done |= newly
            if record:
                loss_hist[t // stride] = torch.where(done, done_loss, current_loss)
                mape_hist[t // stride] = torch.where(done, done_mape, current_mape)
            if keep_best:
                improved = current_loss < best_loss
                best_loss = torch.where(improved, current_loss, best_loss)
                best_x = torch.where(_per_image(improved, x), x, best_x)
            if check and bool(done.all()):
                ran = t
                break
            lr = alpha * schedule_factor(schedule, t, steps)
            finite = _zero_nonfinite_rows(grad, nonfinite)
            h = normalise_gradient(grad, norm, in_place=True)
            if adamax is not None:
                adamax(h, lr)
            else:
                delta.sub_(h.mul_(lr))
            project(delta, eps, norm)
            # x ← clamp(x0 + δ, 0, 1) where the gradient was finite; the other samples keep their iterate
            torch.where(finite, delta.add_(x0).clamp_(0, 1), x, out=x)
            delta.copy_(x).sub_(x0)
    with torch.no_grad():
        x = torch.where(_per_image(done, x), done_x, x)
        z = _as_rows(f(x))
        final_loss = (z - z_target).pow(2).flatten(1).sum(1)
        if keep_best:
            x = torch.where(_per_image(final_loss < best_loss, x), x, best_x)
            z = _as_rows(f(x))
            final_loss = (z - z_target).pow(2).flatten(1).sum(1)
        final_mape = _mape(z, z_target)
    return (x.contiguous().cpu(), final_loss.cpu(), final_mape.cpu(), loss_hist.cpu(), mape_hist.cpu(), ran,
            nonfinite.cpu())


def _zero_nonfinite_rows(grad: Tensor, count: Tensor) -> Tensor:
    """Zero, in place, the gradient of every sample holding a NaN or ±inf, add 1 to its ``count`` and return
    the per-sample "finite" mask shaped to broadcast over images. Element-wise operations and one reduction per
    sample on the device: no host copy, and finite rows are left bit for bit as they were."""
    # 0·g is 0 for a finite entry and NaN for NaN or ±inf, so a sample's sum is 0 exactly when all its entries are
    # finite: one multiply-and-sum, several times cheaper on a CPU than isfinite(grad).all(dims)
    finite = _per_image(grad.mul(0).sum(dim=tuple(range(1, grad.dim()))) == 0, grad)
    grad.masked_fill_(~finite, 0.0)
    count.add_(~finite.view(-1))
    return finite


def _per_image(mask: Tensor, x: Tensor) -> Tensor:
    """A per-sample mask (N,) shaped to broadcast over images like ``x``."""
    return mask.view(-1, *([1] * (x.dim() - 1)))


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False)
