"""Tests of oodlib.metrics; scikit-learn serves as the oracle for AUROC and AUPR."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from oodlib.metrics import (
    MetricInputError,
    aupr_in,
    aupr_out,
    auroc,
    detection_summary,
    fpr_at_95_tpr,
    mape,
    mape_fraction_below,
)


def _random_scores(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random ID/OOD scores of random sizes; every other case is heavily tied."""
    rng = np.random.default_rng(seed)
    n_in, n_out = rng.integers(1, 60, size=2)
    shift = rng.normal(0.0, 1.0)
    s_in = rng.normal(shift, 1.0, n_in)
    s_out = rng.normal(0.0, 1.0, n_out)
    if seed % 2:
        s_in, s_out = np.round(s_in), np.round(s_out)  # a handful of distinct values
    return s_in, s_out


def _labels(s_in: np.ndarray, s_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels with ID = 1 and the pooled in-scores."""
    return np.r_[np.ones(s_in.size), np.zeros(s_out.size)], np.r_[s_in, s_out]


def _sklearn_fpr95(positive: np.ndarray, negative: np.ndarray) -> float:
    """FPR at the first point of sklearn's full ROC curve whose TPR reaches 0.95."""
    y, s = _labels(positive, negative)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return float(fpr[np.searchsorted(tpr, 0.95 - 1e-12, side="left")])


@pytest.mark.parametrize("seed", range(60))
def test_auroc_and_aupr_match_sklearn(seed: int) -> None:
    s_in, s_out = _random_scores(seed)
    y, s = _labels(s_in, s_out)
    assert auroc(s_in, s_out) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert aupr_in(s_in, s_out) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert aupr_out(s_in, s_out) == pytest.approx(average_precision_score(1 - y, -s), abs=1e-12)


@pytest.mark.parametrize("seed", range(60))
def test_fpr95_matches_sklearn_roc_curve(seed: int) -> None:
    s_in, s_out = _random_scores(seed)
    assert fpr_at_95_tpr(s_in, s_out, "A") == pytest.approx(_sklearn_fpr95(s_in, s_out))
    assert fpr_at_95_tpr(s_in, s_out, "B") == pytest.approx(_sklearn_fpr95(-s_out, -s_in))


def test_fpr95_convention_a_by_hand() -> None:
    # 20 ID scores 1..20: keeping 95% (19 of 20) puts the threshold at 2.
    s_in = np.arange(1.0, 21.0)
    s_out = np.array([0.0, 1.5, 2.0, 2.5, 30.0])  # 2.0, 2.5 and 30 are accepted
    assert fpr_at_95_tpr(s_in, s_out, "A") == pytest.approx(3 / 5)
    assert fpr_at_95_tpr(s_in, s_out) == fpr_at_95_tpr(s_in, s_out, "A")


def test_fpr95_convention_b_by_hand() -> None:
    # 20 OOD scores 1..20: catching 95% (19 of 20) puts the threshold at 19.
    s_out = np.arange(1.0, 21.0)
    s_in = np.array([0.0, 18.0, 19.0, 19.5, 25.0])  # 0, 18 and 19 are rejected
    assert fpr_at_95_tpr(s_in, s_out, "B") == pytest.approx(3 / 5)


def test_fpr95_conventions_differ_on_same_scores() -> None:
    s_in = np.r_[np.full(95, 10.0), np.zeros(5)]  # 5% of ID look like OOD
    s_out = np.zeros(100)
    assert fpr_at_95_tpr(s_in, s_out, "A") == 0.0
    assert fpr_at_95_tpr(s_in, s_out, "B") == pytest.approx(0.05)


def test_fpr95_unknown_convention_names_both() -> None:
    with pytest.raises(ValueError, match='"A" or "B"'):
        fpr_at_95_tpr([1.0, 2.0], [0.0], convention="C")


def test_identical_distributions_give_half() -> None:
    rng = np.random.default_rng(0)
    assert auroc(rng.normal(size=4000), rng.normal(size=4000)) == pytest.approx(0.5, abs=0.02)
    assert auroc(np.full(7, 3.0), np.full(5, 3.0)) == 0.5


def test_perfect_and_reversed_separation() -> None:
    s_in, s_out = np.array([2.0, 3.0, 4.0]), np.array([-1.0, 0.0])
    assert auroc(s_in, s_out) == 1.0
    assert auroc(s_out, s_in) == 0.0
    assert aupr_in(s_in, s_out) == 1.0
    assert aupr_out(s_in, s_out) == 1.0
    assert fpr_at_95_tpr(s_in, s_out, "A") == 0.0
    assert fpr_at_95_tpr(s_in, s_out, "B") == 0.0


def test_detection_summary_keys_and_values() -> None:
    s_in, s_out = _random_scores(3)
    summary = detection_summary(s_in, s_out)
    assert set(summary) == {"auroc", "aupr_in", "aupr_out", "fpr95_A", "fpr95_B"}
    assert summary["auroc"] == auroc(s_in, s_out)
    assert summary["fpr95_B"] == fpr_at_95_tpr(s_in, s_out, "B")
    assert all(isinstance(v, float) for v in summary.values())


def test_torch_and_list_inputs() -> None:
    s_in = torch.tensor([0.9, 0.8, 0.3], requires_grad=True)
    s_out = torch.tensor([0.1, 0.35], dtype=torch.float64)
    expected = auroc([0.9, 0.8, 0.3], [0.1, 0.35])
    assert auroc(s_in, s_out) == pytest.approx(expected)
    assert expected == pytest.approx(5 / 6)
    assert isinstance(detection_summary(s_in * 2, s_out)["aupr_in"], float)


@pytest.mark.parametrize(
    ("bad", "pattern"),
    [
        ([0.1, float("nan"), float("nan")], "score_out has 2 NaN and 0 inf"),
        ([0.1, float("inf")], "score_out has 0 NaN and 1 inf"),
        ([], "score_out is empty"),
        ([[0.1, 0.2]], "score_out must be 1-D"),
        (["a"], "score_out must hold real numbers"),
    ],
)
def test_bad_scores_raise_naming_argument(bad: list, pattern: str) -> None:
    for fn in (auroc, aupr_in, aupr_out, fpr_at_95_tpr, detection_summary):
        with pytest.raises(MetricInputError, match=pattern):
            fn([0.5, 0.6], bad)


def test_bad_score_in_is_named() -> None:
    with pytest.raises(MetricInputError, match="score_in has 1 NaN"):
        auroc(torch.tensor([float("nan"), 1.0]), [0.0])


def test_metric_input_error_is_value_error() -> None:
    assert issubclass(MetricInputError, ValueError)


def test_mape_zero_for_identical() -> None:
    z = np.random.default_rng(1).normal(size=(4, 16))
    np.testing.assert_array_equal(mape(z, z), np.zeros(4))


def test_mape_hand_example() -> None:
    z_in = np.array([[1.0, -4.0, 2.0, 0.0]])
    z_out = np.array([[1.5, -4.0, 1.0, 0.5]])
    # mean |diff| = (0.5 + 0 + 1 + 0.5) / 4 = 0.5; max |z_in| = 4.
    np.testing.assert_allclose(mape(z_out, z_in), [0.125])


def test_mape_shape_for_images() -> None:
    rng = np.random.default_rng(2)
    z_in = rng.normal(size=(5, 3, 4, 4))
    out = mape(z_in + 0.01, z_in)
    assert isinstance(out, np.ndarray) and out.shape == (5,)
    expected = 0.01 / np.abs(z_in.reshape(5, -1)).max(axis=1)
    np.testing.assert_allclose(out, expected)


def test_mape_torch_in_torch_out() -> None:
    z_in = torch.randn(3, 8, requires_grad=True)
    z_out = z_in.detach() + 0.1
    out = mape(z_out, z_in)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (3,) and out.device == z_in.device and not out.requires_grad
    np.testing.assert_allclose(out.numpy(), mape(z_out.numpy(), z_in.detach().numpy()))


def test_mape_zero_denominator_is_floored() -> None:
    out = mape(np.ones((1, 3)), np.zeros((1, 3)))
    assert np.isfinite(out).all() and out[0] == pytest.approx(1e12)


@pytest.mark.parametrize(
    ("z_out", "z_in", "pattern"),
    [
        (np.ones((2, 3)), np.ones((2, 4)), "same shape"),
        (np.ones(3), np.ones(3), "z_out must have shape \\(N, ...\\)"),
        (np.full((2, 3), np.nan), np.ones((2, 3)), "z_out has 6 NaN"),
        (np.ones((2, 3)), np.r_[[[1.0, np.inf, 1.0]], np.ones((1, 3))], "z_in has 0 NaN and 1 inf"),
        (np.ones((0, 3)), np.ones((0, 3)), "z_out is empty"),
    ],
)
def test_mape_bad_input(z_out: np.ndarray, z_in: np.ndarray, pattern: str) -> None:
    with pytest.raises(MetricInputError, match=pattern):
        mape(z_out, z_in)


def test_mape_fraction_below() -> None:
    values = np.array([0.0, 5e-4, 9.99e-4, 1e-3, 0.2])
    assert mape_fraction_below(values) == pytest.approx(3 / 5)
    assert mape_fraction_below(torch.tensor(values), threshold=0.5) == 1.0
    with pytest.raises(MetricInputError, match="mape_values has 1 NaN"):
        mape_fraction_below([np.nan, 0.1])


def test_mape_tensor_matches_mape():
    from oodlib.metrics import mape_tensor

    g = torch.Generator().manual_seed(0)
    z_in, z_out = torch.randn(5, 3, 4, generator=g), torch.randn(5, 3, 4, generator=g)
    torch.testing.assert_close(mape_tensor(z_out, z_in).double(), mape(z_out, z_in))


def test_standardized_distance_is_the_correlation_distance_and_ignores_brightness_and_contrast():
    from oodlib.metrics import nearest_image_distance, standardize_images

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(1, 1, 5, 5, generator=g), torch.rand(1, 1, 5, 5, generator=g)
    r = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]
    d = nearest_image_distance(a, b, standardize=True)
    assert torch.allclose(d, torch.sqrt(2 * (1 - r.double())).reshape(1), atol=1e-5)
    assert torch.allclose(nearest_image_distance(0.2 + 0.1 * a, 0.9 * a, standardize=True),
                          torch.zeros(1, dtype=torch.float64), atol=1e-3)
    assert torch.equal(standardize_images(torch.full((1, 4), 0.3)), torch.zeros(1, 4))  # a constant image


def test_auroc_standard_error_matches_hanley_mcneil_and_the_sampling_spread():
    from oodlib.metrics import auroc_standard_error

    # Hanley & McNeil (1982), their worked example: A = 0.893 on 58 abnormal and 51 normal cases, SE ≈ 0.032
    assert auroc_standard_error(0.893, 58, 51) == pytest.approx(0.032, abs=1e-3)
    assert auroc_standard_error(1.0, 10, 10) == 0.0
    # the spread of AUROCs of one pair of score distributions over repeated samples of 100 against 100
    rng = np.random.default_rng(0)
    values = [auroc(rng.normal(1.35, 1, 100), rng.normal(0, 1, 100)) for _ in range(2000)]
    assert np.std(values) == pytest.approx(auroc_standard_error(np.mean(values), 100, 100), rel=0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        auroc_standard_error(1.2, 10, 10)
    with pytest.raises(ValueError, match="at least 1"):
        auroc_standard_error(0.5, 0, 10)
