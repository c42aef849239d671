"""Algorithm 1 (oodlib.attack): constraints, convergence, restoration of the model's state, determinism."""

import pytest
import torch
from torch import nn

from oodlib.attack import normalise_gradient, ood_attack, project, random_start
from oodlib.models import SmallCNN


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return SmallCNN(in_channels=1, image_size=12, num_classes=5, width=4, latent_dim=8).eval()


def _images(n, seed, size=12):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("update", ["adamax", "printed"])
def test_stays_in_ball_and_in_unit_range(cnn, norm, update):
    x_in, x_ood = _images(6, 1), _images(6, 2)
    eps = 1.5 if norm == "l2" else 0.1
    res = ood_attack(cnn.features, x_in, x_ood, eps=eps, steps=15, norm=norm, update=update, step_size=eps / 5,
                     restarts=2, keep_best=True)
    diff = (res.x - x_ood).flatten(1)
    dist = diff.norm(dim=1) if norm == "l2" else diff.abs().amax(dim=1)
    assert res.x.shape == x_ood.shape
    assert (dist <= eps * (1 + 1e-5)).all()
    assert res.x.min() >= 0 and res.x.max() <= 1


def test_single_start_image_is_broadcast(cnn):
    x_in, x_ood = _images(4, 1), _images(1, 2)
    res = ood_attack(cnn.features, x_in, x_ood, eps=1.0, steps=5)
    assert res.x.shape == (4, 1, 12, 12)
    assert ((res.x - x_ood).flatten(1).norm(dim=1) <= 1.0 + 1e-5).all()


def test_loss_falls(cnn):
    x_in, x_ood = _images(8, 3), _images(8, 4)
    res = ood_attack(cnn.features, x_in, x_ood, eps=3.0, steps=60)
    assert res.loss_history.shape == (60, 8)
    assert res.loss.mean() < 0.2 * res.loss_history[0].mean()
    assert res.mape.shape == (8,)


def test_linear_encoder_mape_reaches_zero():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(144, 6))
    x_in, x_ood = _images(5, 5), _images(5, 6) * 0.2 + 0.4  # start away from the box edges
    res = ood_attack(encoder, x_in, x_ood, eps=4.0, steps=400, schedule="cosine")
    assert res.mape.max() < 1e-3


def test_restores_mode_and_requires_grad_flags():
    model = SmallCNN(in_channels=1, image_size=12, num_classes=5, width=4, latent_dim=8)
    model.train()
    model.head.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    ood_attack(model.features, _images(2, 1), _images(2, 2), eps=1.0, steps=3)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_batch_size_does_not_change_results(cnn):
    x_in, x_ood = _images(7, 7), _images(7, 8)
    a = ood_attack(cnn.features, x_in, x_ood, eps=2.0, steps=10, batch_size=3)
    b = ood_attack(cnn.features, x_in, x_ood, eps=2.0, steps=10, batch_size=64)
    torch.testing.assert_close(a.x, b.x, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.mape, b.mape, atol=1e-5, rtol=1e-4)


def test_seeded_runs_are_identical_and_seeds_differ(cnn):
    x_in, x_ood = _images(3, 9), _images(3, 10)
    a = ood_attack(cnn.features, x_in, x_ood, eps=2.0, steps=5, seed=3)
    b = ood_attack(cnn.features, x_in, x_ood, eps=2.0, steps=5, seed=3)
    c = ood_attack(cnn.features, x_in, x_ood, eps=2.0, steps=5, seed=4)
    assert torch.equal(a.x, b.x)
    assert not torch.equal(a.x, c.x)


def test_target_given_as_z_in(cnn):
    x_in, x_ood = _images(3, 11), _images(3, 12)
    with torch.no_grad():
        z = cnn.features(x_in)
    a = ood_attack(cnn.features, None, x_ood, z_in=z, eps=2.0, steps=5)
    b = ood_attack(cnn.features, x_in, x_ood, eps=2.0, steps=5)
    torch.testing.assert_close(a.x, b.x)


def test_early_stop_when_all_samples_converged():
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(144, 3))
    x_ood = _images(2, 13) * 0.2 + 0.4
    with torch.no_grad():
        z = encoder(x_ood)
    res = ood_attack(encoder, None, x_ood, z_in=z + 1e-4, eps=1.0, steps=500, tol=0.5, check_every=1)
    assert res.steps_run < 5


