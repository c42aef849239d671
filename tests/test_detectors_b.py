"""Outlier Exposure (Appendix E), Deep Ensembles (Appendix F) and confidence-calibrated classifiers (Appendix G):
scores and their signs, input gradients, the training objectives, the three recipes on tiny data, and the attack
targets of the paper's appendices."""

import math

import pytest
import torch
import torch.nn.functional as F

from oodlib.attack import ood_attack
from oodlib.data import ImageSet
from oodlib.detectors import DETECTORS, make_detector
from oodlib.detectors.confidence import ConfidenceCalibrated, classifier_input
from oodlib.detectors.ensemble import DeepEnsemble, EnsembleClassifier, mean_log_probabilities, predictive_entropy
from oodlib.detectors.outlier_exposure import OutlierExposure
from oodlib.losses import confidence_loss, kl_from_uniform, outlier_exposure_loss, uniform_cross_entropy
from oodlib.recipes.common import outlier_pool
from oodlib.recipes.confidence import Discriminator, Generator, train_confidence_calibrated
from oodlib.recipes.ensemble import fgsm_examples, member_specs, train_ensemble_member
from oodlib.recipes.outlier_exposure import train_outlier_exposure
from oodlib.models import MLP, SmallCNN, SmallResNet
from oodlib.store import ModelSpec
from oodlib.training import RECIPES

SIZE, CLASSES = 12, 4


def _images(n: int, seed: int, fill: float | None = None) -> torch.Tensor:
    if fill is not None:
        return torch.full((n, 1, SIZE, SIZE), float(fill))
    return torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _cnn(seed: int = 0, norm: str = "batch") -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN(in_channels=1, image_size=SIZE, num_classes=CLASSES, width=4, latent_dim=8, norm=norm).eval()


def _tiny_train(n: int = 16) -> ImageSet:
    return ImageSet(_images(n, 3), torch.arange(n) % CLASSES, tuple(str(c) for c in range(CLASSES)), "tiny:train")


def _spec(recipe: str, **recipe_options) -> ModelSpec:
    return ModelSpec.make("small_cnn", "digits", recipe=recipe, epochs=1, seed=0,
                          options={"width": 4, "latent_dim": 8}, recipe_options={"batch_size": 8, **recipe_options})


INPUTS = {"noise": _images(5, 2), "black": _images(5, 0, fill=0.0), "white": _images(5, 0, fill=1.0)}


def _detectors() -> dict[str, torch.nn.Module]:
    return {"outlier_exposure": OutlierExposure(_cnn()),
            "deep_ensemble": DeepEnsemble([_cnn(0), _cnn(1), _cnn(2)]),
            "confidence_calibrated": ConfidenceCalibrated(_cnn(norm="none"))}


def test_the_three_detectors_are_registered():
    assert {"outlier_exposure", "deep_ensemble", "confidence_calibrated"} <= set(DETECTORS)
    assert isinstance(make_detector("deep_ensemble", [_cnn(0), _cnn(1)]), DeepEnsemble)


@pytest.mark.parametrize("name", ["outlier_exposure", "deep_ensemble", "confidence_calibrated"])
@pytest.mark.parametrize("kind", sorted(INPUTS))
def test_score_has_one_finite_value_and_a_finite_input_gradient_per_image(name, kind):
    detector = _detectors()[name]
    x = INPUTS[kind].clone().requires_grad_(True)
    score = detector.score(x)
    assert score.shape == (5,) and torch.isfinite(score).all()
    (grad,) = torch.autograd.grad(score.sum(), x)
    assert grad.shape == x.shape and torch.isfinite(grad).all()
    assert torch.allclose(detector.score_batched(x.detach(), batch_size=2), score.detach(), atol=1e-6)


# --------------------------------------------------------------------------------------------------- Appendix E


def test_uniform_cross_entropy_is_log_k_for_a_flat_softmax_and_grows_with_confidence():
    flat = torch.zeros(1, CLASSES)
    peaked = torch.tensor([[8.0, 0.0, 0.0, 0.0]])
    assert uniform_cross_entropy(flat).item() == pytest.approx(math.log(CLASSES))
    manual = -(torch.log_softmax(peaked, 1)).mean()
    assert uniform_cross_entropy(peaked).item() == pytest.approx(manual.item(), rel=1e-6)
    assert uniform_cross_entropy(peaked) > uniform_cross_entropy(flat)


def test_outlier_exposure_in_score_negates_the_reference_ood_score():
    """Reference: OOD score mean(l) − logsumexp(l); the in-score is its negation, higher for a peaked softmax."""
    model = _cnn()
    x = INPUTS["noise"]
    logits = model(x)
    reference_ood_score = logits.mean(1) - torch.logsumexp(logits, 1)
    assert torch.allclose(OutlierExposure(model).score(x), -reference_ood_score, atol=1e-6)


