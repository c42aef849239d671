"""JEM (Appendix J) and Certified Certain Uncertainty (Section 4): scores, gradients, SGLD, the recipe, the
mixtures and the CCU combination rule."""

import math

import pytest
import torch
import torch.nn.functional as F

from oodlib.attack import ood_attack
from oodlib.data import ImageSet
from oodlib.detectors import make_detector
from oodlib.detectors.ccu import (CCU, PCAMetric, SphericalGMM, fit_spherical_gmm, ink_outside_support,
                                  nearest_neighbour_distance)
from oodlib.detectors.jem import JEMGradNorm, JEMLogPx, JEMMaxProb
from oodlib.losses import jem_loss, log_px
from oodlib.recipes.jem import train_jem
from oodlib.samplers import ReplayBuffer, sample_images, sgld
from oodlib.models import MLP, SmallCNN
from oodlib.store import ModelSpec
from oodlib.training import RECIPES

SIZE = 12


def _images(n, seed, fill=None):
    if fill is not None:
        return torch.full((n, 1, SIZE, SIZE), float(fill))
    return torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return SmallCNN(in_channels=1, image_size=SIZE, num_classes=4, width=4, latent_dim=8, norm="none").eval()


@pytest.fixture(scope="module")
def blobs():
    """Two well-separated clusters of 12×12 images: dark (class 0) and bright (class 1) in the upper half."""
    gen = torch.Generator().manual_seed(1)
    base = torch.zeros(2, 1, SIZE, SIZE)
    base[1, :, : SIZE // 2] = 0.8
    y = torch.arange(2).repeat_interleave(60)
    x = (base[y] + 0.05 * torch.rand(120, 1, SIZE, SIZE, generator=gen)).clamp(0, 1)
    return x, y


INPUTS = {"noise": _images(5, 2), "black": _images(5, 0, fill=0.0), "white": _images(5, 0, fill=1.0)}


# --------------------------------------------------------------------------------------------------- JEM scores


@pytest.mark.parametrize("cls", [JEMLogPx, JEMMaxProb, JEMGradNorm])
@pytest.mark.parametrize("kind", list(INPUTS))
def test_jem_scores_and_their_input_gradients_are_finite(cnn, cls, kind):
    det = cls(cnn)
    x = INPUTS[kind].clone().requires_grad_(True)
    score = det.score(x)
    assert score.shape == (5,) and torch.isfinite(score).all()
    (grad,) = torch.autograd.grad(score.sum(), x)
    assert torch.isfinite(grad).all()


def test_jem_score_formulas(cnn):
    x = _images(6, 3)
    logits = cnn(x)
    assert torch.allclose(JEMLogPx(cnn).score(x), torch.logsumexp(logits, 1))
    assert torch.allclose(JEMMaxProb(cnn).score(x), logits.softmax(1).amax(1))
    x_leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.logsumexp(cnn(x_leaf), 1).sum(), x_leaf)
    assert torch.allclose(JEMGradNorm(cnn).score(x), -grad.flatten(1).norm(dim=1), atol=1e-6)


def test_gradient_norm_score_is_twice_differentiable_and_attackable():
    torch.manual_seed(0)
    mlp = MLP(in_channels=1, image_size=SIZE, num_classes=3, hidden=(16,)).eval()
    det = JEMGradNorm(mlp)
    x = _images(4, 4).requires_grad_(True)
    (grad,) = torch.autograd.grad(det.score(x).sum(), x)
    assert grad.abs().sum() > 0  # second derivatives of the softmax part survive the ReLUs
    res = ood_attack(det, _images(4, 5), _images(4, 6), target="score", eps=3.0, steps=30)
    assert res.loss.mean() < res.loss_history[0].mean()


def test_jem_score_batched_matches_score(cnn):
    det = JEMGradNorm(cnn)
    x = _images(7, 8)
    assert torch.allclose(det.score_batched(x, batch_size=3), det.score(x).detach(), atol=1e-6)


def test_jem_detectors_are_registered(cnn):
    for name in ("jem_logpx", "jem_maxprob", "jem_gradnorm"):
        assert make_detector(name, cnn).score(_images(2, 9)).shape == (2,)


# --------------------------------------------------------------------------------------------------- SGLD, recipe