def test_printed_rule_moves_alpha_per_iteration():
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(144, 3))
    x_ood = torch.full((2, 1, 12, 12), 0.5)
    with torch.no_grad():
        z = encoder(x_ood) + 10.0
    r1 = ood_attack(encoder, None, x_ood, z_in=z, eps=0.2, steps=1, routine="printed", step_size=0.01)
    r2 = ood_attack(encoder, None, x_ood, z_in=z, eps=0.2, steps=2, routine="printed", step_size=0.01)
    step = (r2.x - r1.x).flatten(1).norm(dim=1)
    # one printed step moves alpha in L2; the projection back onto the eps-sphere (the start lies on it) can
    # only shorten it slightly
    assert (step <= 0.01 + 1e-6).all() and (step > 0.009).all()


def test_random_start_on_the_eps_sphere():
    x0 = torch.full((4, 1, 12, 12), 0.5)
    start = random_start(x0, 0.5, "l2", seed=0)
    torch.testing.assert_close((start - x0).flatten(1).norm(dim=1), torch.full((4,), 0.5))


def test_random_start_of_a_sample_depends_only_on_its_index():
    x0 = torch.full((6, 1, 12, 12), 0.5)
    whole = random_start(x0, 0.5, "l2", seed=3)
    part = random_start(x0[2:5], 0.5, "l2", seed=3, sample_ids=torch.arange(2, 5))
    assert torch.equal(whole[2:5], part)


def test_projection_and_normalisation():
    delta = torch.randn(3, 1, 4, 4) * 10
    project(delta, 1.0, "l2")
    assert (delta.flatten(1).norm(dim=1) <= 1 + 1e-6).all()
    g = torch.randn(3, 1, 4, 4)
    torch.testing.assert_close(normalise_gradient(g, "l2").flatten(1).norm(dim=1), torch.ones(3))
    assert set(normalise_gradient(g, "linf").unique().tolist()) <= {-1.0, 0.0, 1.0}


@pytest.mark.parametrize("kwargs, message", [
    (dict(eps=0.0, steps=5), "eps must be a positive"),
    (dict(eps=-1.0, steps=5), "eps must be a positive"),
    (dict(eps=1.0, steps=0), "steps must be a positive integer"),
    (dict(eps=1.0, steps=5, batch_size=0), "batch_size must be a positive integer"),
    (dict(eps=1.0, steps=5, norm="l3"), "unknown norm 'l3'"),
])
def test_invalid_arguments_raise(cnn, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ood_attack(cnn.features, _images(2, 1), _images(2, 2), **kwargs)


def test_images_outside_unit_range_or_wrong_channels_raise(cnn):
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        ood_attack(cnn.features, _images(2, 1), _images(2, 2) * 2, eps=1.0, steps=2)
    with pytest.raises(ValueError, match="channels but the model takes 1"):
        ood_attack(cnn.features, _images(2, 1), torch.rand(2, 3, 12, 12), eps=1.0, steps=2)


def test_authors_routine_is_the_fixed_step_adamax_without_early_stop(cnn):
    x_in, x_ood = _images(3, 14), _images(3, 15)
    a = ood_attack(cnn.features, x_in, x_ood, eps=2.0, steps=6, routine="authors")
    b = ood_attack(cnn.features, x_in, x_ood, eps=2.0, steps=6, routine="fast", schedule="constant", tol=None)
    assert torch.equal(a.x, b.x)
    assert a.params["routine"] == "authors" and a.params["schedule"] == "constant" and a.params["tol"] is None
    with pytest.raises(ValueError, match="unknown routine 'quick'; valid choices: authors, printed, fast"):
        ood_attack(cnn.features, x_in, x_ood, eps=2.0, steps=6, routine="quick")


def test_a_converged_sample_is_returned_as_it_was_when_it_converged():
    torch.manual_seed(1)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(144, 4))
    x_ood = _images(2, 17) * 0.2 + 0.4
    with torch.no_grad():
        z = encoder(x_ood)
    z[1] += 5.0  # sample 0 starts (almost) matched, sample 1 far away
    both = ood_attack(encoder, None, x_ood, z_in=z, eps=4.0, steps=400, tol=0.05, check_every=1)
    alone = ood_attack(encoder, None, x_ood[:1], z_in=z[:1], eps=4.0, steps=400, tol=0.05, check_every=1)
    assert both.steps_run > alone.steps_run  # sample 1 kept the run going ...
    torch.testing.assert_close(both.x[0], alone.x[0], atol=1e-5, rtol=0)  # ... sample 0 returned as it converged
    assert both.mape[0] <= 0.05 < both.mape[1]


