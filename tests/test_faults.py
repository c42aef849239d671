"""Degenerate input (issue 11, second part): non-finite input gradients, empty batches, and numbers given as NumPy
scalars, 0-d tensors, booleans, NaN or inf — for the attacks, the detectors, the metrics and the helpers that take a
batch. The policy under test is in the docstring of :func:`oodlib.attack.ood_attack`."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from oodlib import experiments, metrics
from oodlib.attack import ood_attack, random_start
from oodlib.attack.ood import AdamaxStep, NonFiniteGradientWarning, normalise_gradient, project, schedule_factor
from oodlib.attack.pgd import aloe_threat, aoe_threat, atom_threat, fgsm, pgd_linf, quantise_perturbation
from oodlib.autoencoder import ConvAutoEncoder, attack_autoencoder, nearest_image_distance
from oodlib.detectors import make_detector
from oodlib.detectors.ccu import nearest_neighbour_distance
from oodlib.detectors.glow import GlowNLL
from oodlib.flows import Glow, nll_batched
from oodlib.models import SmallCNN
from oodlib.nullspace import null_space_attack
from oodlib.pigeonhole import nearest_code_mape

SIZE = 12
BAD = 1  # the index of the poisoned sample


@pytest.fixture(scope="module")
def cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN(in_channels=1, image_size=SIZE, num_classes=5, width=4, latent_dim=8).eval()


def _images(n: int, seed: int, high: float = 0.5) -> Tensor:
    """Dark images (values in [0, high]): never 'bright' for :class:`_PoisonBright`."""
    return high * torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


class _PoisonBright(torch.autograd.Function):
    """Identity whose backward gives ``value`` (NaN or inf) for every bright image (mean > 0.8) and passes the
    gradient of the other images unchanged — a stand-in for a square root at 0 inside a model."""

    @staticmethod
    def forward(ctx, x: Tensor, value: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.value = value
        return x.clone()

    @staticmethod
    def backward(ctx, g: Tensor):
        (x,) = ctx.saved_tensors
        bright = (x.flatten(1).mean(1) > 0.8).view(-1, *([1] * (x.dim() - 1)))
        return torch.where(bright, torch.full_like(g, ctx.value), g), None


class Poisoned(nn.Module):
    """``cnn.features`` (or the summed logits, ``scalar``) behind :class:`_PoisonBright`."""

    def __init__(self, model: SmallCNN, value: float = float("nan"), scalar: bool = False) -> None:
        super().__init__()
        self.model, self.value, self.scalar = model, value, scalar

    def forward(self, x: Tensor) -> Tensor:
        x = _PoisonBright.apply(x, self.value)
        return self.model(x).sum(1) if self.scalar else self.model.features(x)


def _with_bright(x: Tensor) -> Tensor:
    """``x`` with sample ``BAD`` replaced by a bright image (mean > 0.8 even after an ε-step)."""
    x = x.clone()
    x[BAD] = 0.95 + 0.05 * torch.rand(x.shape[1:], generator=torch.Generator().manual_seed(7))
    return x


def _good(t: Tensor) -> Tensor:
    return torch.cat([t[:BAD], t[BAD + 1:]])


# ------------------------------------------------------------------------------------------ non-finite gradients

@pytest.mark.parametrize("routine", ["authors", "printed", "fast"])
@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_ood_attack_skips_the_step_of_a_sample_with_a_non_finite_gradient(cnn, routine, norm, value):
    eps = 1.0 if norm == "l2" else 0.05
    f = Poisoned(cnn, value)
    x_in, x_clean = _images(3, 1), _images(3, 2)
    x_bad = _with_bright(x_clean)
    kwargs = dict(eps=eps, steps=6, norm=norm, routine=routine, seed=3)
    with pytest.warns(NonFiniteGradientWarning, match=r"sample\(s\) 1 in 6 iteration"):
        res = ood_attack(f, x_in, x_bad, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the healthy run warns nothing
        clean = ood_attack(f, x_in, x_clean, **kwargs)
    assert torch.isfinite(res.x).all()
    assert res.nonfinite_gradient.tolist() == [False, True, False]
    assert res.nonfinite_steps.tolist() == [0, 6, 0]
    assert clean.nonfinite_steps.tolist() == [0, 0, 0]
    assert torch.equal(_good(res.x), _good(clean.x))
    assert torch.equal(_good(res.loss), _good(clean.loss)) and torch.equal(_good(res.mape), _good(clean.mape))
    # every step of the poisoned sample was skipped: it is still at its random start
    start = random_start(x_bad, eps, norm, 3, torch.arange(3))
    assert torch.equal(res.x[BAD], start[BAD])
    assert torch.isfinite(res.loss).all() and torch.isfinite(res.mape).all()


def test_restarts_add_up_the_skipped_steps_and_the_warning_gives_global_indices(cnn):
    x_in, x_bad = _images(3, 1), _with_bright(_images(3, 2))
    with pytest.warns(NonFiniteGradientWarning, match=r"sample\(s\) 11 in 8 iteration"):
        res = ood_attack(Poisoned(cnn), x_in, x_bad, eps=1.0, steps=4, restarts=2, keep_best=True,
                         routine="authors", first_index=10)
    assert res.nonfinite_steps.tolist() == [0, 8, 0]
    assert torch.isfinite(res.x).all()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("keep_best, quantise", [(False, False), (True, True)])
def test_pgd_skips_the_step_of_a_sample_with_a_non_finite_gradient(cnn, value, keep_best, quantise):
    f = Poisoned(cnn, value, scalar=True)
    x_clean = _images(3, 4)
    x_bad = _with_bright(x_clean)
    kwargs = dict(eps=0.03, steps=5, step_size=0.01, keep_best=keep_best, quantise=quantise, seed=2)
    with pytest.warns(NonFiniteGradientWarning, match=r"sample\(s\) 1 in 5 iteration"):
        res = pgd_linf(f, x_bad, **kwargs)
    clean = pgd_linf(f, x_clean, **kwargs)
    assert torch.isfinite(res.x).all()
    assert res.nonfinite_gradient.tolist() == [False, True, False]
    assert clean.nonfinite_steps.tolist() == [0, 0, 0]
    assert torch.equal(_good(res.x), _good(clean.x))
    assert torch.equal(_good(res.history.T), _good(clean.history.T))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("clamp", [True, False])
def test_fgsm_returns_a_sample_with_a_non_finite_gradient_unchanged(cnn, value, clamp):
    f = Poisoned(cnn, value, scalar=True)
    x_clean = _images(3, 5)
    x_bad = _with_bright(x_clean)
    with pytest.warns(NonFiniteGradientWarning, match=r"sample\(s\) 1 in 1 iteration"):
        out = fgsm(f, x_bad, eps=0.05, clamp=clamp)
    assert torch.isfinite(out).all()
    assert torch.equal(out[BAD], x_bad[BAD])
    assert torch.equal(_good(out), _good(fgsm(f, x_clean, eps=0.05, clamp=clamp)))


def test_the_threat_helpers_inherit_the_policy(cnn):
    f = Poisoned(cnn, scalar=True)
    x_bad = _with_bright(_images(3, 6))
    with pytest.warns(NonFiniteGradientWarning):
        res = atom_threat(f, x_bad, steps=3)
    assert res.nonfinite_gradient.tolist() == [False, True, False] and torch.isfinite(res.x).all()
    with pytest.warns(NonFiniteGradientWarning):
        attacked_in, attacked_out = aloe_threat(f, _images(3, 7), x_bad, steps=3)
    assert attacked_out.nonfinite_gradient.tolist() == [False, True, False]
    assert not attacked_in.nonfinite_gradient.any()


def test_non_finite_targets_are_refused_before_the_loop_naming_the_samples(cnn):
    z = cnn.features(_images(3, 1)).detach()
    z[2, 0] = float("nan")
    with pytest.raises(ValueError, match=r"z_in holds NaN or inf for sample\(s\) 2"):
        ood_attack(cnn.features, None, _images(3, 2), z_in=z, eps=1.0, steps=2)

    class NaNForBright(nn.Module):
        def forward(self, x):
            z = cnn.features(x)
            return torch.where((x.flatten(1).mean(1) > 0.8)[:, None], torch.full_like(z, float("inf")), z)

    with pytest.raises(ValueError, match=r"f\(x_in\) holds NaN or inf for sample\(s\) 1;"):
        ood_attack(NaNForBright(), _with_bright(_images(3, 1)), _images(3, 2), eps=1.0, steps=2)


# -------------------------------------------------------- the policy leaves finite runs bitwise as they were

def _reference_attack(f, x_in: Tensor, x_ood: Tensor, *, eps: float, steps: int, norm: str, update: str,
                      schedule: str, seed: int) -> Tensor:
    """The attack loop as it was before the non-finite-gradient policy (commit c45ec7a), one batch, one restart,
    no early stop, the last iterate."""
    with torch.no_grad():
        target = f(x_in)
    x0 = x_ood.float()
    x = random_start(x0, eps, norm, seed, torch.arange(x0.shape[0])).clone()
    delta = x - x0
    adamax = AdamaxStep(delta) if update == "adamax" else None
    for t in range(steps):
        leaf = x.detach().requires_grad_(True)
        per_sample = (f(leaf) - target).pow(2).flatten(1).sum(1)
        (grad,) = torch.autograd.grad(per_sample.sum(), leaf)
        with torch.no_grad():
            lr = eps / 100 * schedule_factor(schedule, t, steps)
            h = normalise_gradient(grad, norm, in_place=True)
            if adamax is not None:
                adamax(h, lr)
            else:
                delta.sub_(h.mul_(lr))
            project(delta, eps, norm)
            x.copy_(x0).add_(delta).clamp_(0, 1)
            delta.copy_(x).sub_(x0)
    return x


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("update, schedule", [("adamax", "constant"), ("printed", "constant"),
                                              ("adamax", "cosine")])
def test_finite_runs_are_bitwise_those_of_the_loop_without_the_check(cnn, norm, update, schedule):
    eps = 2.0 if norm == "l2" else 0.1
    x_in, x_ood = _images(5, 8, high=1.0), _images(5, 9, high=1.0)
    res = ood_attack(cnn.features, x_in, x_ood, eps=eps, steps=15, norm=norm, routine="authors", update=update,
                     schedule=schedule, seed=4)
    ref = _reference_attack(cnn.features, x_in, x_ood, eps=eps, steps=15, norm=norm, update=update,
                            schedule=schedule, seed=4)
    assert torch.equal(res.x, ref)
    assert not res.nonfinite_gradient.any()


def _reference_pgd(f, x: Tensor, *, eps: float, steps: int, step_size: float, seed: int, quantise: bool) -> Tensor:
    """pgd_linf's loop as it was before the policy (maximise, random start, the last iterate)."""
    noise = (torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1) * eps
    if quantise:
        noise = quantise_perturbation(noise).clamp(-eps, eps)
    x0, xt = x.float(), (x + noise).clamp(0, 1)
    for _ in range(steps):
        xt.requires_grad_(True)
        (grad,) = torch.autograd.grad(f(xt).sum(), xt)
        with torch.no_grad():
            delta = (xt.detach() + step_size * grad.sign() - x0).clamp(-eps, eps)
            if quantise:
                delta = quantise_perturbation(delta).clamp(-eps, eps)
            xt = (x0 + delta).clamp(0, 1)
    return xt


