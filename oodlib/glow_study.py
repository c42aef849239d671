"""The set-up that Section 3.2 (Glow) and Appendix I (input complexity on Glow) share: one cached flow on a face
dataset, held-out faces to attack, non-face crops of the same dataset and natural-image crops to compare, and the
paper's ε = 10 on CelebA's 64×64×3 images scaled to this image size (same root-mean-square change per value).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from . import data, experiments, flows
from .store import flow_info, get_flow
from .report import glue_value

PAPER_IMAGE_VALUES = 3 * 64 * 64
"""Values per image of the paper's CelebA Glow experiments (Section 3.2, Appendix I)."""

FLOW_PARAMETERS = {"levels": "flow_levels", "depth": "flow_depth", "hidden": "flow_hidden", "affine": "flow_affine",
                   "batch_size": "flow_batch_size", "lr": "flow_lr"}
"""Fields of :class:`oodlib.flows.FlowSpec` read from the chapter parameters of these names."""

CHAPTER_PARAMETERS = ("seed", "dataset", "image_size", "channels", "epochs", "train_limit", "n_samples",
                      "n_natural", "eps_paper", *FLOW_PARAMETERS.values())
"""The chapter parameters :func:`prepare` reads."""


@dataclass
class FlowStudy:
    """A trained flow and its images: ``x_in`` (n_samples held-out faces), ``x_other`` (n_natural non-face crops
    of the dataset) and ``x_natural`` (n_natural natural-image crops), all (N, C, H, W) in [0, 1]; ``eps`` the
    paper's L2 budget scaled to ``n_values`` values per image; ``info`` the flow's recorded training facts."""

    spec: flows.FlowSpec
    flow: torch.nn.Module
    info: dict
    x_in: Tensor
    x_other: Tensor
    x_natural: Tensor
    n_values: int
    eps: float

    @property
    def description(self) -> str:
        """"L=2, K=4, hidden=32, affine coupling": the flow's architecture, for a profile banner."""
        s = self.spec
        return f"L={s.levels}, K={s.depth}, hidden={s.hidden}, {'affine' if s.affine else 'additive'} coupling"


def prepare(params: Mapping[str, Any], device: str = "auto") -> FlowStudy:
    """Load (or train) the flow the chapter parameters ``params`` describe (the names of
    :data:`CHAPTER_PARAMETERS`; a chapter passes ``globals()`` after ``check_chapter``) and draw its images.

    Raises
    ------
    KeyError
        If ``params`` lacks one of :data:`CHAPTER_PARAMETERS`.
    """
    missing = [name for name in CHAPTER_PARAMETERS if name not in params]
    if missing:
        raise KeyError(f"chapter parameters missing for the flow study: {missing}")
    p, seed = params, params["seed"]
    spec = flows.FlowSpec.make(dataset=p["dataset"], image_size=p["image_size"], channels=p["channels"],
                               epochs=p["epochs"], train_limit=p["train_limit"], seed=seed,
                               **{field: p[name] for field, name in FLOW_PARAMETERS.items()})
    flow = get_flow(spec, device=device)
    x_in = spec.images("test").subset(p["n_samples"], seed=seed).x
    x_other = spec.other_images("test").subset(p["n_natural"], seed=seed).x
    x_natural = data.natural_ood_set(p["n_natural"], size=p["image_size"], channels=p["channels"], seed=seed)
    n_values = x_in[0].numel()
    eps = experiments.scale_eps(p["eps_paper"], n_values, paper_values=PAPER_IMAGE_VALUES)
    return FlowStudy(spec, flow, flow_info(spec), x_in, x_other, x_natural, n_values, eps)


def glue_budget(study: FlowStudy, steps: int) -> None:
    """Glue ``eps``, ``rms`` (its root-mean-square change per value), ``steps`` and ``n_in`` (faces attacked)."""
    glue_value("eps", study.eps)
    glue_value("rms", experiments.rms_per_value(study.eps, study.n_values))
    glue_value("steps", steps)
    glue_value("n_in", len(study.x_in))
