"""Training the Glow flow of Sections 2.3 and 3.2 and Appendix I (:class:`oodlib.flows.Glow`): maximum likelihood on
uniformly dequantised images on the shared loop, and :func:`train`, which the store's flow cache calls."""

from __future__ import annotations

import time
import torch
from torch import Tensor

from ..flows import FlowSpec, Glow, mean_nll
from ..training import fit


def train_flow(flow: Glow, x: Tensor, spec: FlowSpec, device: torch.device) -> dict:
    """Maximum-likelihood training of ``flow`` in place on images ``x`` (N, C, H, W) in [0, 1].

    The loss is the mean NLL in bits per dimension of uniformly dequantised images (Theis et al., 2016); the
    actnorm layers are initialised on (up to 512 of) the dequantised training images first. Optimiser and
    schedule as :class:`~oodlib.flows.FlowSpec` says; every random draw (batch order, dequantisation noise) comes
    from one generator seeded with ``spec.seed``.

    Returns
    -------
    dict
        ``final_train_bpd`` (mean over the last ten mini-batches, dequantised), ``train_seconds``,
        ``n_train`` (images per epoch, mirror images included).
    """
    x = torch.cat([x, x.flip(-1)]) if spec.hflip else x
    gen = torch.Generator().manual_seed(spec.seed)
    x_all = x.to(device)
    start = time.perf_counter()
    flow.initialise(x_all[torch.randperm(len(x_all), generator=gen)[:512].to(device)], gen)

    def step_loss(step: int, idx: Tensor) -> Tensor:
        return flow.nll(x_all[idx.to(device)], gen).mean()

    facts = fit(flow, step_loss, n_examples=len(x_all), epochs=spec.epochs, batch_size=spec.batch_size,
                lr=spec.lr, generator=gen, clip_norm=spec.clip, loss_name="final_train_bpd")
    return {**facts, "train_seconds": time.perf_counter() - start, "n_train": len(x_all)}


def train(spec: FlowSpec, device: torch.device) -> tuple[Glow, dict]:
    """Train the flow of ``spec`` on ``device`` (the global RNG seeded with ``spec.seed`` and restored
    afterwards); returns it and the facts to store: train/test bits per dimension, time, sizes."""
    train_images, test = spec.images("train"), spec.images("test")
    flow = spec.build().to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        facts = train_flow(flow, train_images.x, spec, device)
    facts["train_bpd"] = mean_nll(flow, train_images.x)
    facts["test_bpd"] = mean_nll(flow, test.x)
    facts["n_test"] = len(test)
    facts["n_parameters"] = sum(p.numel() for p in flow.parameters())
    return flow, facts
