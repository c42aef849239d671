"""The ``"jem"`` recipe: a classifier trained as a Joint Energy-based Model (Grathwohl et al., ICLR 2020, *Your
Classifier is Secretly an Energy Based Model and You Should Treat it Like One*; the attack paper's Appendix J).

JEM trains the cross-entropy on labelled images plus the maximum-likelihood gradient of ``log p(x)``, whose
intractable normaliser is handled by contrasting data with samples drawn by SGLD from a persistent replay buffer
(:mod:`oodlib.samplers`); the loss is :func:`oodlib.losses.jem_loss`. The detectors are in
:mod:`oodlib.detectors.jem`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data import ImageSet
from ..losses import jem_loss
from ..samplers import ReplayBuffer, sgld
from ..training import ModelSpec, fit, register_recipe, tail_mean
from ..utils import eval_mode

REFERENCE_SETTINGS = {"sgld_steps": 20, "sgld_step_size": 1.0, "sgld_noise": 0.01, "buffer_size": 10000,
                      "reinit_freq": 0.05, "data_noise": 0.03, "lr": 1e-4, "warmup_iters": 1000, "batch_size": 64}
"""The reference JEM training settings (``wgrathwohl/JEM``, CIFAR-10), the recipe's defaults. The reference's images
lie in [−1, 1] and ours in [0, 1]; the SGLD step and noise are used as numbers in our units (the drift's scale
depends on the network anyway, and the default profile's values were checked to give digit-like samples)."""


def linear_warmup(warmup_iters: int):
    """JEM's schedule for :func:`oodlib.training.fit`: the learning rate rises linearly over ``warmup_iters``
    steps, ``lr · min(1, (step + 1) / warmup_iters)``, then stays (no decay)."""

    def schedule(optimizer: torch.optim.Optimizer, n_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: min(1.0, (it + 1) / max(warmup_iters, 1)))

    return schedule


@register_recipe("jem")
def train_jem(model: nn.Module, train: ImageSet, spec: ModelSpec, device: torch.device) -> dict:
    """Train a classifier as a JEM (Grathwohl et al. 2020, Algorithm 1) on the shared loop
    (:func:`oodlib.training.fit`) with a linear warm-up (:func:`linear_warmup`) in place of the cosine decay: per
    batch, ``batch_size`` samples continued from the replay buffer by ``sgld_steps`` SGLD steps (the model in eval
    mode), then :func:`oodlib.losses.jem_loss`. Training images get N(0, ``data_noise``²) noise as in the
    reference.

    Recipe options (``spec.recipe_options``; defaults :data:`REFERENCE_SETTINGS`, the reference CIFAR-10 settings):
    ``sgld_steps``, ``sgld_step_size``, ``sgld_noise``, ``buffer_size``, ``reinit_freq``, ``data_noise``,
    ``lr``, ``warmup_iters``, ``batch_size``. The reference also removes batch normalisation from the network
    (it couples the data and the sampled images of a batch): build the model with ``options={"norm": "none"}``.

    Returns
    -------
    dict
        ``final_train_ce`` and ``final_generative_term`` (means over the last tenth of the steps), ``train_seconds``
        and the settings used, ``jem_<option>``.
    """
    opt = {k: spec.option(k, v) for k, v in REFERENCE_SETTINGS.items()}
    gen = torch.Generator().manual_seed(spec.seed)
    buffer = ReplayBuffer(opt["buffer_size"], tuple(train.x.shape[1:]), gen)
    x_all, y_all = train.x.to(device), train.y.to(device)
    ce_hist, gen_hist = [], []

    def step_loss(step: int, idx: Tensor) -> Tensor:
        idx = idx.to(device)
        x = x_all[idx] + opt["data_noise"] * torch.randn(x_all[idx].shape, generator=gen).to(device)
        chains, slots = buffer.sample(len(idx), opt["reinit_freq"])
        with eval_mode(model):
            x_sampled = sgld(model, chains.to(device), steps=opt["sgld_steps"], step_size=opt["sgld_step_size"],
                             noise=opt["sgld_noise"], generator=gen)
        buffer.store(slots, x_sampled)
        loss, ce, generative = jem_loss(model, x, y_all[idx], x_sampled)
        ce_hist.append(ce.item())
        gen_hist.append(generative.item())
        return loss

    facts = fit(model, step_loss, n_examples=len(train), epochs=spec.epochs, batch_size=opt["batch_size"],
                lr=opt["lr"], generator=gen, schedule=linear_warmup(opt["warmup_iters"]))
    tail = max(len(ce_hist) // 10, 1)
    return {"final_train_ce": tail_mean(ce_hist, tail), "final_generative_term": tail_mean(gen_hist, tail),
            "train_seconds": facts["train_seconds"], **{f"jem_{k}": v for k, v in opt.items()}}
