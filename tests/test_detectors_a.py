"""ODIN (Appendix C), Energy, Mahalanobis (Appendix D) and Gram (Appendix H): score shapes, finite scores and
input gradients, the known special cases, and the numerical fixes of Appendix H.2."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from oodlib.attack import ood_attack
from oodlib.detectors import DETECTORS, make_detector
from oodlib.detectors.energy import Energy
from oodlib.detectors.gram import (Gram, deviation, first_nonfinite_power, gram_row, gram_rows,
                                   nonfinite_gradient_fraction, nonfinite_gradients_by_power, signed_root)
from oodlib.detectors.mahalanobis import Mahalanobis, half_squared_distances, tied_gaussian
from oodlib.detectors.odin import ODIN
from oodlib.models import SmallCNN

SIZE, CLASSES = 12, 3


def _images(n, seed, fill=None):
    if fill is not None:
        return torch.full((n, 1, SIZE, SIZE), float(fill))
    return torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return SmallCNN(in_channels=1, image_size=SIZE, num_classes=CLASSES, width=4, latent_dim=8).eval()


@pytest.fixture(scope="module")
def train_set():
    x = _images(60, 10)
    y = torch.arange(60) % CLASSES
    return x, y


@pytest.fixture(scope="module")
def mahalanobis(cnn, train_set):
    return Mahalanobis(cnn, magnitude=0.01).fit(*train_set)


@pytest.fixture(scope="module")
def gram(cnn, train_set):
    return Gram(cnn, powers=5, root="log").fit(train_set[0])


INPUTS = {"random": lambda: _images(5, 1), "noise": lambda: _images(5, 2), "black": lambda: _images(3, 0, 0.0),
          "white": lambda: _images(3, 0, 1.0)}


def _score_and_gradient(detector, x):
    leaf = x.clone().requires_grad_(True)
    score = detector.score(leaf)
    (grad,) = torch.autograd.grad(score.sum(), leaf)
    return score, grad


def test_registered_names():
    for name in ("odin", "energy", "mahalanobis", "gram"):
        assert name in DETECTORS


@pytest.mark.parametrize("which", sorted(INPUTS))
@pytest.mark.parametrize("name", ["odin", "energy", "mahalanobis", "gram"])
def test_score_shape_finite_and_differentiable(name, which, cnn, mahalanobis, gram):
    detector = {"odin": ODIN(cnn, temperature=1000.0, magnitude=0.002), "energy": Energy(cnn),
                "mahalanobis": mahalanobis, "gram": gram}[name]
    x = INPUTS[which]()
    score, grad = _score_and_gradient(detector, x)
    assert score.shape == (len(x),)
    assert torch.isfinite(score).all()
    assert torch.isfinite(grad).all()
    batched = detector.score_batched(x, batch_size=len(x)).to(score.dtype)
    assert torch.allclose(batched, score.detach(), rtol=1e-5, atol=1e-6), (batched - score).abs().max()


# ------------------------------------------------------------------------------------------------------ ODIN


def test_odin_t1_pm0_is_msp(cnn):
    x = _images(6, 3)
    assert torch.allclose(ODIN(cnn, temperature=1.0, magnitude=0.0).score(x), make_detector("msp", cnn).score(x))


def test_odin_preprocessing_raises_the_confidence(cnn):
    x = _images(8, 4)
    plain = ODIN(cnn, temperature=1000.0, magnitude=0.0).score(x)
    processed = ODIN(cnn, temperature=1000.0, magnitude=0.004).score(x)
    assert (processed >= plain - 1e-7).all() and (processed > plain).any()


def test_odin_step_is_the_sign_of_the_cross_entropy_gradient(cnn):
    detector = ODIN(cnn, temperature=10.0, magnitude=0.003)
    x = _images(4, 5)
    leaf = x.clone().requires_grad_(True)
    logits = cnn(leaf) / 10.0
    F.cross_entropy(logits, logits.argmax(1), reduction="sum").backward()
    assert torch.equal(detector.preprocess(x), x - 0.003 * leaf.grad.sign())


def test_odin_attack_gradient_equals_second_order_graph(cnn):
    """The detached sign step gives the same input gradient as differentiating through the preprocessing's own
    gradient with create_graph=True (the sign has zero derivative almost everywhere)."""
    detector = ODIN(cnn, temperature=100.0, magnitude=0.002)
    x = _images(4, 6)
    weights = torch.randn(4, CLASSES, generator=torch.Generator().manual_seed(0))

    leaf = x.clone().requires_grad_(True)
    (ours,) = torch.autograd.grad((detector.logits(leaf) * weights).sum(), leaf)

    leaf2 = x.clone().requires_grad_(True)
    logits = cnn(leaf2) / 100.0
    loss = F.cross_entropy(logits, logits.argmax(1), reduction="sum")
    (inner,) = torch.autograd.grad(loss, leaf2, create_graph=True)
    x_tilde = leaf2 - 0.002 * torch.sign(inner)
    (full,) = torch.autograd.grad((cnn(x_tilde) * weights).sum(), leaf2)
    assert torch.allclose(ours, full, atol=1e-6)


def test_odin_target_drives_the_attack(cnn):
    detector = ODIN(cnn, temperature=1000.0, magnitude=0.002)
    x_in, x_ood = _images(4, 7), _images(4, 8)
    result = ood_attack(detector, x_in, x_ood, target="logits", eps=3.0, steps=20, routine="authors")
    assert torch.isfinite(result.loss).all()
    assert result.loss_history[-1].mean() < result.loss_history[0].mean()


def test_odin_rejects_bad_settings(cnn):
    with pytest.raises(ValueError):
        ODIN(cnn, temperature=0.0)
    with pytest.raises(ValueError):
        ODIN(cnn, magnitude=-0.1)


# ---------------------------------------------------------------------------------------------------- Energy


def test_energy_is_temperature_scaled_logsumexp(cnn):
    x = _images(5, 9)
    logits = cnn(x)
    assert torch.allclose(Energy(cnn).score(x), torch.logsumexp(logits, 1))
    assert torch.allclose(Energy(cnn, temperature=2.0).score(x), 2.0 * torch.logsumexp(logits / 2.0, 1))


# ----------------------------------------------------------------------------------------------- Mahalanobis


def test_tied_gaussian_means_and_covariance():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(200, 3, generator=g, dtype=torch.float64)
    y = torch.arange(200) % 2
    means, precision = tied_gaussian(h, y, 2, ridge=0.0)
    assert torch.allclose(means[1], h[y == 1].mean(0))
    centred = h - means[y]
    assert torch.allclose(torch.linalg.inv(precision), centred.T @ centred / 200)


def test_mahalanobis_identity_covariance_is_half_squared_euclidean(cnn, train_set):
    detector = Mahalanobis(cnn, magnitude=0.0, layers=[2]).fit(*train_set)
    detector.precision_0 = torch.eye(detector.precision_0.shape[0], dtype=torch.float64)
    x = _images(5, 11)
    h = detector.pooled_features(x)[0].double()
    expected = -0.5 * torch.cdist(h, detector.means_0).pow(2).amin(dim=1)
    assert torch.allclose(detector.score(x), expected, atol=1e-8)
    assert torch.allclose(half_squared_distances(h, detector.means_0, detector.precision_0),
                          0.5 * torch.cdist(h, detector.means_0).pow(2), atol=1e-8)


def test_mahalanobis_features_and_layers(cnn, mahalanobis):
    x = _images(4, 12)
    widths = [m.shape[1] for m in cnn.feature_maps(x)]
    assert mahalanobis.features(x).shape == (4, sum(widths))
    assert mahalanobis.layer_scores(x).shape == (4, len(widths))
    assert torch.allclose(mahalanobis.score(x), mahalanobis.layer_scores(x).mean(1))


def test_mahalanobis_preprocessing_raises_the_score(mahalanobis):
    x = _images(6, 13)
    plain = mahalanobis.with_magnitude(0.0).layer_scores(x)
    processed = mahalanobis.layer_scores(x)
    assert (processed > plain).float().mean() > 0.5
    assert mahalanobis.with_magnitude(0.0).magnitude == 0.0 and mahalanobis.magnitude == 0.01


def test_mahalanobis_needs_fit_and_every_class(cnn, train_set):
    with pytest.raises(RuntimeError):
        Mahalanobis(cnn).score(_images(2, 0))
    x, y = train_set
    with pytest.raises(ValueError):
        Mahalanobis(cnn).fit(x, torch.zeros_like(y))


# ------------------------------------------------------------------------------------------------------ Gram


def test_gram_rows_match_the_explicit_gram_matrix():
    f = torch.rand(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    rows = gram_rows(f, 3, "direct", torch.float64)
    for p in (1, 2, 3):
        fp = f.flatten(2) ** p
        explicit = (fp @ fp.transpose(1, 2)).sum(dim=2) ** (1 / p)
        assert torch.allclose(rows[:, p - 1], explicit)
        assert torch.allclose(gram_row(f, p, "log", torch.float64), explicit)
    assert gram_rows(torch.rand(2, 5), 2, "direct", torch.float64).shape == (2, 2, 5)


def test_signed_root_keeps_the_sign():
    b = torch.tensor([-8.0, 0.0, 27.0], dtype=torch.float64)
    assert torch.allclose(signed_root(b, 3, "direct"), torch.tensor([-2.0, 0.0, 3.0], dtype=torch.float64))


def test_deviation_is_zero_inside_and_relative_outside():
    low, high = torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0])
    assert deviation(torch.tensor([1.5, 3.0]), low, high) == 0
    assert torch.isclose(deviation(torch.tensor([0.5, 6.0]), low, high), torch.tensor(0.5 / 1.0 + 2.0 / 4.0),
                         rtol=1e-5)


def test_gram_training_sample_has_zero_deviation(cnn, train_set):
    x = train_set[0]
    detector = Gram(cnn, powers=4).fit(x[:40], x_holdout=x[40:])
    assert torch.equal(detector.power_deviations(x[:40]), torch.zeros(40, detector.n_layers, 4, dtype=torch.float64))
    assert (detector.score(x[:40]) == 0).all()
    assert (detector.score(_images(4, 99, 1.0)) < 0).all()


def test_gram_holdout_normalises_each_layer(gram, train_set):
    held = gram.holdout_mean
    assert held.shape == (gram.n_layers, 5) and (held >= 0).all()
    x = _images(4, 14)
    manual = gram.power_deviations(x).sum(2) / held.sum(1).clamp_min(1e-12)
    assert torch.allclose(gram.layer_deviations(x), manual)
    assert torch.allclose(gram.score(x), -manual.sum(1))


def test_gram_with_options_shares_statistics(gram):
    x = _images(4, 15)
    direct = gram.with_options(root="direct")
    assert direct.root == "direct" and gram.root == "log"
    assert torch.allclose(direct.score(x), gram.score(x), rtol=1e-6, atol=1e-9)
    assert gram.with_options(powers=2).power_deviations(x).shape[2] == 2
    with pytest.raises(ValueError):
        gram.with_options(powers=6)


def test_gram_divide_by_confidence(cnn, train_set):
    base = Gram(cnn, powers=2).fit(train_set[0])
    weighted = Gram(cnn, powers=2, divide_by_confidence=True).fit(train_set[0])
    x = _images(4, 16, 1.0)
    confidence = torch.softmax(cnn(x), 1).amax(1).double()
    assert torch.allclose(weighted.score(x), base.score(x) / confidence)


def test_direct_root_breaks_on_dead_channels_and_log_root_does_not():
    """Appendix H.2: the root's derivative is infinite at B = 0 (a channel that is zero everywhere), which gives
    NaN gradients for p ≥ 2; the log form exp(log(B + 1e-40)/p) stays finite."""
    f = torch.rand(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    f[:, 1] = 0
    for root, finite in (("direct", False), ("log", True)):
        leaf = f.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(gram_row(leaf, 3, root, torch.float64).sum(), leaf)
        assert bool(torch.isfinite(grad).all()) is finite
    leaf = f.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(gram_row(leaf, 1, "direct", torch.float64).sum(), leaf)
    assert torch.isfinite(grad).all()


class _DeadChannel(nn.Module):
    """A stand-in classifier whose only feature map has one channel that is zero everywhere."""

    def feature_maps(self, x):
        return [torch.cat([x, torch.zeros_like(x)], dim=1)]


def test_gradient_probes():
    model, x = _DeadChannel(), _images(3, 17)
    fractions = nonfinite_gradients_by_power(model, x, 4, root="direct")
    assert fractions.tolist() == [0.0, 1.0, 1.0, 1.0]
    assert first_nonfinite_power(model, x, 4, root="direct") == 2
    assert first_nonfinite_power(model, x, 4, root="log", dtype=torch.float64) is None
    assert nonfinite_gradient_fraction(lambda v: v.flatten(1).sqrt().sum(1), torch.zeros(2, 1, 2, 2)) == 1.0


def test_gram_attack_through_the_log_root(gram):
    x_in, x_ood = _images(3, 18), _images(3, 19, 1.0)
    result = ood_attack(gram, x_in, x_ood, target="score", eps=3.0, steps=10, routine="authors")
    assert torch.isfinite(result.loss).all()


@pytest.mark.parametrize("name", ["odin", "energy", "mahalanobis", "gram"])
def test_detectors_keep_the_classifier_in_eval_mode(name, cnn, mahalanobis, gram):
    """Scoring, fitting and attacking through a detector's score leave the wrapped classifier in eval mode, so its
    batch norm keeps using the running statistics."""
    detector = {"odin": ODIN(cnn, temperature=10.0, magnitude=0.002), "energy": Energy(cnn),
                "mahalanobis": mahalanobis, "gram": gram}[name]
    x = _images(3, 20)
    detector.score_batched(x)
    ood_attack(detector, x, _images(3, 21), target="score", eps=1.0, steps=2, routine="authors")
    assert not cnn.training and not detector.training
