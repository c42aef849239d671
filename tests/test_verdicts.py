"""The reproduction rule (oodlib.verdicts): one test per branch, and the in-distribution-likeness measurement."""

import pytest
import torch

from oodlib import metrics, verdicts
from oodlib.verdicts import NOT_REPRODUCED, NOT_TESTABLE, REPRODUCED, auroc_verdict, mape_verdict, ood_check


def test_auroc_claim_reproduced_when_caught_clean_and_near_the_paper_after_the_attack():
    verdict = auroc_verdict(0.5, clean=0.97, attacked=0.58)
    assert verdict.label == REPRODUCED and str(verdict) == REPRODUCED
    assert auroc_verdict(0.5, clean=0.8, attacked=0.6).label == REPRODUCED  # both limits are inclusive


def test_auroc_claim_not_reproduced_when_the_attack_leaves_the_detector_working():
    verdict = auroc_verdict(0.5, clean=1.0, attacked=0.75)
    assert verdict.label == NOT_REPRODUCED and "more than 0.1" in verdict.reason


def test_auroc_claim_not_testable_when_no_start_offered_is_caught():
    verdict = auroc_verdict(0.5, clean=0.0, attacked=0.52, clean_offered=[0.51, 0.79])
    assert verdict.label == NOT_TESTABLE and "does not catch" in verdict.reason
    assert auroc_verdict(0.5, clean=0.3, attacked=0.5).label == NOT_TESTABLE


def test_auroc_claim_not_reproduced_when_another_offered_start_is_caught():
    verdict = auroc_verdict(0.5, clean=0.0, attacked=0.52, clean_offered=[0.51, 0.93])
    assert verdict.label == NOT_REPRODUCED and "0.930" in verdict.reason


def test_auroc_claim_with_in_distribution_like_images_never_counts():
    verdict = auroc_verdict(0.5, clean=1.0, attacked=0.5, id_like=True)
    assert verdict.label == NOT_REPRODUCED and "in-distribution-like" in verdict.reason


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_auroc_verdict_refuses_non_finite_values(bad):
    with pytest.raises(ValueError, match="attacked"):
        auroc_verdict(0.5, clean=0.9, attacked=bad)
    with pytest.raises(ValueError, match="clean_offered"):
        auroc_verdict(0.5, clean=0.1, attacked=0.5, clean_offered=[bad])


def test_mape_claim_needs_half_the_pairs_below_one_tenth_of_a_percent():
    assert mape_verdict([1e-4, 5e-4, 2e-3, 3e-2]).label == REPRODUCED  # exactly half
    verdict = mape_verdict(torch.tensor([1e-4, 2e-3, 3e-2]))
    assert verdict.label == NOT_REPRODUCED and verdict.reason.startswith("33.3% of 3 pairs")
    assert mape_verdict([1e-3]).label == NOT_REPRODUCED  # "less than 0.1%" is strict
    with pytest.raises(metrics.MetricInputError, match="empty"):
        mape_verdict([])


def _cluster(n, centre, spread, seed):
    g = torch.Generator().manual_seed(seed)
    return (centre + spread * torch.randn(n, 1, 4, 4, generator=g)).clamp(0, 1)


def _bars(n: int, column: int, spread: float, seed: int) -> torch.Tensor:
    """n 4×4 images: a bright vertical bar in ``column`` on a dark ground, plus Gaussian noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((n, 1, 4, 4), 0.1)
    x[..., column] = 0.9
    return (x + spread * torch.randn(n, 1, 4, 4, generator=g)).clamp(0, 1)


def test_ood_check_flags_images_that_moved_into_the_training_set():
    train, test = _bars(200, 1, 0.05, 0), _bars(50, 1, 0.05, 1)
    far = torch.eye(4).repeat(10, 1, 1, 1)  # a diagonal: another pattern
    check = ood_check(far, train, test)
    assert check.fraction_id_like == 0.0 and not check.id_like
    assert torch.equal(check.distance, metrics.nearest_image_distance(far, train, standardize=True))
    reference = metrics.nearest_image_distance(test, train, standardize=True)
    assert check.threshold == float(torch.quantile(reference, verdicts.ID_LIKE_QUANTILE))
    near = ood_check(train[:10] + 0.001, train, test)  # copies of training images
    assert near.fraction_id_like == 1.0 and near.id_like
    mixed = ood_check(torch.cat([far[:5], train[:5]]), train, test)
    assert mixed.fraction_id_like == 0.5 and not mixed.id_like  # "more than half" is strict


def test_ood_check_judges_the_pattern_not_the_contrast():
    """A faint copy of the OOD pattern is as OOD as the bright one and a faint copy of an ID image is ID-like (the
    raw pixel distance judges faint images by their small values: the mean-matched noise case)."""
    train, test = _bars(200, 1, 0.05, 0), _bars(50, 1, 0.05, 1)
    faint_ood = 0.1 + 0.05 * torch.eye(4).repeat(10, 1, 1, 1)
    assert ood_check(faint_ood, train, test).fraction_id_like == 0.0
    assert ood_check(0.1 + 0.1 * train[:10], train, test).fraction_id_like == 1.0


def test_ood_check_refuses_empty_batches():
    x = torch.rand(3, 1, 4, 4)
    for args, name in (((x[:0], x, x), "x_attacked"), ((x, x[:0], x), "x_train"), ((x, x, x[:0]), "x_id_test")):
        with pytest.raises(ValueError, match=name):
            ood_check(*args)
