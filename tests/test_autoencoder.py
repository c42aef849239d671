"""Tests of the Section 2.4 auto-encoder, its cache, the reconstruction detector and the attacks on it."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from oodlib import autoencoder as ae_mod
from oodlib import metrics
from oodlib.autoencoder import (
    AutoEncoderSpec,
    ConvAutoEncoder,
    attack_autoencoder,
    attack_summary,
    nearest_image_distance,
)
from oodlib.detectors.base import DETECTORS, make_detector
from oodlib.detectors.reconstruction import ReconstructionError
from oodlib.store import autoencoder_info, get_autoencoder
from oodlib.store import cache_key as autoencoder_cache_key

TINY = dict(dataset="digits", latent_dim=4, width=4, epochs=1, batch_size=128)


def images(n: int, channels: int = 1, size: int = 28, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OODLIB_CACHE", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (1, 25), (3, 32), (1, 8)])
def test_shapes_and_range(channels, size):
    torch.manual_seed(0)
    model = ConvAutoEncoder(channels, size, latent_dim=8, width=4)
    x = images(3, channels, size)
    z = model.encode(x)
    x_hat = model.reconstruct(x)
    assert z.shape == (3, 8)
    assert x_hat.shape == x.shape
    assert bool(((x_hat > 0) & (x_hat < 1)).all())
    assert torch.allclose(model(x), x_hat)


def test_reconstruction_error_and_code_and_residual():
    torch.manual_seed(0)
    model = ConvAutoEncoder(1, 28, latent_dim=8, width=4)
    x = images(5)
    expected = (x - model.reconstruct(x)).flatten(1).norm(dim=1)
    assert torch.allclose(model.reconstruction_error(x), expected)
    f = model.code_and_residual(x, 2.0)
    assert f.shape == (5, 8 + 28 * 28)
    assert torch.allclose(f[:, :8], model.encode(x))
    assert torch.allclose(f[:, 8:].norm(dim=1), 2.0 * expected, rtol=1e-5)
    assert torch.count_nonzero(model.code_and_residual(x, 0.0)[:, 8:]) == 0


def test_detector_is_negated_error_registered_and_differentiable():
    torch.manual_seed(0)
    model = ConvAutoEncoder(1, 28, latent_dim=8, width=4).eval()
    assert DETECTORS["reconstruction"] is ReconstructionError
    detector = make_detector("reconstruction", model)
    x = images(4).requires_grad_(True)
    score = detector.score(x)
    assert torch.allclose(score, -model.reconstruction_error(x))
    score.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    batched = detector.score_batched(x.detach(), batch_size=3)
    assert torch.allclose(batched, score.detach(), atol=1e-6)


def test_spec_validation():
    with pytest.raises(ValueError):
        AutoEncoderSpec(dataset="nope").validate()
    with pytest.raises(ValueError):
        AutoEncoderSpec(latent_dim=0).validate()
    with pytest.raises(ValueError):
        AutoEncoderSpec(lr=0.0).validate()


def test_cache_key_depends_on_spec():
    a = autoencoder_cache_key(AutoEncoderSpec(**TINY))
    assert a == autoencoder_cache_key(AutoEncoderSpec(**TINY))
    assert a != autoencoder_cache_key(AutoEncoderSpec(**{**TINY, "seed": 1}))
    assert a != autoencoder_cache_key(AutoEncoderSpec(**{**TINY, "latent_dim": 5}))


def test_store_trains_once_and_reloads(cache):
    spec = AutoEncoderSpec(**TINY)
    first = get_autoencoder(spec, device="cpu")
    info = autoencoder_info(spec)
    assert info is not None and info["image_size"] == 8 and info["test_mse"] > 0
    files = sorted(p.name for p in (cache / "autoencoders").glob("*.pt"))
    assert len(files) == 1
    second = get_autoencoder(spec, device="cpu")
    for (k, v), (_, w) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(v, w), k
    assert not second.training


def test_store_is_deterministic(cache, tmp_path_factory, monkeypatch):
    spec = AutoEncoderSpec(**TINY)
    a = get_autoencoder(spec, device="cpu")
    monkeypatch.setenv("OODLIB_CACHE", str(tmp_path_factory.mktemp("other")))
    b = get_autoencoder(spec, device="cpu")
    for v, w in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(v, w)


def test_store_rebuilds_corrupt_checkpoint(cache):
    spec = AutoEncoderSpec(**TINY)
    good = get_autoencoder(spec, device="cpu")
    weights = next((cache / "autoencoders").glob("*.pt"))
    weights.write_bytes(weights.read_bytes()[:100])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rebuilt = get_autoencoder(spec, device="cpu")
    assert any("checksum" in str(w.message) for w in caught)
    for v, w in zip(good.state_dict().values(), rebuilt.state_dict().values()):
        assert torch.equal(v, w)
    meta = json.loads(next((cache / "autoencoders").glob("*.json")).read_text())
    assert meta["key"] == autoencoder_cache_key(spec)


def test_untrained_matches_dataset_geometry():
    model = AutoEncoderSpec(**TINY).untrained()
    assert (model.in_channels, model.image_size, model.latent_dim) == (1, 8, 4)


def test_nearest_image_distance():
    reference = torch.zeros(3, 1, 2, 2)
    reference[1] += 1.0
    reference[2] += 3.0
    x = torch.full((2, 1, 2, 2), 0.9)
    d = nearest_image_distance(x, reference)
    assert d.dtype == torch.float64
    assert torch.allclose(d, torch.full((2,), 0.2, dtype=torch.float64))
    assert torch.allclose(nearest_image_distance(reference, reference, exclude_self=True),
                          torch.tensor([2.0, 2.0, 4.0], dtype=torch.float64))


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_attack_autoencoder(weight):
    torch.manual_seed(0)
    model = ConvAutoEncoder(1, 8, latent_dim=4, width=4).eval()
    x_in, x_start = images(3, size=8, seed=1), images(3, size=8, seed=2)
    run = attack_autoencoder(model, x_in, x_start, eps=1.0, steps=20, residual_weight=weight, seed=0)
    assert run.x.shape == x_in.shape and run.residual_weight == weight
    assert bool((run.distance_to_start <= 1.0 + 1e-4).all())
    assert torch.allclose(run.reconstruction_error, model.reconstruction_error(run.x).detach(), atol=1e-5)
    with torch.no_grad():
        expected = (run.x - model.reconstruct(x_in)).flatten(1).norm(dim=1)
    assert torch.allclose(run.distance_to_reconstruction_in, expected, atol=1e-5)
    assert run.code_mape.shape == (3,)
    detector = ReconstructionError(model)
    s_in, s_out = detector.score_batched(x_in), detector.score_batched(run.x)
    summary = attack_summary(run, s_in, s_out, x_in)
    assert set(summary) == {"median_code_mape", "auroc", "fpr95", "mean_reconstruction_error",
                            "mean_distance_to_reconstruction_in", "median_nearest_id_distance"}
    assert summary["auroc"] == metrics.auroc(s_in, s_out)
    assert summary["fpr95"] == metrics.fpr_at_95_tpr(s_in, s_out, "A")
    assert summary["median_code_mape"] == float(run.code_mape.median())


def test_adaptive_attack_lowers_reconstruction_error():
    torch.manual_seed(0)
    model = ConvAutoEncoder(1, 8, latent_dim=4, width=4).eval()
    x_in, x_start = images(4, size=8, seed=1), images(4, size=8, seed=2)
    plain = attack_autoencoder(model, x_in, x_start, eps=2.0, steps=60, seed=0)
    adaptive = attack_autoencoder(model, x_in, x_start, eps=2.0, steps=60, residual_weight=3.0, seed=0)
    assert adaptive.reconstruction_error.mean() < plain.reconstruction_error.mean()


def test_attack_rejects_negative_weight():
    model = ConvAutoEncoder(1, 8, latent_dim=4, width=4)
    with pytest.raises(ValueError):
        attack_autoencoder(model, images(1, size=8), images(1, size=8), eps=1.0, steps=1, residual_weight=-1.0)


def test_module_exports():
    assert set(ae_mod.__all__) <= set(dir(ae_mod))