def test_sgld_without_noise_ascends_log_px(cnn):
    x0 = _images(8, 10)
    x1 = sgld(cnn, x0, steps=5, step_size=0.01, noise=0.0, generator=torch.Generator().manual_seed(0))
    assert x1.min() >= 0 and x1.max() <= 1 and not x1.requires_grad
    assert log_px(cnn, x1).mean() > log_px(cnn, x0).mean()


def test_replay_buffer_reinitialises_and_stores():
    gen = torch.Generator().manual_seed(0)
    buffer = ReplayBuffer(10, (1, 4, 4), gen)
    buffer.images.fill_(2.0)  # outside [0, 1]: a fresh chain is recognisable
    x, idx = buffer.sample(200, reinit_freq=0.0)
    assert (x == 2.0).all() and idx.shape == (200,)
    x, _ = buffer.sample(200, reinit_freq=1.0)
    assert (x <= 1.0).all()
    buffer.store(torch.tensor([3]), torch.zeros(1, 1, 4, 4))
    assert (buffer.images[3] == 0).all()


def test_sample_images_is_seeded(cnn):
    a = sample_images(cnn, 3, steps=2, seed=5)
    b = sample_images(cnn, 3, steps=2, seed=5)
    assert a.shape == (3, 1, SIZE, SIZE) and torch.equal(a, b)


def test_jem_loss_terms(cnn):
    x, x_q, y = _images(4, 11), _images(4, 12), torch.tensor([0, 1, 2, 3])
    total, ce, generative = jem_loss(cnn, x, y, x_q)
    assert torch.allclose(ce, F.cross_entropy(cnn(x), y))
    expected = -torch.logsumexp(cnn(x), 1).mean() + torch.logsumexp(cnn(x_q), 1).mean()
    assert torch.allclose(generative, expected, atol=1e-6) and torch.allclose(total, ce + generative)


def test_jem_recipe_runs_one_epoch_and_is_deterministic(blobs):
    x, y = blobs
    train = ImageSet(x, y, ("dark", "bright"), "blobs")
    spec = ModelSpec.make("mlp", "mnist5k", recipe="jem", epochs=1, seed=0,
                          recipe_options={"sgld_steps": 2, "buffer_size": 16, "batch_size": 32, "warmup_iters": 1,
                                          "lr": 1e-3})
    assert RECIPES["jem"] is train_jem
    weights = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise reproducible on the CPU with one thread, as the runner executes chapters
    try:
        for _ in range(2):
            torch.manual_seed(0)
            model = MLP(in_channels=1, image_size=SIZE, num_classes=2, hidden=(16,))
            facts = train_jem(model, train, spec, torch.device("cpu"))
            weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    finally:
        torch.set_num_threads(threads)
    assert math.isfinite(facts["final_train_ce"]) and facts["jem_sgld_steps"] == 2
    assert torch.equal(weights[0], weights[1])


# --------------------------------------------------------------------------------------------------- CCU


def test_pca_metric_is_euclidean_for_isotropic_data():
    x = torch.randn(4000, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    metric = PCAMetric(x, sv_floor=1e6)
    a, b = x[:3], x[3:6]
    d_metric = (metric.transform(a) - metric.transform(b)).norm(dim=1)
    d_euclid = (a - b).flatten(1).double().norm(dim=1)
    scale = metric.scale.mean()  # isotropic data: one singular value, so d = ‖a − b‖ / √s
    assert torch.allclose(d_metric, d_euclid * scale, rtol=0.05)


def test_pca_metric_floors_zero_variance_directions():
    x = torch.rand(50, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    x[:, :, 0, 0] = 0.3  # a constant pixel, like an MNIST corner
    metric = PCAMetric(x, sv_floor=100.0)
    assert torch.isfinite(metric.scale).all()
    assert metric.scale.max() <= metric.scale.min() * math.sqrt(100.0) * (1 + 1e-9)


def test_gmm_log_prob_matches_a_direct_gaussian():
    means, log_var, log_weight = torch.zeros(1, 3), torch.tensor([math.log(2.0)]), torch.zeros(1)
    gmm = SphericalGMM(means, log_var, log_weight)
    u = torch.tensor([[1.0, 0.0, -1.0]], dtype=torch.float64)
    expected = torch.distributions.MultivariateNormal(torch.zeros(3, dtype=torch.float64),
                                                      2.0 * torch.eye(3, dtype=torch.float64)).log_prob(u)
    assert torch.allclose(gmm.log_prob(u), expected)


def test_em_recovers_two_separated_clusters():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 10.0]], dtype=torch.float64)
    u = torch.cat([centres[0] + 0.5 * torch.randn(300, 2, generator=gen, dtype=torch.float64),
                   centres[1] + 0.5 * torch.randn(100, 2, generator=gen, dtype=torch.float64)])
    gmm = fit_spherical_gmm(u, 2, iterations=50, seed=0)
    order = gmm.means[:, 0].argsort()
    assert torch.allclose(gmm.means[order], centres, atol=0.15)
    assert torch.allclose(gmm.log_weight.exp()[order], torch.tensor([0.75, 0.25], dtype=torch.float64), atol=0.02)
    assert torch.allclose(gmm.log_var.exp(), torch.full((2,), 0.25, dtype=torch.float64), rtol=0.2)