@pytest.mark.parametrize("quantise", [False, True])
def test_finite_pgd_runs_are_bitwise_those_of_the_loop_without_the_check(cnn, quantise):
    f = Poisoned(cnn, scalar=True)  # no bright image: an ordinary model
    x = _images(4, 10, high=0.8)
    res = pgd_linf(f, x, eps=0.03, steps=6, step_size=0.01, quantise=quantise, seed=1)
    assert torch.equal(res.x, _reference_pgd(f, x, eps=0.03, steps=6, step_size=0.01, seed=1, quantise=quantise))


# ------------------------------------------------------------------------------------------------ empty batches

def _empty(channels: int = 1, size: int = SIZE) -> Tensor:
    return torch.empty(0, channels, size, size)


def _small_ae() -> ConvAutoEncoder:
    torch.manual_seed(0)
    return ConvAutoEncoder(1, 8, latent_dim=4, width=4).eval()


def _small_flow() -> Glow:
    torch.manual_seed(0)
    return Glow(1, 8, levels=2, depth=1, hidden=4).initialise(torch.rand(8, 1, 8, 8), torch.Generator()).eval()


EMPTY_CASES = {
    "ood_attack x_in": (lambda m: ood_attack(m.features, _empty(), _images(1, 1), eps=1.0, steps=2), "x_in"),
    "ood_attack x_ood": (lambda m: ood_attack(m.features, _images(2, 1), _empty(), eps=1.0, steps=2), "x_ood"),
    "ood_attack z_in": (lambda m: ood_attack(m.features, None, _images(1, 1), z_in=torch.empty(0, 8), eps=1.0,
                                             steps=2), "z_in"),
    "pgd_linf": (lambda m: pgd_linf(m, _empty(), eps=0.1, steps=2, step_size=0.01), "x"),
    "fgsm": (lambda m: fgsm(m, _empty(), eps=0.1), "x"),
    "atom_threat": (lambda m: atom_threat(m, _empty()), "x_ood"),
    "aloe_threat x_in": (lambda m: aloe_threat(m, _empty(), _images(1, 1)), "x_in"),
    "aloe_threat x_ood": (lambda m: aloe_threat(m, _images(1, 1), _empty()), "x_ood"),
    "aoe_threat": (lambda m: aoe_threat(m, _empty(), eps=0.1), "x_ood"),
    "score_batched": (lambda m: make_detector("msp", m).score_batched(_empty()), "x"),
    "score": (lambda m: make_detector("energy", m).score(_empty()), "x"),
    "odin score": (lambda m: make_detector("odin", m).score(_empty()), "x"),
    "msp fit": (lambda m: make_detector("msp", m).fit(_empty(), torch.empty(0, dtype=torch.long)), "x"),
    "mahalanobis fit": (lambda m: make_detector("mahalanobis", m).fit(_empty(), torch.empty(0, dtype=torch.long)),
                        "x"),
    "mahalanobis fit y": (lambda m: make_detector("mahalanobis", m).fit(_images(2, 1),
                                                                        y=torch.empty(0, dtype=torch.long)), "y"),
    "gram fit": (lambda m: make_detector("gram", m).fit(_empty()), "x"),
    "ccu fit": (lambda m: make_detector("ccu", m).fit(_empty()), "x"),
    "ccu fit x_out": (lambda m: make_detector("ccu", m).fit(_images(4, 1), x_out=_empty()), "x_out"),
    "auroc": (lambda m: metrics.auroc([], [0.5]), "score_in"),
    "aupr_in": (lambda m: metrics.aupr_in([0.5], []), "score_out"),
    "aupr_out": (lambda m: metrics.aupr_out([], [0.5]), "score_in"),
    "fpr_at_95_tpr": (lambda m: metrics.fpr_at_95_tpr([0.5], []), "score_out"),
    "detection_summary": (lambda m: metrics.detection_summary([], [0.5]), "score_in"),
    "mape": (lambda m: metrics.mape(torch.empty(0, 3), torch.empty(0, 3)), "z_out"),
    "mape_fraction_below": (lambda m: metrics.mape_fraction_below([]), "mape_values"),
    "encode": (lambda m: experiments.encode(m, _empty()), "x"),
    "detector_auroc": (lambda m: experiments.detector_auroc(make_detector("msp", m), _images(2, 1), _empty()),
                       "x_out"),
    "attack_from_start": (lambda m: experiments.attack_from_start(m, _empty(), "noise", eps=1.0, steps=2), "x_in"),
    "attack_detector": (lambda m: experiments.attack_detector(make_detector("msp", m), "logits", _images(2, 1),
                                                              {"noise": _empty()}, {"a": ("noise", 1.0)}, steps=2),
                        "starts"),
    "nearest_image_distance": (lambda m: nearest_image_distance(_empty(), _images(2, 1)), "x"),
    "nearest_image_distance reference": (lambda m: nearest_image_distance(_images(2, 1), _empty()), "reference"),
    "attack_autoencoder": (lambda m: attack_autoencoder(_small_ae(), _empty(size=8), torch.rand(1, 1, 8, 8),
                                                        eps=1.0, steps=2), "x_in"),
    "reconstruction score": (lambda m: make_detector("reconstruction", _small_ae()).score(_empty(size=8)), "x"),
    "nll_batched": (lambda m: nll_batched(_small_flow(), _empty(size=8)), "x"),
    "glow ood_score_batched": (lambda m: GlowNLL(_small_flow()).ood_score_batched(_empty(size=8)), "x"),
    "glow score": (lambda m: GlowNLL(_small_flow()).score(_empty(size=8)), "x"),
    "nearest_neighbour_distance": (lambda m: nearest_neighbour_distance(_images(2, 1), _empty()), "data"),
    "nearest_code_mape": (lambda m: nearest_code_mape(torch.empty(0, 4), torch.rand(3, 4)), "z_query"),
}


