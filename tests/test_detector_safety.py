"""Numerical safety of every registered detector (issue 7): the in-score and its input gradient are finite on
in-distribution, out-of-distribution, attacked and extreme (all-black, all-white, noise) images.

Every name in ``DETECTORS`` must have a builder here, so a newly registered detector cannot skip the check.
Models are tiny and untrained-but-fitted (8×8 grey images) — the check is about the arithmetic, not accuracy.
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch

import oodlib.defenses  # noqa: F401  (registers the robust detectors: ATOM, BAL)
from oodlib.attack import ood_attack
from oodlib.autoencoder import ConvAutoEncoder
from oodlib.detectors import DETECTORS, Detector, make_detector
from oodlib.detectors.ensemble import DeepEnsemble
from oodlib.flows import Glow
from oodlib.models import SmallCNN

SIZE, CLASSES = 8, 3


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _in_distribution(n: int, seed: int) -> torch.Tensor:
    """Smooth blobs: a bright disc of random centre on a dark background (the 'training distribution')."""
    g = _generator(seed)
    centre = torch.rand(n, 2, 1, 1, generator=g) * (SIZE - 3) + 1.5
    rows, cols = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    dist2 = (rows - centre[:, 0]) ** 2 + (cols - centre[:, 1]) ** 2
    return (torch.exp(-dist2 / 4) * 0.9 + 0.05 * torch.rand(n, SIZE, SIZE, generator=g)).unsqueeze(1).clamp(0, 1)


def _stripes(n: int) -> torch.Tensor:
    """An out-of-distribution pattern: vertical stripes."""
    return (torch.arange(SIZE) % 2).float().expand(n, 1, SIZE, SIZE).clone()


def _cnn(seed: int = 0, num_classes: int = CLASSES, norm: str = "batch") -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN(in_channels=1, image_size=SIZE, num_classes=num_classes, width=4, latent_dim=8, norm=norm).eval()


def _flow() -> Glow:
    torch.manual_seed(0)
    return Glow(1, SIZE, levels=2, depth=2, hidden=8).initialise(_in_distribution(32, 5), _generator(1)).eval()


def _autoencoder() -> ConvAutoEncoder:
    torch.manual_seed(0)
    return ConvAutoEncoder(1, SIZE, latent_dim=4, width=4).eval()


X_FIT = _in_distribution(48, 1)
Y_FIT = torch.arange(48) % CLASSES

BUILDERS: dict[str, Callable[[], Detector]] = {
    "msp": lambda: make_detector("msp", _cnn()),
    "odin": lambda: make_detector("odin", _cnn()),
    "energy": lambda: make_detector("energy", _cnn()),
    "mahalanobis": lambda: make_detector("mahalanobis", _cnn(), magnitude=0.01).fit(X_FIT, Y_FIT),
    "gram": lambda: make_detector("gram", _cnn(), powers=5).fit(X_FIT),
    "outlier_exposure": lambda: make_detector("outlier_exposure", _cnn()),
    "deep_ensemble": lambda: DeepEnsemble([_cnn(0), _cnn(1)]),
    "confidence_calibrated": lambda: make_detector("confidence_calibrated", _cnn(norm="none")),
    "jem_logpx": lambda: make_detector("jem_logpx", _cnn()),
    "jem_maxprob": lambda: make_detector("jem_maxprob", _cnn()),
    "jem_gradnorm": lambda: make_detector("jem_gradnorm", _cnn()),
    "ccu": lambda: make_detector("ccu", _cnn(), n_components=2, em_iterations=5, sv_floor=100.0).fit(
        X_FIT, x_out=torch.rand(48, 1, SIZE, SIZE, generator=_generator(2))),
    "glow_nll": lambda: make_detector("glow_nll", _flow()),
    "input_complexity": lambda: make_detector("input_complexity", _flow()),
    "reconstruction": lambda: make_detector("reconstruction", _autoencoder()),
    "atom": lambda: make_detector("atom", _cnn(num_classes=CLASSES + 1)),
    "bal": lambda: make_detector("bal", _cnn(), epochs=1, batch_size=16, hidden=8, noise_dim=4).fit(X_FIT, Y_FIT),
}


def _attacked(detector: Detector) -> torch.Tensor:
    """Stripes attacked towards the in-distribution scores (Algorithm 1 with the score as f)."""
    return ood_attack(detector, _in_distribution(4, 7), _stripes(4), eps=2.0, steps=5, routine="authors").x


INPUTS: dict[str, Callable[[Detector], torch.Tensor]] = {
    "in_distribution": lambda d: _in_distribution(4, 3),
    "out_of_distribution": lambda d: _stripes(4),
    "attacked": _attacked,
    "black": lambda d: torch.zeros(4, 1, SIZE, SIZE),
    "white": lambda d: torch.ones(4, 1, SIZE, SIZE),
    "noise": lambda d: torch.rand(4, 1, SIZE, SIZE, generator=_generator(9)),
}

_built: dict[str, Detector] = {}


def _detector(name: str) -> Detector:
    if name not in _built:
        _built[name] = BUILDERS[name]()
    return _built[name]


def test_every_registered_detector_has_a_builder():
    assert set(DETECTORS) == set(BUILDERS), "add a builder for each new detector to this module"


@pytest.mark.parametrize("kind", list(INPUTS))
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_score_and_input_gradient_are_finite(name, kind):
    detector = _detector(name)
    x = INPUTS[kind](detector).clone().requires_grad_(True)
    score = detector.score(x)
    (grad,) = torch.autograd.grad(score.sum(), x)
    assert score.shape == (4,)
    assert torch.isfinite(score).all(), f"{name} on {kind}: scores {score.tolist()}"
    assert torch.isfinite(grad).all(), f"{name} on {kind}: {int((~torch.isfinite(grad)).sum())} non-finite gradients"
    assert torch.isfinite(detector.score_batched(x.detach(), batch_size=3)).all()


@pytest.mark.parametrize("kind", ["in_distribution", "black", "noise"])
def test_gram_direct_root_scores_are_finite_where_its_gradient_is_not(kind):
    """The reference's direct root (kept by name for Appendix H.2): finite scores, non-finite input gradients
    wherever a Gram row sum is zero — the failure the registered default (the log form) avoids."""
    direct = _detector("gram").with_options(root="direct")
    x = INPUTS[kind](direct).clone().requires_grad_(True)
    score = direct.score(x)
    (grad,) = torch.autograd.grad(score.sum(), x)
    assert torch.isfinite(score).all()
    assert torch.allclose(score, _detector("gram").score(x), rtol=1e-6)
    if kind == "in_distribution":
        assert not torch.isfinite(grad).all()