def test_default_routine_beats_the_authors_fixed_step_at_equal_iterations(cnn):
    x_in, x_ood = _images(8, 18), _images(8, 19)
    authors = ood_attack(cnn.features, x_in, x_ood, eps=3.0, steps=80, routine="authors")
    fast = ood_attack(cnn.features, x_in, x_ood, eps=3.0, steps=80)
    assert fast.mape.median() < authors.mape.median()


def test_a_scalar_score_can_be_the_target_and_float64_works_with_tol(cnn):
    from oodlib.detectors import make_detector

    msp = make_detector("msp", cnn)
    x_in, x_ood = _images(3, 20), _images(3, 21)
    res = ood_attack(msp, x_in, x_ood, eps=2.0, steps=4)
    assert res.z_target.shape == (3, 1)
    z64 = cnn.features(x_in).detach().double()
    ood_attack(lambda x: cnn.features(x).double(), None, x_ood, z_in=z64, eps=2.0, steps=4, tol=1e-3, module=cnn)


def test_a_wrapper_in_train_mode_does_not_flip_its_eval_model(cnn):
    wrapper = nn.Sequential(cnn)  # a new module defaults to train mode; cnn is in eval mode
    wrapper.training = True
    ood_attack(wrapper, _images(2, 22), _images(2, 23), eps=1.0, steps=2)
    assert not cnn.training and wrapper.training


def test_scoring_with_a_new_detector_leaves_the_model_in_eval_mode(cnn):
    from oodlib.detectors import make_detector

    make_detector("msp", cnn).score_batched(_images(2, 24))
    assert not cnn.training


def test_fused_adamax_step_equals_torch_adamax_bit_for_bit():
    from oodlib.attack.ood import AdamaxStep

    gen = torch.Generator().manual_seed(0)
    ours, theirs = torch.rand(3, 5, generator=gen), None
    theirs = ours.clone().requires_grad_(True)
    optimizer, step = torch.optim.Adamax([theirs], lr=0.05), AdamaxStep(ours)
    for t in range(6):
        g = torch.randn(3, 5, generator=gen)
        lr = 0.05 * (1 - t / 10)
        optimizer.param_groups[0]["lr"] = lr
        theirs.grad = g.clone()
        optimizer.step()
        step(g.clone(), lr)
        assert torch.equal(ours, theirs.detach())


def test_channels_last_layout_gives_the_same_attack(cnn):
    x_in, x_ood = _images(4, 1), _images(4, 2)
    plain = ood_attack(cnn.features, x_in, x_ood, eps=2.0, steps=10, routine="authors")
    last = ood_attack(cnn.features, x_in, x_ood, eps=2.0, steps=10, routine="authors", channels_last=True)
    assert last.x.is_contiguous() and last.params["channels_last"]
    torch.testing.assert_close(last.x, plain.x, atol=1e-4, rtol=0)


def test_autocast_runs_the_model_in_bfloat16_and_keeps_the_update_in_float32(cnn):
    x_in, x_ood = _images(4, 1), _images(4, 2)
    seen = []

    def f(x):
        z = cnn.features(x)
        seen.append(z.dtype)
        return z

    res = ood_attack(f, x_in, x_ood, eps=2.0, steps=20, routine="authors", autocast=True, module=cnn)
    assert set(seen) == {torch.bfloat16}
    assert res.x.dtype == res.loss.dtype == res.z_target.dtype == torch.float32
    assert res.loss_history[-1].mean() < res.loss_history[0].mean()


