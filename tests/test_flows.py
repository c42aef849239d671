"""Tests of the Glow flow (oodlib.flows) and the likelihood detectors on it (oodlib.detectors.glow)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from oodlib import flows, store
from oodlib.recipes.flow import train_flow
from oodlib.detectors.glow import (GlowNLL, InputComplexity, attack_from_starts, attack_to_values,
                                   png_bits_per_dim, quantise_8bit)


def _tiny_flow(dtype: torch.dtype = torch.float32, size: int = 4, levels: int = 2, channels: int = 1,
               affine: bool = True) -> flows.Glow:
    """A small initialised flow whose weights are perturbed away from Glow's identity initialisation (zero last
    coupling layer), so couplings, 1×1 convolutions and actnorms all act."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        flow = flows.Glow(channels, size, levels=levels, depth=2, hidden=4, affine=affine).to(dtype)
        x = torch.rand(16, channels, size, size, dtype=dtype)
        flow.initialise(x, torch.Generator().manual_seed(1))
        with torch.no_grad():
            for p in flow.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return flow.eval()


@pytest.mark.parametrize("affine", [True, False])
def test_invertible_x_to_z_to_x(affine):
    flow = _tiny_flow(torch.float64, size=8, affine=affine)
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    z = flow.encode(x)
    assert z.shape == (3, 64)
    assert torch.allclose(flow.decode(z), x, atol=1e-10)


@pytest.mark.parametrize("affine", [True, False])
def test_log_det_matches_autograd_jacobian(affine):
    flow = _tiny_flow(torch.float64, size=4, affine=affine)
    y = flow.dequantise(torch.rand(1, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3)))
    _, log_det = flow.to_latent(y)
    jac = torch.autograd.functional.jacobian(lambda v: flow.to_latent(v.view(1, 1, 4, 4))[0][0], y.flatten())
    assert jac.shape == (16, 16)
    assert torch.allclose(torch.linalg.slogdet(jac).logabsdet, log_det[0], atol=1e-8)
    assert abs(log_det.item()) > 1e-3  # the perturbed flow is not volume-preserving: the test has teeth


def test_log_prob_is_gaussian_prior_plus_log_det():
    flow = _tiny_flow(torch.float64, size=8)
    y = flow.dequantise(torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4)))
    z, log_det = flow.to_latent(y)
    prior = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(dim=1)
    assert torch.allclose(flow.log_prob(y), prior + log_det, atol=1e-8)


@pytest.mark.parametrize("image", ["black", "white", "noise"])
def test_nll_finite_on_extreme_inputs(image):
    flow = _tiny_flow(size=8)
    x = {"black": torch.zeros(2, 1, 8, 8), "white": torch.ones(2, 1, 8, 8),
         "noise": torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(5))}[image]
    nll = flow.nll(x)
    assert nll.shape == (2,)
    assert torch.isfinite(nll).all()
    assert torch.equal(nll, flow.nll(x))  # deterministic at evaluation


def test_input_gradient_finite_and_nonzero():
    flow = _tiny_flow(size=8)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(6)).requires_grad_(True)
    (grad,) = torch.autograd.grad(flow.nll(x).sum(), x)
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0


def test_dequantisation_noise_is_seeded_and_within_a_bin():
    flow = _tiny_flow(size=8)
    x = quantise_8bit(torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(7)))
    a = flow.dequantise(x, torch.Generator().manual_seed(0))
    b = flow.dequantise(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    centre = flow.dequantise(x)
    assert (a - centre).abs().max() <= 0.5 / flows.N_BINS + 1e-7


def test_uninitialised_flow_refuses_to_evaluate():
    flow = flows.Glow(1, 8, levels=1, depth=1, hidden=4)
    with pytest.raises(RuntimeError, match="initialise"):
        flow.nll(torch.rand(1, 1, 8, 8))


def test_sample_is_seeded_and_in_range():
    flow = _tiny_flow(size=8)
    a, b = flow.sample(3, seed=1), flow.sample(3, seed=1)
    assert a.shape == (3, 1, 8, 8) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1


def test_rgb_flow_has_the_right_geometry():
    flow = _tiny_flow(size=8, channels=3, levels=2)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(8))
    assert flow.encode(x).shape == (2, 192)
    assert torch.isfinite(flow.nll(x)).all()


def test_geometry_is_validated():
    with pytest.raises(ValueError, match="divisible"):
        flows.Glow(1, 10, levels=2)
    with pytest.raises(ValueError, match="channels"):
        flows.Glow(2, 8)
    with pytest.raises(ValueError, match="dataset"):
        flows.FlowSpec(dataset="nope").validate()


# --------------------------------------------------------------------------------------------------- the cache


_TINY_SPEC = flows.FlowSpec(image_size=8, levels=1, depth=1, hidden=4, epochs=2, batch_size=64)


