"""Tests of the Section 2.2 null-space attacks (oodlib.nullspace)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from oodlib.nullspace import (
    mlp_layers,
    null_space_attack,
    null_space_basis,
    relu_null_space_attack,
    relu_null_space_walk,
)

K, M = 10, 784


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_matrix(seed: int = 0) -> torch.Tensor:
    return torch.randn(K, M, generator=generator(seed), dtype=torch.float64)


def random_mlp(seed: int = 0, widths: tuple[int, ...] = (784, 64, 32, 10)) -> nn.Sequential:
    """ReLU MLP with He-scaled weights drawn from a local generator."""
    g = generator(seed)
    modules: list[nn.Module] = [nn.Flatten(0)]
    for i, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
        layer = nn.Linear(fan_in, fan_out).double()
        with torch.no_grad():
            layer.weight.copy_(torch.randn(fan_out, fan_in, generator=g, dtype=torch.float64) * math.sqrt(2 / fan_in))
            layer.bias.copy_(0.1 * torch.randn(fan_out, generator=g, dtype=torch.float64))
        modules += [layer, nn.ReLU()] if i < len(widths) - 2 else [layer]
    return nn.Sequential(*modules)


def image_like(seed: int = 0) -> torch.Tensor:
    return torch.rand(M, generator=generator(seed), dtype=torch.float64)


def test_null_space_basis_is_orthonormal_null():
    W = random_matrix()
    N = null_space_basis(W)
    assert N.shape == (M, M - K) and N.dtype == torch.float64
    assert torch.allclose(N.T @ N, torch.eye(M - K, dtype=torch.float64), atol=1e-12)
    assert float((W @ N).abs().max()) < 1e-12 * float(W.abs().max())


def test_null_space_basis_rank_deficient():
    W = random_matrix()
    W[5] = W[0] + W[1]
    assert null_space_basis(W).shape == (M, M - K + 1)


@pytest.mark.parametrize("magnitude", [1e-3, 1.0, 10.0, 1e3])
def test_null_space_attack_keeps_code(magnitude):
    W, x = random_matrix(), torch.randn(M, generator=generator(1), dtype=torch.float64)
    x_adv = null_space_attack(W, x, magnitude, seed=2)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert float(torch.linalg.norm(W @ x_adv - W @ x)) < 1e-9 * float(torch.linalg.norm(W @ x))
    assert float(torch.linalg.norm(x_adv - x)) == pytest.approx(magnitude, rel=1e-9)


def test_null_space_attack_batch_and_determinism():
    W = random_matrix()
    X = torch.randn(5, M, generator=generator(3), dtype=torch.float64)
    X_adv = null_space_attack(W, X, 100.0, seed=4)
    assert X_adv.shape == X.shape
    residual = torch.linalg.norm((X_adv - X) @ W.T, dim=1)
    assert bool((residual < 1e-9 * torch.linalg.norm(X @ W.T, dim=1)).all())
    assert torch.allclose(torch.linalg.norm(X_adv - X, dim=1), torch.full((5,), 100.0, dtype=torch.float64))
    directions = (X_adv - X) / 100.0
    assert float((directions @ directions.T - torch.eye(5, dtype=torch.float64)).abs().max()) < 0.5
    assert torch.equal(X_adv, null_space_attack(W, X, 100.0, seed=4))
    assert not torch.equal(X_adv, null_space_attack(W, X, 100.0, seed=5))


def test_null_space_attack_float32_roundtrip():
    W, x = random_matrix(), image_like().float()
    x_adv = null_space_attack(W.float(), x, 5.0, seed=0)
    assert x_adv.dtype == torch.float32
    assert float(torch.linalg.norm(x_adv.double() - x.double())) == pytest.approx(5.0, rel=1e-5)


def test_null_space_attack_rejects_trivial_null_space():
    with pytest.raises(ValueError):
        null_space_attack(torch.eye(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64), 1.0)


def test_mlp_layers_extracts_and_validates():
    model = random_mlp()
    layers = mlp_layers(model)
    assert [layer.out_features for layer in layers] == [64, 32, 10]
    with pytest.raises(TypeError):
        mlp_layers(nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)))
    with pytest.raises(ValueError):
        mlp_layers(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)))
    with pytest.raises(ValueError):
        mlp_layers(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2), nn.ReLU()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_relu_attack_stays_in_region(seed):
    model, x = random_mlp(seed), image_like(seed)
    result = relu_null_space_attack(mlp_layers(model), x, magnitude=1e3, seed=seed)
    assert 0 < result.max_norm_in_region < 1e3
    assert result.perturbation_norm <= result.max_norm_in_region * (1 + 1e-12)
    assert result.perturbation_norm == pytest.approx(result.max_norm_in_region, rel=1e-9)
    assert result.relative_output_error < 1e-12
    with torch.no_grad():
        assert torch.allclose(model(result.x), model(x), rtol=0, atol=1e-12)


def test_relu_attack_inside_region_preserves_pattern():
    model, x = random_mlp(), image_like()
    t_max = relu_null_space_attack(model, x, 1e3).max_norm_in_region
    result = relu_null_space_attack(model, x, 0.5 * t_max)
    assert result.pattern_preserved
    assert result.perturbation_norm == pytest.approx(0.5 * t_max, rel=1e-9)
    assert result.relative_output_error < 1e-12
    assert result.x.shape == x.shape and result.x.dtype == x.dtype


def test_relu_walk_goes_far_beyond_one_region():
    model, x = random_mlp(), image_like()
    first = relu_null_space_attack(model, x, 1e3, seed=0).max_norm_in_region
    target = 20 * first
    result = relu_null_space_walk(model, x, target, seed=0)
    assert result.max_norm_in_region == first
    assert result.perturbation_norm == pytest.approx(target, rel=1e-9)
    assert result.n_segments > 1 and not result.pattern_preserved
    assert result.relative_output_error < 1e-6
    with torch.no_grad():
        assert float(torch.linalg.norm(model(result.x) - model(x))) < 1e-6 * float(torch.linalg.norm(model(x)))


def test_relu_walk_is_deterministic_and_respects_max_segments():
    model, x = random_mlp(), image_like()
    a = relu_null_space_walk(model, x, 50.0, seed=7)
    b = relu_null_space_walk(model, x, 50.0, seed=7)
    assert torch.equal(a.x, b.x)
    capped = relu_null_space_walk(model, x, 1e6, seed=7, max_segments=3)
    assert capped.n_segments == 3 and capped.perturbation_norm < 1e6
