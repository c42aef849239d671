"""Helpers of the detector chapters (Appendices C, D, H, Section 4) for issue 14's clean-beside-attacked rows."""

import pytest
import torch

from oodlib import data, experiments


def test_start_batches_passes_the_id_mean_to_the_mean_matched_noise_only():
    starts = experiments.start_batches(["noise", "noise_mean_matched", "checker2"], 5, size=8, channels=1, seed=3,
                                       id_mean=0.1)
    assert list(starts) == ["noise", "noise_mean_matched", "checker2"]
    assert all(x.shape == (5, 1, 8, 8) for x in starts.values())
    assert torch.equal(starts["noise"], data.start_batch("noise", 5, size=8, channels=1, seed=3))
    assert float(starts["noise_mean_matched"].max()) <= 0.2
    with pytest.raises(ValueError, match="id_mean"):
        experiments.start_batches(["noise_mean_matched"], 2, size=8, channels=1)


def test_clean_aurocs_per_start():
    def score(x):  # in-score: dark images are "in-distribution"
        return -x.flatten(1).mean(dim=1)

    x_in = torch.zeros(6, 1, 4, 4)
    starts = {"bright": torch.ones(3, 1, 4, 4), "same": torch.zeros(3, 1, 4, 4)}
    assert experiments.clean_aurocs(score, x_in, starts) == {"bright": 1.0, "same": 0.5}
    with pytest.raises(ValueError):
        experiments.clean_aurocs(score, x_in, {"empty": torch.zeros(0, 1, 4, 4)})


def test_rows_not_in_removes_the_used_rows():
    pool = torch.arange(5.0).view(5, 1, 1, 1).repeat(1, 1, 2, 2)
    left = experiments.rows_not_in(pool, pool[[1, 3]])
    assert torch.equal(left, pool[[0, 2, 4]])
    with pytest.raises(ValueError, match="no row"):
        experiments.rows_not_in(pool[:2], pool)
    with pytest.raises(ValueError, match="shape"):
        experiments.rows_not_in(pool, torch.zeros(1, 1, 3, 3))


def test_layer_mape_names_the_unmatched_layer():
    def layers(x):  # two "layers": the first sees the first pixel, the second the rest
        flat = x.flatten(1)
        return [flat[:, :1], flat[:, 1:]]

    x_in = torch.ones(4, 1, 2, 2)
    x_attacked = x_in.clone()
    x_attacked[:, 0, 0, 0] = 3.0  # the first layer is off by 200%, the second matched exactly
    values = experiments.layer_mape(layers, x_attacked, x_in)
    assert values.shape == (4, 2) and values.dtype == torch.float64
    assert torch.allclose(values[:, 0], torch.full((4,), 2.0, dtype=torch.float64))
    assert torch.equal(values[:, 1], torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        experiments.layer_mape(layers, x_attacked[:2], x_in)


def test_start_batch_gives_the_id_mean_to_the_mean_matched_start_only():
    from oodlib import data

    assert torch.equal(experiments.start_batch("checker2", 2, size=8, channels=1, id_mean=0.2),
                       data.start_batch("checker2", 2, size=8, channels=1))
    assert torch.equal(experiments.start_batch("noise_mean_matched", 2, size=8, channels=1, seed=1, id_mean=0.2),
                       data.start_batch("noise_mean_matched", 2, size=8, channels=1, seed=1, id_mean=0.2))