def test_store_trains_once_caches_and_rebuilds_a_corrupt_file(tmp_path, monkeypatch):
    monkeypatch.setenv("OODLIB_CACHE", str(tmp_path))
    flow = store.get_flow(_TINY_SPEC, device="cpu")
    info = store.flow_info(_TINY_SPEC)
    assert info is not None and info["n_train"] == 150 and info["n_test"] == 25  # 75 LFW faces and mirrors
    assert math.isfinite(info["test_bpd"])
    again = store.get_flow(_TINY_SPEC, device="cpu")
    for (k, a), (_, b) in zip(flow.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    weights = next((tmp_path / "flows").glob("*.pt"))
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.warns(UserWarning, match="checksum"):
        rebuilt = store.get_flow(_TINY_SPEC, device="cpu")
    assert torch.equal(rebuilt.nll(torch.zeros(1, 1, 8, 8)), flow.nll(torch.zeros(1, 1, 8, 8)))


def test_cache_key_changes_with_the_spec():
    other = flows.FlowSpec(image_size=8, levels=1, depth=1, hidden=4, epochs=3, batch_size=64)
    assert store.cache_key(_TINY_SPEC) != store.cache_key(other)
    assert store.cache_key(_TINY_SPEC) == store.cache_key(flows.FlowSpec.make(**{
        "image_size": 8, "levels": 1, "depth": 1, "hidden": 4, "epochs": 2, "batch_size": 64, "classes": [0]}))


def test_training_lowers_the_nll():
    spec = flows.FlowSpec(image_size=8, levels=1, depth=1, hidden=8, epochs=5, batch_size=32)
    x = spec.images("train").x
    flow = spec.build()
    flow.initialise(x, torch.Generator().manual_seed(0))
    before = flows.mean_nll(flow, x)
    facts = train_flow(flow, x, spec, torch.device("cpu"))
    assert flows.mean_nll(flow, x) < before
    assert facts["n_train"] == 2 * len(x)


# --------------------------------------------------------------------------------------------------- detectors


def test_png_bits_per_dim_matches_pil_and_orders_complexity():
    rng = np.random.default_rng(0)
    noise = torch.from_numpy(rng.integers(0, 256, (1, 1, 16, 16)).astype(np.float32) / 255)
    flat = torch.full((1, 1, 16, 16), 0.5)
    buffer = io.BytesIO()
    Image.fromarray((noise[0, 0].numpy() * 255).round().astype(np.uint8)).save(buffer, format="PNG",
                                                                              compress_level=9)
    assert png_bits_per_dim(noise).item() == pytest.approx(8 * len(buffer.getvalue()) / 256)
    assert png_bits_per_dim(flat).item() < png_bits_per_dim(noise).item()
    assert png_bits_per_dim(torch.rand(2, 3, 8, 8)).shape == (2,)
    with pytest.raises(ValueError, match="C in"):
        png_bits_per_dim(torch.rand(2, 2, 8, 8))


def test_detector_scores_and_gradients():
    flow = _tiny_flow(size=8)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(9)).requires_grad_(True)
    nll_detector, ic_detector = GlowNLL(flow), InputComplexity(flow)
    assert torch.allclose(nll_detector.score(x), -flow.nll(x))
    assert torch.allclose(ic_detector.score(x), png_bits_per_dim(x) - flow.nll(x))
    assert nll_detector.targets == ("score",) and torch.equal(nll_detector.ood_score(x), flow.nll(x))
    (g_nll,) = torch.autograd.grad(nll_detector.score(x).sum(), x)
    (g_ic,) = torch.autograd.grad(ic_detector.score(x).sum(), x)
    assert torch.allclose(g_nll, g_ic)  # L(x) is piecewise constant: it contributes no gradient
    assert torch.equal(ic_detector.score_batched(x.detach()), ic_detector.score(x).detach())


def test_attack_moves_the_score_toward_its_target_inside_the_ball():
    flow = _tiny_flow(size=8)
    detector = GlowNLL(flow)
    x_in = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(10))
    runs = attack_from_starts(detector, x_in, ["checker2", "spiral"], eps=1.0, steps=20)
    assert list(runs) == ["checker2", "spiral"]
    for run in runs.values():
        assert run.x_attacked.shape == (2, 1, 8, 8)
        assert (run.x_attacked - run.x_start).flatten(1).norm(dim=1).max() <= 1.0 + 1e-4
        assert ((run.attacked - run.target).abs() < (run.clean - run.target).abs()).all()
    values = attack_to_values(detector, "checker8", [1.0, 50.0], size=8, channels=1, eps=1.0, steps=20)
    assert ((values.attacked - values.target).abs() < (values.clean - values.target).abs()).all()
    assert values.mape.shape == (2,)


def test_other_images_are_the_classes_the_flow_does_not_model():
    spec = flows.FlowSpec(image_size=8)
    faces, others = spec.images("test"), spec.other_images("test")
    assert len(faces) == 25 and len(others) == 25  # the LFW subset's held-out faces and non-face crops
    assert faces.x.shape[1:] == others.x.shape[1:] == (1, 8, 8)
    assert len(flows.FlowSpec(image_size=8, classes=(0, 1)).other_images("test")) == 0