def test_outlier_exposure_loss_adds_half_the_uniform_cross_entropy_of_the_outliers():
    gen = torch.Generator().manual_seed(0)
    logits_in, logits_out = torch.randn(6, CLASSES, generator=gen), torch.randn(12, CLASSES, generator=gen)
    y = torch.arange(6) % CLASSES
    expected = F.cross_entropy(logits_in, y) + 0.5 * (torch.logsumexp(logits_out, 1) - logits_out.mean(1)).mean()
    assert outlier_exposure_loss(logits_in, y, logits_out).item() == pytest.approx(expected.item(), rel=1e-6)


def test_outlier_pool_has_the_training_geometry_and_is_seeded():
    train, spec = _tiny_train(), _spec("outlier_exposure", n_outliers=6)
    pool = outlier_pool(spec.option("n_outliers"), train, seed=spec.seed)
    assert pool.shape == (6, 1, SIZE, SIZE) and pool.min() >= 0 and pool.max() <= 1
    assert torch.equal(pool, outlier_pool(6, train, seed=spec.seed))
    assert not torch.equal(pool, outlier_pool(6, train, seed=spec.seed + 1))


def test_outlier_exposure_recipe_trains_one_epoch_and_pushes_outliers_towards_uniform():
    assert RECIPES["outlier_exposure"] is train_outlier_exposure
    model, train = _cnn(), _tiny_train()
    before = [p.detach().clone() for p in model.parameters()]
    facts = train_outlier_exposure(model, train, _spec("outlier_exposure", n_outliers=8), torch.device("cpu"))
    assert facts["n_outliers"] == 8 and math.isfinite(facts["final_train_loss"])
    assert facts["final_outlier_loss"] >= math.log(CLASSES) - 1e-5
    assert not model.training
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


# --------------------------------------------------------------------------------------------------- Appendix F


def test_mean_log_probabilities_is_the_log_of_the_average_softmax():
    logits = torch.randn(3, 5, CLASSES, generator=torch.Generator().manual_seed(0))
    expected = torch.softmax(logits, -1).mean(0).log()
    assert torch.allclose(mean_log_probabilities(logits), expected, atol=1e-6)


def test_mean_log_probabilities_stays_finite_when_a_softmax_underflows():
    logits = torch.tensor([[[1000.0, 0.0]], [[1000.0, 0.0]]])
    log_p = mean_log_probabilities(logits)
    assert torch.isfinite(log_p).all() and torch.isfinite(predictive_entropy(log_p)).all()


def test_ensemble_in_score_is_minus_the_entropy_of_the_mean_softmax():
    members = [_cnn(0), _cnn(1)]
    x = INPUTS["noise"]
    p = (torch.softmax(members[0](x), 1) + torch.softmax(members[1](x), 1)) / 2
    expected = (p * p.log()).sum(1)
    assert torch.allclose(DeepEnsemble(members).score(x), expected, atol=1e-5)


def test_an_ensemble_of_copies_scores_like_one_member():
    member = _cnn(0)
    x = INPUTS["noise"]
    p = torch.softmax(member(x), 1)
    assert torch.allclose(DeepEnsemble([member, member]).score(x), (p * p.log()).sum(1), atol=1e-5)


def test_entropy_is_log_k_for_a_flat_prediction():
    log_p = torch.full((2, CLASSES), -math.log(CLASSES))
    assert torch.allclose(predictive_entropy(log_p), torch.full((2,), math.log(CLASSES)))


def test_ensemble_classifier_outputs_and_attack_target_shapes():
    ensemble = EnsembleClassifier([_cnn(0), _cnn(1), _cnn(2)])
    x = INPUTS["noise"]
    assert ensemble.member_logits(x).shape == (3, 5, CLASSES)
    assert ensemble.concatenated_logits(x).shape == (5, 3 * CLASSES)
    assert torch.allclose(ensemble(x).exp().sum(1), torch.ones(5), atol=1e-5)
    assert torch.equal(ensemble.concatenated_logits(x)[:, CLASSES:2 * CLASSES], ensemble.members[1](x))
    with pytest.raises(ValueError):
        EnsembleClassifier([])


def test_member_specs_differ_only_in_their_seeds():
    spec = _spec("standard")
    specs = member_specs(spec, 3)
    assert [s.seed for s in specs] == [0, 1, 2]
    assert all(s.recipe == spec.recipe and s.options == spec.options for s in specs)
    with pytest.raises(ValueError):
        member_specs(spec, 0)


