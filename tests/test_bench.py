"""The benchmark harness (oodlib.bench) runs and reports what it claims — on tiny sizes; no timing is asserted.

At these sizes an iteration takes microseconds, so a slope between two runs can come out zero or negative on a busy
machine (it did in CI): the tests check what is reported and that it is a number, never its sign or size."""

import math

import pytest
import torch

from oodlib import bench
from oodlib.attack import ood_attack
from oodlib.models import SmallCNN


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return SmallCNN(in_channels=1, image_size=12, num_classes=3, width=4, latent_dim=8).eval()


def test_overhead_reports_every_routine_against_the_bare_pass(cnn):
    report = bench.overhead(cnn, 4, (1, 12, 12), short=1, long=3, repeats=2)
    for routine in ("authors", "fast"):
        for key in ("iteration_ms", "ratio_to_bare", "ratio_to_bare_best", "ratio_to_param_grads"):
            assert math.isfinite(report[f"{routine}_{key}"])
    assert report["bare_fwd_bwd_input_ms"] > 0 and report["iterations"] == 2  # a sum of passes, never a slope
    assert not cnn.training and all(p.requires_grad for p in cnn.parameters())


def test_iterations_per_second_covers_the_variants_and_restores_the_layout(cnn):
    report = bench.iterations_per_second(cnn, 2, (1, 12, 12), short=1, long=2, repeats=1, device="cpu")
    assert set(report) == set(bench.VARIANTS)
    for r in report.values():
        assert math.isfinite(r["iteration_ms"]) and r["copies_per_iteration"] is None
        # the rate is 1/slope, or NaN where the slope is lost in timer noise — never a negative or infinite rate
        assert r["iterations_per_s"] > 0 or math.isnan(r["iterations_per_s"])
    assert cnn.stage1[0].weight.is_contiguous()


def test_section_3_1_hours_counts_batches_starts_and_steps():
    # 1000 images in batches of 128 → 8 batches; 2 starts × 8 × 10⁴ iterations at 16 it/s = 10⁴ s
    assert bench.section_3_1_hours({"resnet18": 16.0}) == {"resnet18": pytest.approx(1e4 / 3600)}


def test_time_to_quality_compares_the_routines(cnn):
    x_in = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    x_ood = torch.rand_like(x_in)
    report = bench.time_to_quality(cnn, x_in, x_ood, eps=2.0, steps=20)
    authors = ood_attack(cnn.features, x_in, x_ood, eps=2.0, steps=20, routine="authors", seed=0)
    ours = ood_attack(cnn.features, x_in, x_ood, eps=2.0, steps=2, seed=0)
    assert report["authors_final_median_mape"] == float(authors.mape.median())
    assert report["default_final_median_mape"] == float(ours.mape.median())
    assert report["default_steps"] == 2 and report["default_steps_run"] == ours.steps_run
    curve = ours.mape_history.nanmedian(dim=1).values
    reached = [int(i) for i, m in zip(ours.iterations, curve) if m <= report["authors_final_median_mape"]]
    assert report["default_iterations_to_authors_final"] == (reached[0] if reached else None)


def test_gpu_benchmark_refuses_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["gpu"])
    assert exit_info.value.code == 2
