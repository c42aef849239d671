"""The robust detectors of the source papers (oodlib.defenses): ATOM's extra class, outlier mining, BAL's pieces,
the training recipes on tiny data, and the leaderboard machinery."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from oodlib import metrics, store, training
from oodlib.defenses import leaderboard
from oodlib.defenses.atom import ATOM
from oodlib.defenses.bal import BAL, nearest_l1, shuffled_labels, uniform_box_samples
from oodlib.losses import extended_logits, ood_class_cross_entropy, ood_probability, uniform_cross_entropy
from oodlib.detectors import DETECTORS
from oodlib.models import SmallCNN
from oodlib.recipes.atom import mine_outliers


def _tiny(num_classes=3, seed=0):
    torch.manual_seed(seed)
    return SmallCNN(in_channels=1, image_size=8, num_classes=num_classes, width=4, latent_dim=8).eval()


def _images(n, seed, size=8):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------ ATOM


def test_zero_logit_equals_a_k_plus_1_row_head():
    """A (K+1)-row linear head and the K-row head minus its last row, with a zero logit appended, give the same
    softmax (the module docstring's argument)."""
    gen = torch.Generator().manual_seed(0)
    z, w, b = torch.randn(5, 8, generator=gen), torch.randn(4, 8, generator=gen), torch.randn(4, generator=gen)
    full = torch.softmax(z @ w.T + b, dim=1)
    reduced = (z @ (w[:3] - w[3]).T) + (b[:3] - b[3])
    assert torch.allclose(torch.softmax(extended_logits(reduced), dim=1), full, atol=1e-6)
    assert torch.allclose(ood_probability(reduced), full[:, 3], atol=1e-6)
    assert torch.allclose(ood_class_cross_entropy(reduced), -full[:, 3].log(), atol=1e-5)


def test_atom_detector_scores_minus_the_ood_probability():
    model, x = _tiny(), _images(6, 1).requires_grad_(True)
    detector = ATOM(model)
    score = detector.score(x)
    assert score.shape == (6,) and torch.isfinite(score).all() and (score < 0).all()
    assert torch.allclose(score, -torch.softmax(extended_logits(model(x)), 1)[:, -1])
    (grad,) = torch.autograd.grad(score.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert DETECTORS["atom"] is ATOM


class _Lookup(nn.Module):
    """A 'model' whose logsumexp is the first pixel: P(class K) = sigmoid(−pixel) falls with the pixel."""

    def forward(self, x):
        return torch.cat([x.flatten(1)[:, :1], torch.full((len(x), 1), -1e4)], dim=1)


def test_mining_skips_the_lowest_quantile_and_keeps_the_next():
    pool = torch.arange(20.0).view(20, 1, 1, 1).flip(0)  # first pixel 19, 18, ..., 0: P(K) ascending order
    chosen = mine_outliers(_Lookup(), pool, n_keep=5, quantile=0.25)
    assert chosen.tolist() == [5, 6, 7, 8, 9]  # the 5 most ID-like (indices 0..4) are skipped


# ------------------------------------------------------------------------------------------------ BAL


def test_shuffled_labels_always_differ():
    c = torch.randint(0, 4, (500,), generator=torch.Generator().manual_seed(0))
    shuffled = shuffled_labels(c, 4, torch.Generator().manual_seed(1))
    assert (shuffled != c).all() and shuffled.min() >= 0 and shuffled.max() < 4


def test_uniform_box_samples_stay_in_the_batch_box():
    f = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
    samples = uniform_box_samples(f, torch.Generator().manual_seed(1))
    assert samples.shape == f.shape
    assert (samples >= f.min(0).values).all() and (samples <= f.max(0).values).all()


def test_nearest_l1_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    ref, labels = torch.randn(30, 4, generator=gen), torch.randint(0, 3, (30,), generator=gen)
    f, c = torch.randn(7, 4, generator=gen), torch.randint(0, 3, (7,), generator=gen)
    expected = torch.stack([(ref[labels == ci] - fi).abs().sum(1).min() for fi, ci in zip(f, c)])
    assert torch.allclose(nearest_l1(f, c, ref, labels), expected, atol=1e-5)


@pytest.fixture(scope="module")
def fitted_bal():
    model = _tiny()
    x, y = _images(60, 2), torch.arange(60) % 3
    return BAL(model, epochs=2, batch_size=16, hidden=16, noise_dim=4, seed=3).fit(x, y), x, y


def test_bal_score_is_a_probability_and_differentiable(fitted_bal):
    bal, _, _ = fitted_bal
    x = _images(5, 4).requires_grad_(True)
    score = bal.score(x)
    assert score.shape == (5,) and ((score > 0) & (score <= 1)).all()
    (grad,) = torch.autograd.grad(score.sum(), x)
    assert torch.isfinite(grad).all()
    assert len(bal.history["loss_d"]) == 2 * 4 and all(map(lambda v: v == v, bal.history["loss_d"]))


def test_bal_score_is_max_softmax_times_discriminator(fitted_bal):
    bal, _, _ = fitted_bal
    x = _images(5, 11)
    with torch.no_grad():
        p1 = torch.softmax(bal.model(x), 1).amax(1)
        assert torch.allclose(bal.score(x), p1 * bal.discriminator_score(x), atol=1e-6)
    assert torch.allclose(bal.discriminator_score_batched(x, batch_size=2), bal.discriminator_score(x).detach())


def test_bal_fit_is_deterministic_and_leaves_the_classifier_alone(fitted_bal):
    bal, x, y = fitted_bal
    before = {k: v.clone() for k, v in bal.model.state_dict().items()}
    again = BAL(bal.model, epochs=2, batch_size=16, hidden=16, noise_dim=4, seed=3).fit(x, y)
    assert torch.equal(again.score_batched(x), bal.score_batched(x))
    assert all(torch.equal(before[k], v) for k, v in bal.model.state_dict().items())
    assert not bal.model.training


def test_bal_hard_ood_is_one_signed_step(fitted_bal):
    bal, _, _ = fitted_bal
    f, c = torch.randn(6, 8), torch.zeros(6, dtype=torch.long)
    moved = bal.hard_ood(f, c, torch.Generator().manual_seed(0))
    step = (moved - f).abs()
    assert torch.allclose(step, step[:, :1].expand_as(step), atol=1e-6)  # one |ε| per sample, every dimension


# ------------------------------------------------------------------------------------------------ recipes


@pytest.fixture()
def tmp_store(tmp_path, monkeypatch):
    from oodlib import store

    monkeypatch.setenv(store.CACHE_ENV, str(tmp_path))
    return store.ModelStore(tmp_path / "models")


@pytest.mark.parametrize("recipe, options", [
    ("aloe", {"n_outliers": 64, "batch_size": 32}),
    ("atom", {"pool_size": 96, "n_mined": 64, "batch_size": 32, "attack_steps": 2}),
    ("aoe", {"n_outliers": 64, "batch_size": 32, "base_epochs": 1}),
    ("aoe", {"n_outliers": 64, "batch_size": 32, "base_epochs": 1, "eps": 0.0}),
])
def test_recipe_trains_one_epoch_on_tiny_data(tmp_store, recipe, options):
    from oodlib.store import ModelSpec

    assert recipe in training.RECIPES
    spec = ModelSpec.make("small_cnn", "digits", epochs=1, seed=0, recipe=recipe, classes=[0, 1],
                          options={"width": 4, "latent_dim": 8}, recipe_options=options)
    model = tmp_store.get(spec, device="cpu")
    info = tmp_store.info(spec)
    test = store.training_data(spec, "test")
    assert info["test_accuracy"] == training.accuracy(model, test.x, test.y)
    assert math.isfinite(info["final_train_loss"])
    assert not model.training and all(p.requires_grad for p in model.parameters())
    assert torch.isfinite(model(_images(3, 5))).all()


def test_uniform_cross_entropy_is_minimal_for_a_flat_prediction():
    flat, peaked = torch.zeros(1, 4), torch.tensor([[5.0, 0.0, 0.0, 0.0]])
    assert torch.isclose(uniform_cross_entropy(flat), torch.log(torch.tensor(4.0))).all()
    assert uniform_cross_entropy(peaked) > uniform_cross_entropy(flat)
    assert torch.allclose(uniform_cross_entropy(peaked), -F.log_softmax(peaked, 1).mean(1))


# ------------------------------------------------------------------------------------------------ leaderboard


@pytest.fixture(scope="module")
def tiny_board():
    model = _tiny(num_classes=3, seed=1)
    x_train, y_train = _images(30, 6), torch.arange(30) % 3
    data = leaderboard.EvalData(x_in=_images(6, 7), x_ood=_images(6, 8), x_noise=_images(5, 9),
                                x_train=x_train, y_train=y_train)
    settings = leaderboard.ThreatSettings(atom_steps=2, aloe_steps=2, ood_eps=1.0, ood_steps=3)
    missing = leaderboard.Row("absent", "standard", "absent", "oodlib.detectors.not_a_module", "")
    board = leaderboard.run(["MSP", "ATOM", "BAL", missing], {"standard": model, "atom": model},
                            {"standard": 0.5, "atom": 0.5}, data, settings,
                            detector_options={"BAL": {"epochs": 1, "hidden": 8, "noise_dim": 4}})
    return board


def test_leaderboard_fills_every_cell(tiny_board):
    assert list(tiny_board.outcomes) == ["MSP", "ATOM", "BAL"]
    for cells in tiny_board.outcomes.values():
        assert list(cells) == list(leaderboard.THREATS)
        for outcome in cells.values():
            assert outcome.auroc == metrics.auroc(outcome.score_in, outcome.score_out)
            assert outcome.fpr95 == metrics.fpr_at_95_tpr(outcome.score_in, outcome.score_out, "A")
            assert outcome.score_out.shape[0] == outcome.x_out.shape[0]
            assert outcome.x_out.shape[1:] == (1, 8, 8)
    rows = tiny_board.table_rows(leaderboard.THREATS)
    assert len(rows) == 3 and len(rows[0]) == 2 + len(leaderboard.THREATS)
    assert sorted(leaderboard.SMALL_BALL_TABLE + leaderboard.OOD_ATTACK_TABLE) == sorted(leaderboard.THREATS)
    ood_rows = tiny_board.table_rows(leaderboard.OOD_ATTACK_TABLE, accuracy=False)
    assert ood_rows[0] == [rows[0][0], *(tiny_board.cell(rows[0][0], t) for t in leaderboard.OOD_ATTACK_TABLE)]
    assert "absent" in tiny_board.missing


def test_attacks_on_one_model_are_shared_between_rows(tiny_board):
    msp, bal = tiny_board.outcomes["MSP"], tiny_board.outcomes["BAL"]
    assert msp["ood_features"].x_out is bal["ood_features"].x_out
    assert msp["atom_pgd"].x_out is not bal["atom_pgd"].x_out


def test_adaptive_target_appends_the_weighted_score():
    model = _tiny()
    detector = ATOM(model)
    target = leaderboard.AdaptiveTarget(model, detector, weight=3.0)
    x = _images(4, 10)
    out = target(x)
    assert out.shape == (4, model.latent_dim + 1) and out.dtype == torch.float32
    assert torch.allclose(out[:, -1], 3.0 * detector.score(x))


def test_model_specs_share_the_plain_classifier():
    specs = leaderboard.model_specs("small_cnn", "digits", seed=0, epochs=2, oe_epochs=1, aloe_epochs=1,
                                    atom_epochs=1, aoe_epochs=1, n_outliers=10)
    assert {row.model for row in leaderboard.ROWS.values()} <= set(specs)
    for key in ("aloe", "atom", "aoe", "oe_finetune"):
        assert specs[key].option("base_epochs") == specs["standard"].epochs
    scratch = leaderboard.model_specs("small_cnn", "digits", seed=0, epochs=2, oe_epochs=1, aloe_epochs=1,
                                      atom_epochs=1, aoe_epochs=1, n_outliers=10, fine_tune=False)
    assert scratch["atom"].option("base_epochs") == 0 and scratch["atom"].option("lr") is None
    with pytest.raises(ValueError, match="one start image per ID image"):
        leaderboard.EvalData(_images(3, 0), _images(2, 1), _images(2, 2), _images(3, 3), torch.zeros(3))


def test_unknown_rows_and_threats_are_rejected(tiny_board):
    with pytest.raises(ValueError, match="unknown leaderboard rows"):
        leaderboard.run(["NotADetector"], {}, {}, None, leaderboard.ThreatSettings())
    with pytest.raises(ValueError, match="unknown threats"):
        leaderboard.evaluate_row(None, None, None, leaderboard.ThreatSettings(), ["pgd"])