def test_fgsm_examples_stay_in_the_box_and_move_by_eps():
    model, x = _cnn(), _images(4, 5) * 0.5 + 0.25
    y = torch.arange(4) % CLASSES
    x_adv = fgsm_examples(model.train(), x, y, 0.01)
    assert not x_adv.requires_grad and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max().item() == pytest.approx(0.01, abs=1e-6)


def test_deep_ensemble_recipe_trains_one_epoch():
    assert RECIPES["deep_ensemble"] is train_ensemble_member
    model = _cnn()
    before = [p.detach().clone() for p in model.parameters()]
    facts = train_ensemble_member(model, _tiny_train(), _spec("deep_ensemble"), torch.device("cpu"))
    assert math.isfinite(facts["final_train_loss"]) and not model.training
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_the_attack_runs_on_the_concatenated_logits_and_restores_the_members():
    detector = DeepEnsemble([_cnn(0), _cnn(1)])
    result = ood_attack(detector.model.concatenated_logits, INPUTS["noise"][:2], INPUTS["black"][:2], eps=1.0,
                        steps=3, seed=0)
    assert result.x.shape == (2, 1, SIZE, SIZE) and result.z_target.shape == (2, 2 * CLASSES)
    assert all(p.requires_grad for p in detector.parameters())


# --------------------------------------------------------------------------------------------------- Appendix G


def test_kl_from_uniform_is_zero_for_a_flat_softmax_and_matches_the_definition():
    assert kl_from_uniform(torch.zeros(2, CLASSES)).abs().max() < 1e-6
    logits = torch.randn(3, CLASSES, generator=torch.Generator().manual_seed(0))
    p = torch.softmax(logits, 1)
    u = torch.full_like(p, 1 / CLASSES)
    assert torch.allclose(kl_from_uniform(logits), (u * (u.log() - p.log())).sum(1), atol=1e-6)
    # the reference's form: F.kl_div with the (old default) mean over all N·K entries, times K
    reference = F.kl_div(torch.log_softmax(logits, 1), u, reduction="sum") / u.numel() * CLASSES
    assert kl_from_uniform(logits).mean().item() == pytest.approx(reference.item(), rel=1e-5)


def test_confidence_loss_is_nll_plus_beta_kl():
    gen = torch.Generator().manual_seed(0)
    logits_in, logits_gen = torch.randn(4, CLASSES, generator=gen), torch.randn(4, CLASSES, generator=gen)
    y = torch.arange(4) % CLASSES
    expected = F.cross_entropy(logits_in, y) + 0.1 * kl_from_uniform(logits_gen).mean()
    assert confidence_loss(logits_in, y, logits_gen, 0.1).item() == pytest.approx(expected.item(), rel=1e-6)


def test_confidence_calibrated_score_is_the_maximum_softmax():
    model = _cnn()
    x = INPUTS["noise"]
    assert torch.allclose(ConfidenceCalibrated(model).score(x), make_detector("msp", model).score(x))


def test_classifier_input_is_the_pooled_last_convolutional_map():
    x = INPUTS["noise"]
    cnn = _cnn()
    assert torch.allclose(classifier_input(cnn, x), cnn.feature_maps(x)[2].mean(dim=(2, 3)))
    assert classifier_input(cnn, x).shape == (5, 16)  # 4·width channels, the input of embed + head
    torch.manual_seed(0)
    resnet = SmallResNet(1, SIZE, CLASSES, width=4).eval()
    assert torch.allclose(classifier_input(resnet, x), resnet.features(x))
    mlp = MLP(1, SIZE, CLASSES, hidden=(8,)).eval()
    assert torch.equal(classifier_input(mlp, x), x.flatten(1))


def test_generator_and_discriminator_shapes():
    generator, discriminator = Generator(6, 1, SIZE, width=4), Discriminator(1, SIZE, width=4)
    images = generator(torch.randn(3, 6))
    assert images.shape == (3, 1, SIZE, SIZE) and images.min() >= 0 and images.max() <= 1
    assert discriminator(images).shape == (3,)
    with pytest.raises(ValueError):
        Generator(6, 1, 10)


def test_confidence_calibrated_recipe_trains_one_epoch_and_is_deterministic():
    assert RECIPES["confidence_calibrated"] is train_confidence_calibrated
    spec = _spec("confidence_calibrated", gan_latent=6, gan_width=4)
    models = [_cnn(), _cnn()]
    before = [p.detach().clone() for p in models[0].parameters()]
    facts = [train_confidence_calibrated(m, _tiny_train(), spec, torch.device("cpu")) for m in models]
    assert all(math.isfinite(facts[0][k]) for k in ("final_train_loss", "final_kl_generated",
                                                    "final_discriminator_loss"))
    assert not models[0].training
    assert any(not torch.equal(a, b) for a, b in zip(before, models[0].parameters()))
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        assert torch.equal(a, b)