@pytest.mark.parametrize("case", list(EMPTY_CASES))
def test_an_empty_batch_is_refused_naming_the_argument(cnn, case):
    call, name = EMPTY_CASES[case]
    with pytest.raises(ValueError, match=rf"^{name}\b.* empty"):
        call(cnn)


# ------------------------------------------------------------------------------------------------------ numbers

NUMBER_FORMS = {
    "numpy": lambda v: np.float64(v) if isinstance(v, float) else np.int64(v),
    "0-d tensor": lambda v: torch.tensor(v, dtype=torch.float64 if isinstance(v, float) else torch.int64),
    "0-d array": lambda v: np.array(v),
}


@pytest.mark.parametrize("form", list(NUMBER_FORMS))
def test_numpy_scalars_and_0d_tensors_give_the_results_of_python_numbers(cnn, form):
    as_ = NUMBER_FORMS[form]
    x_in, x_ood = _images(3, 11), _images(3, 12)
    kw = dict(eps=1.5, steps=5, step_size=0.02, tol=1e-3, batch_size=2, restarts=2, check_every=2, seed=3)
    a = ood_attack(cnn.features, x_in, x_ood, routine="fast", **kw)
    b = ood_attack(cnn.features, x_in, x_ood, routine="fast", **{k: as_(v) for k, v in kw.items()})
    assert torch.equal(a.x, b.x) and torch.equal(a.loss, b.loss) and a.params == b.params
    assert all(type(b.params[k]) is type(v) for k, v in kw.items() if k in b.params)
    f = Poisoned(cnn, scalar=True)
    kw = dict(eps=0.03, steps=3, step_size=0.01, batch_size=2, seed=1)
    assert torch.equal(pgd_linf(f, x_ood, **kw).x, pgd_linf(f, x_ood, **{k: as_(v) for k, v in kw.items()}).x)
    assert torch.equal(fgsm(f, x_ood, eps=0.03), fgsm(f, x_ood, eps=as_(0.03), batch_size=as_(2)))
    odin = make_detector("odin", cnn, temperature=as_(100.0), magnitude=as_(0.001))
    reference = make_detector("odin", cnn, temperature=100.0, magnitude=0.001)
    assert torch.equal(odin.score_batched(x_ood, batch_size=as_(2)), reference.score_batched(x_ood))
    assert metrics.mape_fraction_below([1e-4, 2e-3], as_(1e-3)) == 0.5