def _synchronising_ops(run) -> int:
    """Calls of the operators that copy device → host (``.item()``/``bool()`` and boolean-mask indexing)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    return sum(e.count for e in prof.key_averages() if e.key in ("aten::_local_scalar_dense", "aten::nonzero"))


@pytest.mark.parametrize("routine, keep_best, per_iteration", [("authors", False, 0.0), ("authors", True, 0.0),
                                                               ("fast", False, 0.1)])
def test_the_loop_copies_nothing_to_the_host_but_the_convergence_flag(cnn, routine, keep_best, per_iteration):
    """On a GPU each of these operators is a device→host copy and a synchronisation; the loop may make one
    (the all-converged flag) per ``check_every`` = 10 iterations, and only when it stops early (``tol``)."""
    x_in, x_ood = _images(3, 1), _images(3, 2)

    def run(steps):
        return lambda: ood_attack(cnn.features, x_in, x_ood, eps=1.0, steps=steps, routine=routine,
                                  keep_best=keep_best, tol=1e-12 if routine == "fast" else None)

    extra = _synchronising_ops(run(40)) - _synchronising_ops(run(20))
    assert extra == per_iteration * 20


def test_normalise_gradient_in_place_overwrites_only_when_asked():
    g = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    before = g.clone()
    out = normalise_gradient(g, "l2")
    assert torch.equal(g, before) and out.data_ptr() != g.data_ptr()
    same = normalise_gradient(g, "l2", in_place=True)
    assert same.data_ptr() == g.data_ptr() and torch.equal(same, out)


def test_a_callable_without_a_module_is_refused_and_an_explicit_module_is_frozen(cnn):
    import functools

    from oodlib.attack import attack_target

    x_in, x_ood = _images(2, 30), _images(2, 31)
    for f in (lambda x: cnn.features(x), functools.partial(cnn.features)):
        with pytest.raises(TypeError, match="module="):
            ood_attack(f, x_in, x_ood, eps=1.0, steps=2)
    flags = []

    def spy(x):
        flags.append((cnn.training, any(p.requires_grad for p in cnn.parameters())))
        return cnn.features(x)

    cnn.train()
    ood_attack(spy, x_in, x_ood, eps=1.0, steps=2, module=cnn)
    assert set(flags) == {(False, False)} and cnn.training  # frozen inside, restored after
    cnn.eval()
    with pytest.raises(TypeError, match="nn.Module"):
        attack_target(cnn.features, module=object())


def test_a_detector_and_a_target_name_select_the_bound_method_and_freeze_the_detector(cnn):
    from oodlib.attack import attack_target
    from oodlib.detectors import make_detector

    odin = make_detector("odin", cnn, temperature=10.0, magnitude=0.002)
    f, module = attack_target(odin, "logits")
    assert f == odin.logits and module is odin
    assert attack_target(odin)[0] is odin
    with pytest.raises(ValueError, match="no attack target 'code'"):
        attack_target(odin, "code")
    with pytest.raises(TypeError, match="needs a detector"):
        attack_target(cnn, "logits")
    x = _images(2, 32)
    via_name = ood_attack(odin, x, _images(2, 33), target="logits", eps=1.0, steps=3, routine="authors")
    via_method = ood_attack(odin.logits, x, _images(2, 33), eps=1.0, steps=3, routine="authors")
    assert torch.equal(via_name.x, via_method.x)


def test_every_routine_has_a_description():
    from oodlib.attack import ROUTINE_DESCRIPTIONS, ROUTINES

    assert set(ROUTINE_DESCRIPTIONS) == set(ROUTINES)


def test_experiment_helpers_default_to_the_reproduction_routine(monkeypatch):
    """The defaults policy (Appendix A): every experiment helper attacks with the authors' routine unless told."""
    import oodlib.sweeps as sweeps
    from oodlib.attack import REPRODUCTION_ROUTINE

    seen = []

    def fake_attack(*args, **kwargs):
        seen.append(kwargs.get("routine"))
        raise StopIteration

    monkeypatch.setattr(sweeps, "ood_attack", fake_attack)
    x = torch.rand(2, 1, 4, 4)
    for options in ({}, {"routine": "fast"}):
        with pytest.raises(StopIteration):
            sweeps.eps_sweep(torch.nn.Flatten(), x, x, [1.0], steps=1, **options)
    assert seen == [REPRODUCTION_ROUTINE, "fast"] and REPRODUCTION_ROUTINE == "authors"


def test_steps_beyond_the_upper_bound_are_refused_before_any_work():
    from oodlib.attack.ood import MAX_STEPS

    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match="at most"):
        ood_attack(nn.Flatten(), x, x, eps=1.0, steps=MAX_STEPS + 1)
