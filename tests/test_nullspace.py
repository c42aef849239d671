"""Tests of the Section 2.2 null-space attacks (oodlib.nullspace)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from oodlib.models import MLP
from oodlib.nullspace import (
    box_constrained_code_match,
    classifier_mlp_layers,
    display_scaled,
    fraction_outside_unit_box,
    linear_code,
    mlp_layers,
    null_space_attack,
    null_space_basis,
    pca_encoder,
    relative_code_error,
    relu_null_space_attack,
    relu_null_space_walk,
    relu_null_space_walks,
    relu_region_radius,
    stack_walks,
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


# --------------------------------------------------------------------------- the chapter's extensions


def test_classifier_mlp_layers_fold_normalisation():
    torch.manual_seed(0)
    model = MLP(1, 8, 3, hidden=(16, 6)).eval()
    x = torch.rand(5, 1, 8, 8, generator=generator(0))
    layers = classifier_mlp_layers(model)
    assert [layer.out_features for layer in layers] == [16, 6] and layers[0].weight.dtype == torch.float64
    h = x.flatten(1).double()
    h = torch.relu(layers[0](h))
    pre_z = layers[1](h)
    with torch.no_grad():
        assert torch.allclose(torch.relu(pre_z), model.features(x).double(), atol=1e-5)
        with_head = classifier_mlp_layers(model, include_head=True)
        logits = with_head[2](torch.relu(pre_z))
        assert torch.allclose(logits, model(x).double(), atol=1e-5)
    assert model.layers[0].weight.dtype == torch.float32  # the model itself is untouched
    with pytest.raises(TypeError):
        classifier_mlp_layers(nn.Linear(4, 2))


def test_relu_walk_on_folded_classifier_keeps_features():
    torch.manual_seed(0)
    model = MLP(1, 8, 3, hidden=(32, 6)).eval()
    x = torch.rand(3, 1, 8, 8, generator=generator(1))
    layers = classifier_mlp_layers(model)
    walks = stack_walks(relu_null_space_walks(layers, x.flatten(1).double(), 3.0, seed=0))
    assert walks["x"].shape == (3, 64) and walks["n_segments"].dtype == torch.int64
    assert torch.allclose(walks["perturbation_norm"], torch.full((3,), 3.0, dtype=torch.float64))
    error = relative_code_error(model.features, walks["x"].view(3, 1, 8, 8).float(), x)
    assert float(error.max()) < 1e-5
    radius = relu_region_radius(layers, x.flatten(1).double(), seed=0)
    assert radius.shape == (3,) and bool((radius > 0).all())
    assert torch.equal(radius, walks["max_norm_in_region"])


def test_pca_encoder_is_orthonormal_and_linear_code():
    x = torch.rand(50, 1, 4, 4, generator=generator(2))
    W = pca_encoder(x, 5)
    assert W.shape == (5, 16) and W.dtype == torch.float64
    assert torch.allclose(W @ W.T, torch.eye(5, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(linear_code(W, x), x.flatten(1).double() @ W.T)
    with pytest.raises(ValueError):
        pca_encoder(x, 16)


def test_box_constrained_code_match_is_exact_and_in_range():
    x_train = torch.rand(200, M, generator=generator(3))
    W = pca_encoder(x_train, K)
    x_in = torch.rand(4, M, generator=generator(4)).double()
    x_start = torch.rand(4, M, generator=generator(5)).double()
    result = box_constrained_code_match(W, linear_code(W, x_in), x_start)
    assert result.x.dtype == torch.float64 and result.x.shape == x_start.shape
    assert float(result.x.min()) >= 0.0 and float(result.x.max()) <= 1.0
    assert float(result.relative_code_error.max()) < 1e-10
    # x_in itself is feasible, so the projection is at least as close to the start
    assert bool((result.distance_to_start <= torch.linalg.norm(x_in - x_start, dim=1) + 1e-9).all())
    # KKT: x = clip(x_start - W^T lam) for some lam, i.e. the free pixels' step lies in the row space of W
    free = (result.x > 1e-9) & (result.x < 1 - 1e-9)
    step = (x_start - result.x)[0][free[0]]
    rows = W[:, free[0]]
    lam = torch.linalg.lstsq(rows.T, step).solution
    assert float(torch.linalg.norm(rows.T @ lam - step)) < 1e-8


def test_box_constrained_code_match_rejects_bad_shapes():
    W = random_matrix()
    with pytest.raises(ValueError):
        box_constrained_code_match(W, torch.zeros(2, K + 1, dtype=torch.float64), torch.zeros(2, M))


def test_diagnostics():
    x = torch.tensor([[-0.5, 0.5, 1.5, 1.0]])
    assert torch.allclose(fraction_outside_unit_box(x), torch.tensor([0.5], dtype=torch.float64))
    shown = display_scaled(x.view(1, 1, 2, 2))
    assert shown.shape == (1, 1, 2, 2) and float(shown.min()) == 0.0 and float(shown.max()) == 1.0


@pytest.mark.parametrize("seed", range(6))
def test_relu_walk_slides_through_corners(seed):
    """Units in identical pairs reach zero together, so every boundary is a corner of two units; switching one
    at a time used to leave the walk switching them back and forth without moving."""
    model, x = random_mlp(seed), image_like(seed)
    with torch.no_grad():
        first = model[1]
        first.weight[1::2] = first.weight[0::2]
        first.bias[1::2] = first.bias[0::2]
    result = relu_null_space_walk(model, x, 60.0, seed=seed, max_segments=100)
    assert result.perturbation_norm == pytest.approx(60.0, rel=1e-9)
    assert result.relative_output_error < 1e-10


def test_linear_code_module_matches_the_function():
    from oodlib.nullspace import LinearCode

    W = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    x = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(LinearCode(W)(x), linear_code(W, x))