BAD_NUMBERS = [(True, TypeError, "boolean"), (np.bool_(False), TypeError, "boolean"),
               (torch.tensor(True), TypeError, "boolean"), (float("nan"), ValueError, "finite"),
               (np.float64("inf"), ValueError, "finite"), (torch.tensor(-math.inf), ValueError, "finite"),
               ("1.0", TypeError, "number")]

NUMBER_PARAMETERS = {
    "ood_attack eps": lambda m, v: ood_attack(m.features, _images(2, 1), _images(2, 2), eps=v, steps=2),
    "ood_attack step_size": lambda m, v: ood_attack(m.features, _images(2, 1), _images(2, 2), eps=1.0, steps=2,
                                                    step_size=v),
    "ood_attack tol": lambda m, v: ood_attack(m.features, _images(2, 1), _images(2, 2), eps=1.0, steps=2, tol=v),
    "pgd_linf eps": lambda m, v: pgd_linf(m, _images(2, 1), eps=v, steps=2, step_size=0.01),
    "pgd_linf step_size": lambda m, v: pgd_linf(m, _images(2, 1), eps=0.1, steps=2, step_size=v),
    "fgsm eps": lambda m, v: fgsm(m, _images(2, 1), eps=v),
    "aloe_threat eps": lambda m, v: aloe_threat(m, _images(2, 1), _images(2, 2), eps=v),
    "odin temperature": lambda m, v: make_detector("odin", m, temperature=v),
    "odin magnitude": lambda m, v: make_detector("odin", m, magnitude=v),
    "energy temperature": lambda m, v: make_detector("energy", m, temperature=v),
    "mahalanobis magnitude": lambda m, v: make_detector("mahalanobis", m, magnitude=v),
    "mahalanobis ridge": lambda m, v: make_detector("mahalanobis", m, ridge=v),
    "ccu lam": lambda m, v: make_detector("ccu", m, lam=v),
    "mape_fraction_below threshold": lambda m, v: metrics.mape_fraction_below([0.1], v),
    "attack_autoencoder residual_weight": lambda m, v: attack_autoencoder(
        _small_ae(), torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), eps=1.0, steps=1, residual_weight=v),
    "null_space_attack magnitude": lambda m, v: null_space_attack(torch.randn(2, 5), torch.rand(5), v),
}

