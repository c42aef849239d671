"""Tests of oodlib.plots: each function returns a Figure with the expected axes and text."""

from __future__ import annotations

from collections.abc import Iterator

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from oodlib import plots


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def _texts(fig: Figure) -> list[str]:
    """Every text drawn in the figure (axes texts, titles, legends)."""
    return [t.get_text() for t in fig.findobj(match=lambda a: hasattr(a, "get_text"))]


def _images(n: int, channels: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_set_style_sets_dpi_and_palette() -> None:
    plots.set_style()
    assert plt.rcParams["figure.dpi"] == 110
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    assert [to_hex(c) for c in colors[:3]] == [plots.ID_COLOR, plots.OOD_COLOR, plots.CLEAN_OOD_COLOR]


def test_mape_histogram_panels_and_threshold_text() -> None:
    rng = np.random.default_rng(0)
    values = {name: 10 ** rng.normal(-3.5, 0.5, 200) for name in ("x-ray", "CT", "noise", "spiral")}
    values["CT"][:3] = 0.0  # exact zeros must not break the log axis
    fig = plots.mape_histogram(values, title="ResNet-18")
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    labels = [t for t in _texts(fig) if "< 0.1%" in t]
    assert len(labels) == 4


def test_mape_histogram_single_array_linear() -> None:
    fig = plots.mape_histogram(torch.rand(50) * 1e-2, log_x=False, threshold=2e-3)
    assert len(fig.axes) == 1
    assert any("< 0.2%" in t for t in _texts(fig))


def test_score_histogram_with_clean_and_auroc() -> None:
    rng = np.random.default_rng(1)
    fig = plots.score_histogram(rng.normal(size=100), torch.randn(80),
                                score_out_clean=rng.normal(-2, 1, 60), auroc=0.5123)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    texts = _texts(fig)
    assert "AUROC = 0.512" in texts and "OOD (clean)" in texts


def test_score_histogram_constant_scores() -> None:
    fig = plots.score_histogram(np.ones(10), np.ones(10), title="MSP")
    assert len(fig.axes) == 1


def test_z_scatter_writes_mape() -> None:
    z_in = torch.randn(64)
    fig = plots.z_scatter(z_in, z_in + 1e-4, title="ResNet-18")
    assert len(fig.axes) == 1
    assert any(t.startswith("MAPE = ") and t.endswith("%") for t in _texts(fig))


def test_z_scatter_given_mape_and_axes() -> None:
    fig, ax = plt.subplots()
    assert plots.z_scatter(np.arange(10.0), mape=3e-4, ax=ax) is fig
    assert "MAPE = 0.0300%" in _texts(fig)


@pytest.mark.parametrize("channels", [1, 3])
def test_attack_panel(channels: int) -> None:
    z_in = torch.randn(4, 32)
    fig = plots.attack_panel(_images(4, channels), _images(4, channels, 1), _images(4, channels, 2),
                             z_in, torch.randn(4, 32), z_in + 1e-3, n=3)
    assert isinstance(fig, Figure) and len(fig.axes) == 3 * 6
    assert sum(t.startswith("MAPE = ") for t in _texts(fig)) == 2 * 3


def test_attack_panel_given_mapes_and_titles() -> None:
    x = np.random.default_rng(2).random((2, 3, 8, 8))
    z = np.random.default_rng(3).normal(size=(2, 4, 2, 2))
    fig = plots.attack_panel(x, x, x, z, z, z, mapes=[1e-4, 2e-4], n=5, titles=["a", "b", "c"])
    assert len(fig.axes) == 2 * 6
    assert "MAPE = 0.0200%" in _texts(fig) and "b" in _texts(fig)


@pytest.mark.parametrize("channels", [1, 3])
def test_image_grid(channels: int) -> None:
    groups = {"start": _images(5, channels), "attacked": _images(3, channels), "ID": _images(6, channels)}
    fig = plots.image_grid(groups, n=4, title="noise start")
    assert isinstance(fig, Figure) and len(fig.axes) == 3 * 4
    assert not any(ax.axison for ax in fig.axes)
    assert {"start", "attacked", "ID"} <= set(_texts(fig))


def test_image_grid_breaks_long_row_labels_at_spaces() -> None:
    groups = {"attacked (natural crop)": _images(2, 1), "ID $x_{in}$ and more": _images(2, 1), "ID": _images(2, 1)}
    labels = _texts(plots.image_grid(groups, n=2))
    assert "attacked\n(natural\ncrop)" in labels  # broken beside its row, never across rows
    assert "ID $x_{in}$ and more" in labels and "ID" in labels  # mathtext and short labels left whole


def test_image_grid_single_tensor_and_bad_shape() -> None:
    assert len(plots.image_grid(_images(3, 1), n=8).axes) == 3
    with pytest.raises(ValueError, match="C in"):
        plots.image_grid(torch.rand(2, 2, 8, 8))


def test_loss_curves() -> None:
    rng = np.random.default_rng(4)
    histories = {"Adamax": np.exp(-np.arange(100))[:, None] * rng.random((100, 16)) + 1e-6,
                 "printed rule": torch.linspace(1, 0.1, 100)}
    fig = plots.loss_curves(histories)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and len(ax.get_lines()) == 2
    assert len(ax.collections) == 1  # one IQR band: the (T,) history has none
    assert ax.get_lines()[1].get_ydata()[0] == pytest.approx(100.0)  # a MAPE is plotted in percent
    assert "%" in ax.get_ylabel()
    plain = plots.loss_curves({"J": np.ones(3)}, ylabel="objective J").axes[0]
    assert plain.get_lines()[0].get_ydata()[0] == 1.0


def test_attack_curves_plot_true_iteration_numbers() -> None:
    from oodlib.attack import ood_attack
    from oodlib.models import SmallCNN

    torch.manual_seed(0)
    model = SmallCNN(in_channels=1, image_size=8, num_classes=3, width=4, latent_dim=4).eval()
    x_in, x_start = _images(3, 1, seed=1), _images(3, 1, seed=2)
    run = ood_attack(model.features, x_in, x_start, eps=1.0, steps=40, routine="authors", record_every=10)
    assert run.mape_history.shape[0] == 4  # 40 iterations recorded every 10th
    fig = plots.attack_curves({"authors": run}, quantity="loss")
    x = fig.axes[0].get_lines()[0].get_xdata()
    assert list(x) == [0, 10, 20, 30]  # the axis reaches N, not the number of records
    with pytest.raises(ValueError, match="3 iteration numbers for 2 recorded rows"):
        plots.loss_curves({"a": np.ones((2, 4))}, iterations={"a": [0, 1, 2]})
    with pytest.raises(ValueError, match="quantity"):
        plots.attack_curves({"authors": run}, quantity="objective")


def test_the_strided_history_plot_axis() -> None:
    """Section 2.1's long run (issue 14, item 8): with N above 1000 the attack records every ``ceil(N / 1000)``-th
    iteration by default, and the MAPE-vs-iteration figure must still put the curve on 0 … N, not on 0 … T."""
    from oodlib import experiments
    from oodlib.attack import ood_attack
    from oodlib.models import SmallCNN

    torch.manual_seed(0)
    model = SmallCNN(in_channels=1, image_size=8, num_classes=3, width=4, latent_dim=4).eval()
    steps = 1001  # default stride 2: 501 records
    run = ood_attack(model.features, _images(2, 1, seed=1), _images(2, 1, seed=2), eps=1.0, steps=steps,
                     routine="authors")
    assert run.mape_history.shape[0] == 501
    x = plots.attack_curves({"authors": run}).axes[0].get_lines()[0].get_xdata()
    assert x[0] == 0 and x[-1] == steps - 1 and np.all(np.diff(x) == 2)  # true iteration numbers
    iterations, median = experiments.median_curve(run)
    assert list(iterations) == list(x) and median.shape == (501,)


def test_plots_never_select_backend() -> None:
    import inspect

    source = inspect.getsource(plots)
    assert "matplotlib.use(" not in source and "MPLBACKEND" not in source


def _grid_of_six() -> Figure:
    return plots.image_grid({f"attacked (natural crop) {i}": _images(8, 3, i) for i in range(6)}, n=8)


_WIDEST_USES = {
    "attack_panel": lambda: plots.attack_panel(_images(3, 3), _images(3, 3, 1), _images(3, 3, 2), torch.randn(3, 64),
                                               torch.randn(3, 64), torch.randn(3, 64), n=3),
    "image_grid": _grid_of_six,
    "mape_histogram": lambda: plots.mape_histogram({k: torch.rand(40) * 1e-2 for k in "abcdef"}),
    "score_histogram": lambda: plots.score_histogram(torch.randn(50), torch.randn(50), score_out_clean=torch.randn(9),
                                                     auroc=0.5),
    "loss_curves": lambda: plots.loss_curves({"authors": np.random.default_rng(0).random((10, 4))}),
}


@pytest.mark.parametrize("name", sorted(_WIDEST_USES))
def test_figures_stay_legible_at_the_book_page_width(name: str) -> None:
    """Each figure function at its widest use in the chapters (six-panel examples, eight-image rows, three
    histograms a row) keeps its smallest text at or above MIN_FONT_PX once scaled to the book's column."""
    assert plots.effective_font_px(_WIDEST_USES[name]()) >= plots.MIN_FONT_PX


def test_effective_font_px_sees_a_figure_scaled_down() -> None:
    fig, ax = plt.subplots(figsize=(15.0, 2.0), dpi=110)  # the old one-row attack panel's width
    ax.set_title("t", fontsize=10)
    ax.tick_params(labelsize=10)
    small = plots.effective_font_px(fig)
    # 10 pt at 110 DPI is 15.3 px; the figure, ≈ 1500 px wide once trimmed, is shown ≈ 0.45 times as wide
    assert 10 * 110 / 72 * plots.PAGE_WIDTH_PX / (15.0 * 110) <= small <= 10 * 110 / 72 * plots.PAGE_WIDTH_PX / 1300
    assert small < plots.MIN_FONT_PX
    assert plots.effective_font_px(fig, page_width_px=10_000) == pytest.approx(10 * 110 / 72)