@pytest.fixture(scope="module")
def ccu(cnn, blobs):
    x, _ = blobs
    outliers = torch.rand(120, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    return CCU(cnn, n_components=2, sv_floor=100.0, em_iterations=20).fit(x, x_out=outliers)


def test_ccu_equals_the_classifier_in_distribution_and_uniform_far_away(ccu, cnn, blobs):
    x, _ = blobs
    assert torch.allclose(ccu.log_confidence(x[:5]), torch.log_softmax(cnn(x[:5]).double(), 1), atol=1e-4)
    far = _images(5, 13)
    assert torch.allclose(ccu.log_confidence(far), torch.full((5, 4), -math.log(4), dtype=torch.float64),
                          atol=1e-6)
    assert (ccu.score(x[:5]) > ccu.score(far)).all()


def test_ccu_rule_against_a_direct_computation(ccu, cnn):
    x = _images(3, 14) * 0.2
    log_in, log_out = ccu.log_densities(x)
    p_y = torch.softmax(cnn(x).double(), 1)
    lam, k = ccu.lam, p_y.shape[1]
    shift = torch.maximum(log_in, log_out)[:, None]  # rescale both densities to avoid underflow
    p_in, p_out = (log_in[:, None] - shift).exp(), (log_out[:, None] - shift).exp()
    direct = ((p_y * p_in + lam / k * p_out) / (p_in + lam * p_out)).log()
    assert torch.allclose(ccu.log_confidence(x), direct, atol=1e-8)


@pytest.mark.parametrize("kind", list(INPUTS))
def test_ccu_score_and_attack_targets_are_differentiable(ccu, kind):
    x = INPUTS[kind].clone().requires_grad_(True)
    for value in (ccu.target(name)(x) for name in ("score", "output", "density_log_odds")):
        assert torch.isfinite(value).all() and value.dtype == x.dtype
        (grad,) = torch.autograd.grad(value.sum(), x)
        assert torch.isfinite(grad).all()
    assert ccu.score(x).shape == (5,) and ccu.output(x).shape == (5, 4) and ccu.density_log_odds(x).shape == (5, 1)


def test_ccu_draws_auxiliary_outliers_when_none_are_given(cnn, blobs):
    x, _ = blobs
    det = make_detector("ccu", cnn, n_components=2, em_iterations=2, n_outliers=20).fit(x)
    assert det.gmm_out.n_components == 2 and torch.isfinite(det.score(x[:3])).all()


def test_ccu_must_be_fitted(cnn):
    with pytest.raises(RuntimeError, match="not fitted"):
        CCU(cnn).score(_images(1, 0))


def test_nearest_neighbour_distance():
    data = torch.zeros(3, 1, 2, 2)
    data[1] += 1.0
    x = torch.full((2, 1, 2, 2), 0.25)
    assert torch.allclose(nearest_neighbour_distance(x, data), torch.full((2,), 0.5))


def test_ink_outside_support():
    data = torch.zeros(4, 1, 2, 2)
    data[:, :, 0, 0] = 1.0
    x = torch.zeros(2, 1, 2, 2)
    x[0, :, 0, 0] = 0.5  # inside the support
    x[1, :, 1, 1] = 0.1  # a pixel no training image uses
    assert ink_outside_support(x, data).tolist() == [False, True]