INTEGER_PARAMETERS = {
    "ood_attack steps": lambda m, v: ood_attack(m.features, _images(2, 1), _images(2, 2), eps=1.0, steps=v),
    "ood_attack batch_size": lambda m, v: ood_attack(m.features, _images(2, 1), _images(2, 2), eps=1.0, steps=2,
                                                     batch_size=v),
    "ood_attack restarts": lambda m, v: ood_attack(m.features, _images(2, 1), _images(2, 2), eps=1.0, steps=2,
                                                   restarts=v),
    "pgd_linf steps": lambda m, v: pgd_linf(m, _images(2, 1), eps=0.1, steps=v, step_size=0.01),
    "fgsm batch_size": lambda m, v: fgsm(m, _images(2, 1), eps=0.1, batch_size=v),
    "score_batched batch_size": lambda m, v: make_detector("msp", m).score_batched(_images(2, 1), batch_size=v),
    "encode batch_size": lambda m, v: experiments.encode(m, _images(2, 1), batch_size=v),
    "ccu n_components": lambda m, v: make_detector("ccu", m, n_components=v),
}


@pytest.mark.parametrize("bad, error, words", BAD_NUMBERS, ids=repr)
@pytest.mark.parametrize("case", list(NUMBER_PARAMETERS))
def test_booleans_and_non_finite_numbers_are_refused_by_name(cnn, case, bad, error, words):
    name = case.split()[-1]
    with pytest.raises(error, match=rf"^{name} must .*{words}"):
        NUMBER_PARAMETERS[case](cnn, bad)


