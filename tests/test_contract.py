"""The contract every registered detector and every attack keeps (in the spirit of scikit-learn's
``parametrize_with_checks``): one check per property, parametrised over ``oodlib.detectors.DETECTORS`` (after
importing ``oodlib.defenses``) and ``oodlib.attack.ATTACKS``.

- ``fit`` returns the detector itself; before ``fit`` a detector either scores or raises ``RuntimeError`` (one
  error type);
- batch invariance: ``score`` and ``score_batched`` at batch sizes 1 and N agree;
- sign convention: in-scores of in-distribution images above those of out-of-distribution images on a toy set
  that a correctly oriented detector separates;
- dtype policy: ``score_batched`` returns float32 on the CPU, shape (N,);
- every named attack target is differentiable in the input (a finite, non-zero input gradient);
- fitting, scoring and every attack leave the wrapped model's modes and ``requires_grad`` flags as they were.

The toy data and models are the session fixtures of ``conftest.py``; a new detector or attack fails
:func:`test_every_registered_detector_has_a_builder` / :func:`test_every_attack_has_a_call` until it is added here.
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import Tensor, nn

import oodlib.defenses  # noqa: F401  (registers ATOM and BAL)
from oodlib import metrics
from oodlib.attack import ATTACKS, aloe_threat, aoe_threat, atom_threat, fgsm, ood_attack, pgd_linf
from oodlib.detectors import DETECTORS, ClassifierDetector, Detector, make_detector
from oodlib.detectors.ensemble import DeepEnsemble

Toys = dict[str, object]

# name → (build an unfitted detector from the toys, fit it on the toy training data)
BUILDERS: dict[str, Callable[[Toys], Detector]] = {
    "msp": lambda t: make_detector("msp", t["cnn"]()),
    "odin": lambda t: make_detector("odin", t["cnn"](), temperature=10.0, magnitude=0.002),
    "energy": lambda t: make_detector("energy", t["cnn"]()),
    "mahalanobis": lambda t: make_detector("mahalanobis", t["cnn"](), magnitude=0.002),
    "gram": lambda t: make_detector("gram", t["cnn"](), powers=3),
    "outlier_exposure": lambda t: make_detector("outlier_exposure", t["cnn"]()),
    "deep_ensemble": lambda t: DeepEnsemble([t["cnn"](), t["cnn"]()]),
    "confidence_calibrated": lambda t: make_detector("confidence_calibrated", t["cnn"]()),
    "jem_logpx": lambda t: make_detector("jem_logpx", t["cnn"]()),
    "jem_maxprob": lambda t: make_detector("jem_maxprob", t["cnn"]()),
    "jem_gradnorm": lambda t: make_detector("jem_gradnorm", t["cnn"]()),
    "ccu": lambda t: make_detector("ccu", t["cnn"](), n_components=3, em_iterations=5, sv_floor=100.0,
                                   n_outliers=48),
    "glow_nll": lambda t: make_detector("glow_nll", t["flow"]),
    "input_complexity": lambda t: make_detector("input_complexity", t["flow"]),
    "reconstruction": lambda t: make_detector("reconstruction", t["autoencoder"]),
    "atom": lambda t: make_detector("atom", t["cnn"]()),
    "bal": lambda t: make_detector("bal", t["cnn"](), epochs=2, batch_size=32, hidden=16, noise_dim=4),
}

# name → a small run of the attack on a detector (its score, or its classifier for AOE), ID and OOD images
ATTACK_CALLS: dict[str, Callable[[Detector, Tensor, Tensor], Tensor]] = {
    "ood_attack": lambda d, x_in, x_ood: ood_attack(d, x_in, x_ood, target="score", eps=1.0, steps=2).x,
    "pgd_linf": lambda d, x_in, x_ood: pgd_linf(d, x_ood, eps=0.03, steps=2, step_size=0.01).x,
    "fgsm": lambda d, x_in, x_ood: fgsm(d, x_ood, eps=0.03),
    "atom_threat": lambda d, x_in, x_ood: atom_threat(d, x_ood, steps=2).x,
    "aloe_threat": lambda d, x_in, x_ood: aloe_threat(d, x_in, x_ood, steps=2)[1].x,
    "aoe_threat": lambda d, x_in, x_ood: aoe_threat(d.model, x_ood, eps=0.03),
}
CLASSIFIER_ONLY = {"aoe_threat"}  # attacks a classifier's energy: only for detectors on a classifier
SIGN_BY_DEFINITION = {
    # −‖∂ log p(x)/∂x‖₂ ranks ID above OOD only for a classifier trained as an energy model (JEM), which the toy
    # classifier is not; its sign is checked against the formula instead.
    "jem_gradnorm": lambda d, x: -torch.autograd.grad(d.model(x).logsumexp(1).sum(), x)[0].flatten(1).norm(dim=1),
}

N = 6  # images per check


@pytest.fixture(scope="module")
def toys(toy_data, toy_classifier_factory, toy_flow, toy_autoencoder) -> Toys:
    cache: dict[tuple[int, int], nn.Module] = {}

    def cnn(num_classes: int = 3, seed: int = 0) -> nn.Module:
        if (num_classes, seed) not in cache:
            cache[(num_classes, seed)] = toy_classifier_factory(num_classes, seed)
        return cache[(num_classes, seed)]

    return {**toy_data, "cnn": cnn, "flow": toy_flow, "autoencoder": toy_autoencoder}


def _fit(detector: Detector, toys: Toys) -> Detector:
    return detector.fit(toys["x_train"], toys["y_train"])


_fitted: dict[str, Detector] = {}


@pytest.fixture
def fitted(toys) -> Callable[[str], Detector]:
    def get(name: str) -> Detector:
        if name not in _fitted:
            _fitted[name] = _fit(BUILDERS[name](toys), toys)
        return _fitted[name]

    return get


def _state(module: nn.Module) -> tuple[list[bool], list[bool]]:
    return [m.training for m in module.modules()], [p.requires_grad for p in module.parameters()]


def test_every_registered_detector_has_a_builder():
    assert set(DETECTORS) == set(BUILDERS), "add a builder for each registered detector to this module"


def test_every_attack_has_a_call():
    assert set(ATTACKS) == set(ATTACK_CALLS), "add a call for each registered attack to this module"


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_fit_returns_self_and_keeps_the_models_state(name, toys):
    detector = BUILDERS[name](toys)
    before = _state(detector.model)
    assert _fit(detector, toys) is detector
    assert _state(detector.model) == before


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_before_fit_a_detector_scores_or_raises_runtime_error(name, toys):
    detector = BUILDERS[name](toys)
    try:
        scores = detector.score_batched(toys["x_id"][:2])
    except RuntimeError as error:
        assert "fit" in str(error)
    else:
        assert scores.shape == (2,)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_score_batched_is_float32_on_the_cpu_and_batch_invariant(name, fitted, toys):
    detector = fitted(name)
    x = toys["x_id"][:N]
    whole, single = detector.score_batched(x, batch_size=N), detector.score_batched(x, batch_size=1)
    assert whole.dtype == single.dtype == torch.float32 and whole.device.type == "cpu" and whole.shape == (N,)
    assert torch.allclose(whole, single, rtol=1e-4, atol=1e-5), f"{name}: {whole.tolist()} vs {single.tolist()}"
    with torch.no_grad():
        direct = detector.eval().score(x).float()
    assert torch.allclose(whole, direct, rtol=1e-4, atol=1e-5)
    assert detector.ood_score_batched(x).dtype == torch.float32


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_in_distribution_scores_above_out_of_distribution(name, fitted, toys):
    detector = fitted(name)
    if name in SIGN_BY_DEFINITION:
        x = toys["x_ood"].clone().requires_grad_(True)
        assert torch.allclose(detector.score(x), SIGN_BY_DEFINITION[name](detector, x), rtol=1e-5, atol=1e-6)
        return
    score_in, score_out = detector.score_batched(toys["x_id"]), detector.score_batched(toys["x_ood"])
    assert metrics.auroc(score_in, score_out) > 0.9, f"{name}: ID {score_in.tolist()}, OOD {score_out.tolist()}"
    assert torch.allclose(detector.ood_score_batched(toys["x_ood"]), -score_out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_named_target_is_differentiable_in_the_input(name, fitted, toys):
    detector = fitted(name)
    assert "score" in detector.targets
    for target in detector.targets:  # two ID images and one OOD image (CCU's score is flat far from the data)
        x = torch.cat([toys["x_id"][:2], toys["x_ood"][:1]]).requires_grad_(True)
        out = detector.target(target)(x)
        assert out.shape[0] == 3 and out.dim() in (1, 2), f"{name}.{target}: shape {tuple(out.shape)}"
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, f"{name}.{target}: no usable gradient"


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_an_unknown_target_name_is_refused(name, fitted):
    with pytest.raises(ValueError, match="no attack target"):
        fitted(name).target("no_such_target")


@pytest.mark.parametrize("attack", sorted(ATTACK_CALLS))
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_attacks_keep_modes_and_flags_and_return_images(name, attack, fitted, toys):
    detector = fitted(name)
    if attack in CLASSIFIER_ONLY and not isinstance(detector, ClassifierDetector):
        pytest.skip(f"{attack} attacks a classifier's logits; {name} has none")
    x_in, x_ood = toys["x_id"][:3], toys["x_ood"][:3]
    before, detector_mode = _state(detector.model), detector.training
    detector.score(x_in)
    x = ATTACK_CALLS[attack](detector, x_in, x_ood)
    assert _state(detector.model) == before and detector.training == detector_mode
    assert x.shape == x_ood.shape and torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
