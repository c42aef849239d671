"""Parameter profiles and their validation.

A profile (``notebooks/params/<profile>.yml``) holds ``common`` values (applied to every notebook that declares
them) and one section per notebook under ``notebooks``. Every value is checked before any work starts: a name the
notebook does not declare, a value of the wrong type, a non-positive ε / step count / batch size, or an unknown
dataset, architecture, detector, start image or profile is rejected with a message naming the valid choices.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import jupytext
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
PARAMS_DIR = REPO_ROOT / "notebooks" / "params"
PROFILES: tuple[str, ...] = ("smoke", "default", "paper")


class ParameterError(ValueError):
    """An invalid parameter name or value, or an unknown profile."""


def _choices() -> dict[str, tuple[str, ...]]:
    from . import data, defenses, detectors, models  # noqa: F401  (defenses registers ATOM and BAL)

    return {"dataset": tuple(data.DATASETS), "arch": tuple(models.ARCHS), "detector": tuple(detectors.DETECTORS),
            "start image": tuple(data.START_IMAGES), "profile": PROFILES,
            "device": ("auto", "cpu", "cuda"), "norm": ("l2", "linf"), "update": ("adamax", "printed"),
            "schedule": ("constant", "cosine")}


# (name pattern, kind); the first match wins. Kinds: "positive", "positive_int", "nonneg_int", or a choices key.
RULES: tuple[tuple[str, str], ...] = (
    (r"^(profile)$", "profile"),
    (r"^(device)$", "device"),
    (r"^(norm|.*_norm)$", "norm"),
    (r"^(update|.*_update)$", "update"),
    (r"^(schedule|.*_schedule)$", "schedule"),
    (r"^(seed|.*_seed)$", "nonneg_int"),
    (r"^(eps|eps_.*|.*_eps|step_size|.*_step_size|tol)$", "positive"),
    (r"^(steps|.*_steps|epochs|.*_epochs|batch_size|.*_batch_size|n|n_.*|.*_per_class|restarts)$", "positive_int"),
    (r"^(dataset|.*_dataset|datasets)$", "dataset"),
    (r"^(arch|.*_arch|archs)$", "arch"),
    (r"^(detector|detectors|.*_detector)$", "detector"),
    (r"^(start|starts|start_image|start_images|.*_start|.*_starts)$", "start image"),
)


def rule_for(name: str) -> str | None:
    return next((kind for pattern, kind in RULES if re.match(pattern, name)), None)


def _check_value(name: str, value: Any, kind: str) -> None:
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if kind == "positive":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ParameterError(f"parameter {name!r} must be a positive number, got {v!r}")
        elif kind in ("positive_int", "nonneg_int"):
            low = 1 if kind == "positive_int" else 0
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                what = "a positive integer" if low else "a non-negative integer"
                raise ParameterError(f"parameter {name!r} must be {what}, got {v!r}")
        else:
            choices = _choices()[kind]
            if v not in choices and not (kind == "device" and isinstance(v, str) and v.startswith("cuda:")):
                raise ParameterError(f"parameter {name!r}: unknown {kind} {v!r}; valid choices: "
                                     f"{', '.join(choices)}")


def _check_type(name: str, value: Any, default: Any) -> None:
    if default is None or value is None:
        return
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str),
          list: lambda v: isinstance(v, (list, tuple)),
          dict: lambda v: isinstance(v, dict)}.get(type(default), lambda v: True)
    if not ok(value):
        raise ParameterError(f"parameter {name!r} must be of type {type(default).__name__} like its default "
                             f"{default!r}, got {type(value).__name__} {value!r}")


def declared_parameters(notebook: str | Path) -> dict[str, Any]:
    """The names and default values of a notebook's ``parameters`` cell."""
    nb = jupytext.read(Path(notebook))
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if not cells:
        raise ParameterError(f"{notebook} has no cell tagged 'parameters'")
    namespace: dict[str, Any] = {}
    exec(compile(cells[0].source, f"{notebook}:parameters", "exec"), {}, namespace)
    return {k: v for k, v in namespace.items() if not k.startswith("_")}


def validate(notebook: str | Path, params: dict[str, Any], declared: dict[str, Any] | None = None) -> None:
    """Reject unknown names and invalid values (see module docstring)."""
    declared = declared_parameters(notebook) if declared is None else declared
    for name, value in params.items():
        if name not in declared:
            raise ParameterError(f"unknown parameter {name!r} for {Path(notebook).name}; valid names: "
                                 f"{', '.join(sorted(declared))}")
        _check_type(name, value, declared[name])
        kind = rule_for(name)
        if kind is not None:
            _check_value(name, value, kind)


def load_profile(profile: str, params_dir: Path | None = None) -> dict[str, Any]:
    """The parsed profile file ``<params_dir>/<profile>.yml`` (default folder :data:`PARAMS_DIR`)."""
    if profile not in PROFILES:
        raise ParameterError(f"unknown profile {profile!r}; valid choices: {', '.join(PROFILES)}")
    folder = PARAMS_DIR if params_dir is None else params_dir
    return yaml.safe_load((folder / f"{profile}.yml").read_text()) or {}


def effective_parameters(notebook: str | Path, profile: str, overrides: dict[str, Any] | None = None,
                         params_dir: Path | None = None) -> dict[str, Any]:
    """Parameters for one notebook: the profile's common values it declares, its own section, the overrides,
    and ``profile``; validated."""
    notebook = Path(notebook)
    declared = declared_parameters(notebook)
    spec = load_profile(profile, params_dir)
    section = (spec.get("notebooks") or {}).get(notebook.stem, {}) or {}
    common = {k: v for k, v in (spec.get("common") or {}).items() if k in declared}
    validate(notebook, section, declared)
    params = {**common, **section, **(overrides or {}), "profile": profile}
    validate(notebook, params, declared)
    return params


def parse_override(name: str, text: str) -> tuple[str, Any]:
    """``-p NAME VALUE`` from the command line: the value is read as YAML (``5`` → int, ``[noise, ct]`` → list)."""
    return name, yaml.safe_load(text)




def parameter_table(notebooks: list[Path], profiles: tuple[str, ...] = ("paper", "default", "smoke"),
                    params_dir: Path | None = None) -> list[list[Any]]:
    """Rows ``[notebook, parameter, value per profile...]`` of every parameter a profile sets or a notebook
    declares, for the book's Appendix A page (the paper's parameter list set beside ours)."""
    rows = []
    for nb in notebooks:
        per_profile = [effective_parameters(nb, p, params_dir=params_dir) for p in profiles]
        for name in declared_parameters(nb):
            if name == "profile":
                continue
            values = [_short(values.get(name)) for values in per_profile]
            rows.append([nb.stem, name, *values])
    return rows


def _short(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()