@pytest.mark.parametrize("bad, error, words", [(True, TypeError, "boolean"), (np.bool_(True), TypeError, "boolean"),
                                               (2.0, TypeError, "integer"), (np.float64("nan"), TypeError, "integer"),
                                               (0, ValueError, "positive"), (torch.tensor(-1), ValueError, "")],
                         ids=repr)
@pytest.mark.parametrize("case", list(INTEGER_PARAMETERS))
def test_integer_parameters_refuse_booleans_floats_and_out_of_range_by_name(cnn, case, bad, error, words):
    name = case.split()[-1]
    if case == "pgd_linf steps" and isinstance(bad, int) and bad == 0:
        pytest.skip("pgd_linf allows steps=0 (a random point of the ball)")
    with pytest.raises(error, match=rf"^{name} must .*{words}"):
        INTEGER_PARAMETERS[case](cnn, bad)


def test_an_unknown_or_missing_device_is_a_clear_value_error():
    from oodlib.models import resolve_device

    with pytest.raises(ValueError, match="unknown device 'tpu'; valid choices"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda:0")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("y, error, words", [
    (torch.arange(4) % 5, ValueError, "y holds 4 labels for 10 images"),
    ((torch.arange(10) % 5)[:, None], ValueError, r"one label per image, shape \(10,\); got shape \(10, 1\)"),
    (torch.arange(10).float(), TypeError, "integer class labels"),
    (torch.arange(10) - 1, ValueError, "negative label"),
    ([0, 1], TypeError, "tensor of class labels"),
])
def test_detector_fits_refuse_labels_that_do_not_fit_the_images(cnn, y, error, words):
    import oodlib.defenses.bal  # noqa: F401  (registers "bal")

    x = _images(10, seed=3)
    for name in ("mahalanobis", "bal"):
        with pytest.raises(error, match=words):
            make_detector(name, cnn).fit(x, y)


def test_gram_refuses_a_fit_it_cannot_split_and_fits_two_images(cnn):
    gram = make_detector("gram", cnn)
    with pytest.raises(ValueError, match="at least 2 images x without x_holdout.*got 1"):
        gram.fit(_images(1, seed=4))
    with pytest.raises(ValueError, match="x_holdout is an empty batch"):
        gram.fit(_images(3, seed=4), x_holdout=_images(0, seed=4))
    gram.fit(_images(2, seed=4))
    assert (gram.n_fit_images, gram.n_holdout_images) == (1, 1)
