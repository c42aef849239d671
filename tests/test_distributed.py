"""Sharding the attack with torch.distributed: 2 CPU processes with the gloo backend reproduce one process."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from oodlib.attack import ood_attack
from oodlib.distributed import merge, shard, sharded_ood_attack
from oodlib.models import SmallCNN


def _model():
    torch.manual_seed(0)
    return SmallCNN(in_channels=1, image_size=12, num_classes=5, width=4, latent_dim=8).eval()


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.rand(7, 1, 12, 12, generator=g), torch.rand(7, 1, 12, 12, generator=g)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    x_in, x_ood = _data()
    result = sharded_ood_attack(_model().features, x_in, x_ood, eps=2.0, steps=8, routine="authors", seed=5)
    if rank == 0:
        torch.save({"x": result.x, "mape": result.mape, "hist": result.mape_history}, out)
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("n, world", [(7, 2), (10, 3), (2, 4), (0, 2)])
def test_shards_are_contiguous_balanced_and_cover_everything(n, world):
    parts = [shard(n, r, world) for r in range(world)]
    assert [i for p in parts for i in range(n)[p]] == list(range(n))
    sizes = [p.stop - p.start for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_two_gloo_processes_reproduce_the_unsharded_attack(tmp_path):
    out = str(tmp_path / "merged.pt")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    merged = torch.load(out, weights_only=True)
    torch.set_num_threads(1)
    x_in, x_ood = _data()
    single = ood_attack(_model().features, x_in, x_ood, eps=2.0, steps=8, routine="authors", seed=5)
    torch.testing.assert_close(merged["x"], single.x, atol=1e-5, rtol=0)
    torch.testing.assert_close(merged["mape"], single.mape, atol=1e-5, rtol=1e-4)
    assert merged["hist"].shape == single.mape_history.shape


def test_without_a_process_group_it_is_a_plain_attack():
    x_in, x_ood = _data()
    a = sharded_ood_attack(_model().features, x_in, x_ood, eps=2.0, steps=3, seed=1)
    b = ood_attack(_model().features, x_in, x_ood, eps=2.0, steps=3, seed=1)
    assert torch.equal(a.x, b.x)
    assert merge([a]).x.shape == a.x.shape
