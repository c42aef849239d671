"""The seeds' small-ball threat models (oodlib.attack.pgd): constraints, direction, quantisation, determinism,
restoration of the model's state."""

import pytest
import torch
from torch import nn

from oodlib.attack.pgd import (ALOE_EPS, ATOM_EPS, EnergyObjective, aloe_threat, aoe_threat, atom_threat, fgsm,
                               pgd_linf, quantise_perturbation)
from oodlib.detectors import make_detector
from oodlib.models import SmallCNN


class Linear(nn.Module):
    """f(x) = <w, x>: its maximiser in an L∞ ball (away from the box edges) is x0 + ε·sign(w)."""

    def __init__(self, shape, seed=0):
        super().__init__()
        self.w = nn.Parameter(torch.randn(shape, generator=torch.Generator().manual_seed(seed)))

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1)


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return SmallCNN(in_channels=1, image_size=12, num_classes=5, width=4, latent_dim=8).eval()


def _interior(n, seed, size=12):
    """Images in [0.2, 0.8], so an ε ≤ 0.2 ball never touches the box edges."""
    return 0.2 + 0.6 * torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("maximize", [True, False])
def test_linear_objective_reaches_the_corner_of_the_ball(maximize):
    f, x = Linear((1, 12, 12)), _interior(4, 1)
    res = pgd_linf(f, x, eps=0.05, steps=20, step_size=0.01, maximize=maximize)
    direction = 1 if maximize else -1
    assert torch.allclose(res.x, x + direction * 0.05 * f.w.detach().sign(), atol=1e-6)
    assert ((res.objective - res.objective_start) * direction > 0).all()
    assert res.history.shape == (21, 4)


@pytest.mark.parametrize("quantise", [False, True])
def test_stays_in_ball_and_unit_range(cnn, quantise):
    x = torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    res = pgd_linf(EnergyObjective(cnn), x, eps=8 / 255, steps=5, step_size=2 / 255, quantise=quantise)
    assert (res.x - x).abs().max() <= 8 / 255 + 1e-6
    assert res.x.min() >= 0 and res.x.max() <= 1


def test_quantised_perturbation_is_whole_grey_levels(cnn):
    x = _interior(5, 3)
    res = atom_threat(lambda v: cnn(v).amax(1), x, steps=4, module=cnn)
    levels = (res.x - x) * 255
    assert torch.allclose(levels, levels.round(), atol=1e-3)
    assert (res.x - x).abs().max() <= ATOM_EPS + 1e-6
    assert torch.equal(quantise_perturbation(torch.tensor([0.4 / 255, 0.6 / 255])), torch.tensor([0.0, 1 / 255]))


def test_deterministic_and_independent_of_batch_size(cnn):
    x = torch.rand(7, 1, 12, 12, generator=torch.Generator().manual_seed(4))
    f = EnergyObjective(cnn)
    a = pgd_linf(f, x, eps=0.03, steps=3, step_size=0.01, seed=5, batch_size=7)
    b = pgd_linf(f, x, eps=0.03, steps=3, step_size=0.01, seed=5, batch_size=3)
    c = pgd_linf(f, x, eps=0.03, steps=3, step_size=0.01, seed=6, batch_size=7)
    assert torch.allclose(a.x, b.x, atol=1e-6)
    assert not torch.equal(a.x, c.x)


def test_keep_best_is_never_worse_than_the_last_iterate(cnn):
    f = EnergyObjective(cnn)
    x = torch.rand(8, 1, 12, 12, generator=torch.Generator().manual_seed(7))
    last = pgd_linf(f, x, eps=0.1, steps=6, step_size=0.05, seed=1)
    best = pgd_linf(f, x, eps=0.1, steps=6, step_size=0.05, seed=1, keep_best=True)
    assert (best.objective >= last.objective - 1e-5).all()
    assert torch.allclose(best.objective, best.history.max(0).values)


def test_restores_mode_and_requires_grad_flags():
    model = SmallCNN(in_channels=1, image_size=12, num_classes=5, width=4, latent_dim=8).train()
    model.head.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    pgd_linf(EnergyObjective(model), torch.rand(2, 1, 12, 12), eps=0.1, steps=2, step_size=0.05)
    fgsm(EnergyObjective(model), torch.rand(2, 1, 12, 12), eps=0.1)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_fgsm_is_one_signed_step(cnn):
    f, x = Linear((1, 12, 12), seed=3), _interior(3, 8)
    assert torch.allclose(fgsm(f, x, eps=0.1), x + 0.1 * f.w.detach().sign())
    assert torch.allclose(fgsm(f, x, eps=0.1, maximize=False), x - 0.1 * f.w.detach().sign())
    far = fgsm(f, x, eps=0.9, clamp=False)
    assert far.max() > 1 and fgsm(f, x, eps=0.9).max() <= 1


def test_energy_objective_is_logsumexp(cnn):
    x = torch.rand(4, 1, 12, 12)
    assert torch.allclose(EnergyObjective(cnn)(x), torch.logsumexp(cnn(x), 1))


def test_aoe_threat_lowers_the_energy(cnn):
    x = _interior(16, 9)
    attacked = aoe_threat(cnn, x, eps=0.03)
    assert (attacked - x).abs().max() <= 0.03 + 1e-6
    energy = EnergyObjective(cnn)
    with torch.no_grad():
        assert energy(attacked).mean() > energy(x).mean()


def test_aloe_threat_attacks_both_sides(cnn):
    score = make_detector("msp", cnn)
    x_in, x_out = _interior(8, 10), _interior(8, 11)
    attacked_in, attacked_out = aloe_threat(score, x_in, x_out, eps=0.05, steps=10)
    assert attacked_in.objective.mean() < attacked_in.objective_start.mean()
    assert attacked_out.objective.mean() > attacked_out.objective_start.mean()
    assert (attacked_in.x - x_in).abs().max() <= 0.05 + 1e-6
    assert aloe_threat(score, x_in, x_out)[0].params["eps"] == ALOE_EPS


@pytest.mark.parametrize("bad", [dict(eps=0.0), dict(steps=-1), dict(step_size=float("nan"))])
def test_rejects_invalid_settings(cnn, bad):
    kwargs = dict(eps=0.1, steps=2, step_size=0.01) | bad
    with pytest.raises(ValueError):
        pgd_linf(EnergyObjective(cnn), torch.rand(2, 1, 12, 12), **kwargs)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        pgd_linf(EnergyObjective(cnn), torch.rand(2, 1, 12, 12) + 1.0, eps=0.1, steps=2, step_size=0.01)
    with pytest.raises(ValueError, match="one value per image"):
        pgd_linf(cnn.features, torch.rand(2, 1, 12, 12), eps=0.1, steps=2, step_size=0.01)
