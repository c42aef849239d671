"""Argument checks shared by the public functions of :mod:`oodlib`.

Two kinds of degenerate input are refused here, before any work starts, with a message that names the argument:

- an empty batch (zero samples), which would otherwise reach torch internals (``min(): Expected reduction dim``,
  ``torch.cat(): expected a non-empty list``) — :func:`nonempty`;
- a number that is a boolean, not finite, of the wrong kind or out of range — :func:`number` / :func:`integer`;
- class labels that do not fit their images (a count, shape or kind torch would report as an internal error) —
  :func:`labels`.
  Python numbers, NumPy scalars and 0-d tensors (any device) are accepted alike and returned as Python
  ``int`` / ``float``, so ``eps=np.float64(0.5)`` and ``eps=torch.tensor(0.5, dtype=torch.float64)`` give
  exactly the results of ``eps=0.5``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch


def nonempty(x: Any, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` if the batch ``x`` (a tensor, array or sequence) holds zero samples.

    A tensor or array must also have a batch axis (at least one dimension)."""
    if not hasattr(x, "shape") and not hasattr(x, "__len__"):
        raise TypeError(f"{name} must be a batch (a tensor, array or sequence); got {type(x).__name__}")
    shape = getattr(x, "shape", None)
    if shape is not None:
        if len(shape) == 0:
            raise ValueError(f"{name} must be a batch with a leading sample axis, got a 0-d value")
        n = shape[0]
    else:
        n = len(x)
    if n == 0:
        shown = f" (shape {tuple(shape)})" if shape is not None else ""
        raise ValueError(f"{name} is an empty batch: it holds 0 samples{shown}; give at least one")


def labels(y: Any, n: int, name: str = "y") -> torch.Tensor:
    """``y`` checked as the class labels of ``n`` images and returned as a 1-d ``torch.long`` tensor.

    Raises ``TypeError`` naming ``name`` if ``y`` is not a tensor or array of integers, and ``ValueError`` if it
    is not one-dimensional, does not hold exactly ``n`` labels, or holds a negative label."""
    if not isinstance(y, torch.Tensor):
        if not isinstance(y, np.ndarray):
            raise TypeError(f"{name} must be a tensor of class labels, got {type(y).__name__}")
        y = torch.from_numpy(y)
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.dim() != 1:
        raise ValueError(f"{name} must be one label per image, shape ({n},); got shape {tuple(y.shape)}")
    if len(y) != n:
        raise ValueError(f"{name} holds {len(y)} labels for {n} images; give one label per image")
    if len(y) and int(y.min()) < 0:
        raise ValueError(f"{name} holds a negative label ({int(y.min())}); class labels count from 0")
    return y.long()


def _scalar(value: Any, name: str) -> int | float:
    """``value`` as a Python int or float; ``TypeError`` naming ``name`` for booleans and non-numbers."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 0:
            raise TypeError(f"{name} must be a number, got a tensor of shape {tuple(value.shape)}")
        if value.dtype == torch.bool:
            raise TypeError(f"{name} must be a number, not a boolean (got {value!r})")
        if value.is_complex():
            raise TypeError(f"{name} must be a real number, got {value!r}")
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number, not a boolean (got {value!r})")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")


#: The largest float32: a number beyond it overflows to inf inside a float32 computation (the attack's step).
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
#: The largest seed: NumPy's legacy range, and ``seed * 1_000_003 + sample`` stays inside torch's 64-bit seeds.
SEED_MAX = 2**32 - 1


def number(value: Any, name: str, *, positive: bool = False, nonnegative: bool = False,
           minimum: float | None = None, maximum: float | None = None) -> float:
    """``value`` checked and returned as a Python ``float`` (or ``int``, if it is an integer).

    Accepts Python ints/floats, NumPy scalars and 0-d tensors. Raises ``TypeError`` naming ``name`` for a
    boolean or a non-number, ``ValueError`` for NaN/±inf, a magnitude beyond float32's range
    (:data:`FLOAT32_MAX`: it would overflow inside the attacks' float32 arithmetic), a non-positive value
    (``positive``), a negative one (``nonnegative``) or one outside [``minimum``, ``maximum``]."""
    v = _scalar(value, name)  # an int stays an int (``eps=10`` is passed on as given)
    if (isinstance(v, int) or math.isfinite(v)) and abs(v) > FLOAT32_MAX:
        raise ValueError(f"{name} must be at most {FLOAT32_MAX:.4g} in magnitude (the attacks compute in float32, "
                         f"where it would overflow to inf), got {v!r}")
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    if positive and not v > 0:
        raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    if nonnegative and not v >= 0:
        raise ValueError(f"{name} must be a non-negative finite number, got {v!r}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be at least {minimum!r}, got {v!r}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be at most {maximum!r}, got {v!r}")
    return v


def integer(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` checked and returned as a Python ``int``.

    Accepts Python ints, NumPy integer scalars and 0-d integer tensors. Raises ``TypeError`` naming ``name``
    for a boolean, a float (even an integral one: ``steps=10.0`` is refused) or a non-number, and ``ValueError``
    for a value below ``minimum``."""
    v = _scalar(value, name)
    if not isinstance(v, int):
        raise TypeError(f"{name} must be an integer, got {v!r}")
    if minimum is not None and v < minimum:
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer ≥ {minimum}")
        raise ValueError(f"{name} must be {kind}, got {v!r}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {v!r}")
    return v


def optional_number(value: Any, name: str, **kw: Any) -> float | None:
    """:func:`number`, passing ``None`` through."""
    return None if value is None else number(value, name, **kw)


def optional_integer(value: Any, name: str, **kw: Any) -> int | None:
    """:func:`integer`, passing ``None`` through."""
    return None if value is None else integer(value, name, **kw)
