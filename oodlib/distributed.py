"""Sharding the OOD attack across processes or GPUs with ``torch.distributed``.

The paper-profile runs are large (e.g. 10,000 CIFAR-10 images × 10⁴ iterations). Each rank attacks a contiguous
slice of the samples; the slices are gathered and concatenated in rank order, so the merged result is the same as
one unsharded run (every step of Algorithm 1 is per sample, and a sample's random start is seeded by its global
index — see :func:`oodlib.attack.ood.start_noise`).

Launch with torchrun, one process per GPU (or several CPU processes with the gloo backend)::

    torchrun --nproc_per_node=8 -m oodlib.distributed --arch resnet18 --dataset cifar10 --n 10000 \\
        --start noise --eps 10 --steps 10000 --out attack.pt
"""

from __future__ import annotations

import argparse
import os
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor

from .attack import AttackResult, ood_attack


def shard(n: int, rank: int, world_size: int) -> slice:
    """The contiguous, balanced slice of ``range(n)`` that ``rank`` of ``world_size`` attacks (the first
    ``n % world_size`` ranks take one sample more)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def merge(parts: list[AttackResult]) -> AttackResult:
    """Concatenate per-rank results in rank order (the histories along the sample axis)."""
    first = parts[0]
    return AttackResult(x=torch.cat([p.x for p in parts]), loss=torch.cat([p.loss for p in parts]),
                        mape=torch.cat([p.mape for p in parts]),
                        loss_history=torch.cat([p.loss_history for p in parts], dim=1),
                        mape_history=torch.cat([p.mape_history for p in parts], dim=1),
                        iterations=first.iterations, steps_run=max(p.steps_run for p in parts),
                        z_target=torch.cat([p.z_target for p in parts]),
                        nonfinite_steps=torch.cat([p.nonfinite_steps for p in parts]),
                        params={k: v for k, v in first.params.items() if k != "first_index"})


def sharded_ood_attack(f: Callable[[Tensor], Tensor], x_in: Tensor, x_ood: Tensor, **attack_options
                       ) -> AttackResult:
    """:func:`~oodlib.attack.ood_attack` with the samples split across the ranks of the initialised default
    process group; every rank returns the merged result (on the CPU). Without a process group it is a plain
    ``ood_attack``."""
    if not (dist.is_available() and dist.is_initialized()):
        return ood_attack(f, x_in, x_ood, **attack_options)
    rank, world = dist.get_rank(), dist.get_world_size()
    if x_in.shape[0] < world:
        raise ValueError(f"x_in holds {x_in.shape[0]} sample(s), fewer than the {world} ranks: a rank would get an "
                         "empty shard; attack on fewer processes")
    part = shard(x_in.shape[0], rank, world)
    x_ood_part = x_ood if x_ood.shape[0] == 1 else x_ood[part]
    mine = ood_attack(f, x_in[part], x_ood_part, first_index=part.start, **attack_options)
    mine.x, mine.z_target = mine.x.cpu(), mine.z_target.cpu()
    gathered: list[AttackResult | None] = [None] * world
    dist.all_gather_object(gathered, mine)
    return merge([g for g in gathered if g is not None])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchrun ... -m oodlib.distributed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="small_cnn")
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--n", type=int, default=1000, help="test images attacked")
    parser.add_argument("--start", default="noise")
    parser.add_argument("--eps", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--routine", default="authors")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="attack.pt")
    return parser


def main(argv: list[str] | None = None) -> int:
    from . import data
    from .store import ModelSpec, get_model

    args = _parser().parse_args(argv)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    rank = dist.get_rank()
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    if rank == 0:  # train (or load) the model once, then the other ranks load it from the store
        get_model(ModelSpec.make(args.arch, args.dataset, epochs=args.epochs, seed=args.seed), device="cpu")
    dist.barrier()
    model = get_model(ModelSpec.make(args.arch, args.dataset, epochs=args.epochs, seed=args.seed), device=device)
    x_in = data.load_dataset(args.dataset, "test").subset(args.n, seed=args.seed).x
    x_ood = data.start_batch(args.start, len(x_in), size=x_in.shape[-1], channels=x_in.shape[1], seed=args.seed)
    result = sharded_ood_attack(model.features, x_in, x_ood, eps=args.eps, steps=args.steps, routine=args.routine,
                                seed=args.seed)
    if rank == 0:
        torch.save({"x": result.x, "mape": result.mape, "loss": result.loss, "params": result.params}, args.out)
        print(f"{len(result.x)} samples attacked on {dist.get_world_size()} ranks; median MAPE "
              f"{result.mape.median():.3e}; saved {args.out}")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
