"""The small utility layer every other ``oodlib`` module may use: mini-batch evaluation and model modes.

It imports only torch and :mod:`oodlib._checks`, so detectors, attacks, training and experiments can all depend on it
without an import cycle (the layers are drawn in CONTRIBUTING.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from . import _checks


def module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter or buffer; the CPU for a module that has neither."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(module: nn.Module | None, *, freeze: bool = False) -> Iterator[None]:
    """Put every submodule of ``module`` in eval mode (and, with ``freeze=True``, its parameters out of autograd);
    restore each submodule's own mode and each parameter's ``requires_grad`` flag on exit, also on an exception.

    Restoring submodule by submodule (not ``module.train(flag)``) keeps a wrapper whose mode differs from its
    wrapped model's as it was. ``None`` is a no-op, so callers need not test for a missing module. Raises
    ``TypeError`` for anything else that is not an ``nn.Module``."""
    if module is None:
        yield
        return
    if not isinstance(module, nn.Module):
        raise TypeError(f"eval_mode takes a torch.nn.Module or None; got {type(module).__name__}")
    modes = [(m, m.training) for m in module.modules()]
    flags = [(p, p.requires_grad) for p in module.parameters()] if freeze else []
    try:
        module.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, training in modes:
            m.training = training


def batched(fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int, device: torch.device | str | None = None,
            ) -> Tensor:
    """``torch.cat([fn(x[i:i + batch_size].to(device)) for each batch])`` with each output moved to the CPU.

    ``x``: (N, ...) with N ≥ 1; ``batch_size``: a positive integer; ``device``: where each batch is evaluated
    (``None``: where ``x`` is). The caller chooses the grad mode (wrap in ``torch.no_grad()`` to build no graph).
    Returns (N, ...) on the CPU. Raises ``ValueError`` for an empty ``x`` or a non-positive ``batch_size`` and
    ``TypeError`` if ``x`` is not a tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (N, ...); got {type(x).__name__}")
    _checks.nonempty(x, "x")
    batch_size = _checks.integer(batch_size, "batch_size", minimum=1)
    return torch.cat([fn(x[i:i + batch_size].to(device or x.device)).cpu() for i in range(0, len(x), batch_size)])
