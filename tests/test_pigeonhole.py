"""Tests of the Section 2.2 counting argument (oodlib.pigeonhole)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from oodlib.pigeonhole import (
    PAPER_ENCODERS,
    SPACE_TABLE_COLUMNS,
    EncoderSpace,
    coverage_curves,
    coverage_figure,
    coverage_probability,
    coverage_probability_asymptotic,
    encoder_space,
    format_count,
    log2_space_ratio,
    log_coverage_from_log2_sizes,
    nearest_code_mape,
    paper_scale_coverage,
    simulate_coverage,
    simulation_table,
    space_table,
    spec_encoder_space,
    stirling2,
)


def brute_force_coverage(m: int, n: int) -> float:
    """Fraction of the n**m placements of m points on n spots that hit every spot."""
    hits = sum(len(set(p)) == n for p in itertools.product(range(n), repeat=m))
    return hits / n**m


def test_log2_space_ratio_paper_resnet18():
    assert log2_space_ratio(224 * 224 * 3, 8, 512) == 32 * 512 - 8 * 150528
    assert PAPER_ENCODERS[0].log2_ratio == -1187840


@pytest.mark.parametrize(
    ("n", "k", "expected"),
    [(0, 0, 1), (5, 0, 0), (3, 5, 0), (5, 1, 1), (5, 2, 15), (5, 3, 25), (6, 3, 90), (10, 3, 9330), (10, 5, 42525)],
)
def test_stirling2_table(n, k, expected):
    assert stirling2(n, k) == expected


def test_stirling2_recurrence():
    for n in range(1, 15):
        for k in range(1, n + 1):
            assert stirling2(n, k) == k * stirling2(n - 1, k) + stirling2(n - 1, k - 1)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("m", [0, 1, 2, 3, 4, 5, 6])
def test_coverage_matches_brute_force_and_stirling(m, n):
    p = coverage_probability(m, n)
    assert p == pytest.approx(brute_force_coverage(m, n), rel=1e-15, abs=0)
    assert p == math.factorial(n) * stirling2(m, n) / n**m


@pytest.mark.parametrize(("m", "n"), [(60, 30), (400, 50), (2000, 300), (1500, 1000), (4000, 500)])
def test_coverage_mpmath_path_matches_exact(m, n):
    exact = math.factorial(n) * stirling2(m, n) / n**m
    assert coverage_probability(m, n) == pytest.approx(exact, rel=1e-13)


@pytest.mark.parametrize(("m", "n"), [(8, 4), (20, 8), (60, 20)])
def test_coverage_agrees_with_simulation(m, n):
    p = coverage_probability(m, n)
    trials = 20000
    estimate = simulate_coverage(m, n, trials, seed=1)
    assert abs(estimate - p) < 5 * math.sqrt(p * (1 - p) / trials) + 1e-12


def test_simulation_is_deterministic():
    assert simulate_coverage(20, 8, 500, seed=3) == simulate_coverage(20, 8, 500, seed=3)


def test_coverage_zero_below_spots():
    assert coverage_probability(9, 10) == 0.0
    assert coverage_probability(10**6 - 1, 10**6) == 0.0


def test_coverage_monotone_in_points():
    values = [coverage_probability(m, 50) for m in range(40, 800, 20)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert values[0] == 0.0 and values[-1] > 0.99


@pytest.mark.parametrize(
    ("m", "n"),
    [(10**9, 10**6), (14 * 10**6, 10**6), (2 * 10**6, 10**6), (10**18, 10**15), (2**1204224, 2**16384), (10**20, 7)],
    ids=["1e9-on-1e6", "threshold-1e6", "2e6-on-1e6", "1e18-on-1e15", "paper-scale", "1e20-on-7"],
)
def test_coverage_finite_for_huge_arguments(m, n):
    p = coverage_probability(m, n)
    # the coupon-collector limit where the sizes fit a float; certain coverage at the paper's scale
    expected = coverage_probability_asymptotic(float(m), float(n)) if m < 2**1000 else 1.0
    assert math.isfinite(p) and p == pytest.approx(expected, rel=1e-3, abs=1e-12)


def test_coverage_huge_values():
    assert coverage_probability(10**9, 10**6) == 1.0
    assert coverage_probability(2**1204224, 2**16384) == 1.0
    n = 10**6
    m = round(n * math.log(n))  # Erdos-Renyi threshold: P -> exp(-1)
    assert coverage_probability(m, n) == pytest.approx(math.exp(-1), abs=1e-5)


def test_asymptotic_agrees_with_exact_moderate_size():
    exact = coverage_probability(10000, 1000)
    assert coverage_probability_asymptotic(10000, 1000) == pytest.approx(exact, abs=1e-3)
    exact = coverage_probability(14 * 10**6, 10**6)
    assert coverage_probability_asymptotic(14 * 10**6, 10**6) == pytest.approx(exact, abs=1e-6)


def test_log_coverage_paper_scale_is_zero():
    log2_spots = 32 * 512
    log2_points = math.log2(256.0) * 224 * 224 * 3  # minus 1.4e7 ImageNet images: same double
    value = log_coverage_from_log2_sizes(log2_points, log2_spots)
    assert value == 0.0


def test_log_coverage_matches_asymptotic():
    m, n = 3.0e7, 2.0e6
    expected = math.log(coverage_probability_asymptotic(m, n))
    assert log_coverage_from_log2_sizes(math.log2(m), math.log2(n)) == pytest.approx(expected, rel=1e-9)
    assert log_coverage_from_log2_sizes(10.0, 16384.0) == -math.inf


def test_encoder_space_properties():
    enc = EncoderSpace("toy", (3, 32, 32), 8, 10)
    assert enc.n_inputs == 3072
    assert enc.log2_input_space == 24576
    assert enc.log2_latent_space == 320
    assert enc.log2_ratio == 320 - 24576
    assert enc.compression == pytest.approx(307.2)


def test_space_table_columns():
    table = space_table(PAPER_ENCODERS)
    assert tuple(table.columns) == SPACE_TABLE_COLUMNS
    assert list(table.columns) == [
        "encoder", "input values", "latent dim", "log2|input|", "log2|latent|", "log2 ratio", "compression",
    ]
    assert len(table) == len(PAPER_ENCODERS)
    assert (table["log2 ratio"] < 0).all()
    row = table.iloc[0]
    assert row["log2 ratio"] == 32 * 512 - 8 * 150528 and row["compression"] == 294.0


def test_invalid_arguments():
    with pytest.raises(ValueError):
        coverage_probability(5, 0)
    with pytest.raises(TypeError):
        coverage_probability(5.0, 2)
    with pytest.raises(ValueError):
        coverage_probability_asymptotic(5, 0)


# --------------------------------------------------------------------------- the chapter's extensions


def test_encoder_space_reads_model_sizes():
    from oodlib.models import SmallCNN

    enc = encoder_space("cnn", SmallCNN(1, 28, 10, latent_dim=64))
    assert enc.input_shape == (1, 28, 28) and enc.latent_dim == 64
    assert enc.log2_ratio == 32 * 64 - 8 * 784
    with pytest.raises(TypeError):
        encoder_space("linear", torch.nn.Linear(3, 2))


def test_spec_encoder_space_reads_dataset_geometry():
    from oodlib.store import ModelSpec

    enc = spec_encoder_space("digits", ModelSpec.make("small_cnn", "digits", options={"latent_dim": 128}))
    assert (enc.input_shape, enc.latent_dim) == ((1, 8, 8), 128)


def test_paper_scale_coverage():
    assert paper_scale_coverage(PAPER_ENCODERS[0], n_in_distribution=14_000_000) == 1.0
    tiny = EncoderSpace("tiny", (1,), 4, 1, latent_bits=3)  # 16 inputs onto 8 codes: 2 per code
    assert paper_scale_coverage(tiny) == pytest.approx(coverage_probability_asymptotic(16, 8), rel=1e-12)
    with pytest.raises(ValueError):
        paper_scale_coverage(tiny, n_in_distribution=16)


def test_coverage_curves_exact_and_asymptotic():
    curves = coverage_curves([10, 10**6, 2**16384], [1.0, 3.0, 20.0], exact_up_to=100)
    assert len(curves) == 9
    small = curves[curves["log2_spots"] == math.log2(10)]
    assert (small["method"] == "exact").all()
    assert small["probability"].tolist() == [coverage_probability(m, 10) for m in (10, 30, 200)]
    big = curves[curves["log2_spots"] == 16384.0]
    assert (big["method"] == "asymptotic").all() and big["probability"].tolist() == [0.0, 0.0, 0.0]
    assert big["spots"].iloc[0] == "2^{16384}"
    mid = curves[curves["log2_spots"] == math.log2(10**6)]
    assert mid["probability"].iloc[2] == pytest.approx(coverage_probability_asymptotic(2e7, 1e6), rel=1e-9)


def test_format_count():
    assert format_count(999_999) == "999,999"
    assert format_count(10**8) == "10^{8}"
    assert format_count(2**512) == "2^{512}"


def test_simulation_table_agrees():
    table = simulation_table([(20, 8), (60, 20)], trials=5000, seed=2)
    assert list(table.columns) == ["points", "spots", "points_per_spot", "exact", "simulated", "std_error", "z_score"]
    assert (table["z_score"].abs() < 5).all()
    assert table["exact"].iloc[0] == coverage_probability(20, 8)


def test_nearest_code_mape():
    reference = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    query = torch.tensor([[1.0, 0.1], [0.0, 2.0], [5.0, 5.0]])
    expected = torch.tensor([0.05, 0.0, min((4 + 5) / 2 / 1, (5 + 3) / 2 / 2)], dtype=torch.float64)
    assert torch.allclose(nearest_code_mape(query, reference, batch_size=2), expected)
    with pytest.raises(ValueError):
        nearest_code_mape(query, torch.zeros(2, 3))


def test_coverage_figure_draws_curves_and_points():
    curves = coverage_curves([10, 1000], [1.0, 2.0, 5.0, 10.0])
    simulated = simulation_table([(20, 10)], trials=200)
    fig = coverage_figure(curves, simulated)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert len(ax.get_legend().get_texts()) == 3
    import matplotlib.pyplot as plt

    plt.close(fig)
