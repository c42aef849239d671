"""The book's figures, drawn in one style.

Each function draws one kind of figure of Liang et al. and returns a
:class:`matplotlib.figure.Figure` without showing it; the caller glues, saves or
closes it. Every function first calls :func:`set_style`, so a figure looks the same
whatever the notebook did before. The backend is never chosen here.

Colours: in-distribution (ID) samples are blue (:data:`ID_COLOR`), attacked OOD
samples red (:data:`OOD_COLOR`), clean (unattacked) OOD samples grey
(:data:`CLEAN_OOD_COLOR`).

Images are NCHW arrays or tensors with values in [0, 1] and C in {1, 3}.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import matplotlib.text
import numpy as np
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from oodlib.metrics import as_float64_array, mape as _mape_metric, mape_fraction_below
from oodlib.report import format_percent, names_mape

if TYPE_CHECKING:
    from oodlib.experiments import DetectorAttack

__all__ = [
    "ID_COLOR",
    "OOD_COLOR",
    "CLEAN_OOD_COLOR",
    "set_style",
    "mape_histogram",
    "score_histogram",
    "z_scatter",
    "attack_panel",
    "image_grid",
    "loss_curves",
    "attack_curves",
    "effective_font_px",
    "PAGE_WIDTH_PX",
    "MIN_FONT_PX",
]

#: Colour of in-distribution samples.
ID_COLOR = "#1f77b4"
#: Colour of attacked OOD samples.
OOD_COLOR = "#d62728"
#: Colour of clean (unattacked) OOD samples.
CLEAN_OOD_COLOR = "#7f7f7f"

_PALETTE = [ID_COLOR, OOD_COLOR, CLEAN_OOD_COLOR, "#2ca02c", "#9467bd", "#ff7f0e",
            "#8c564b", "#e377c2", "#bcbd22", "#17becf"]
_DPI = 110
_TEXT_BOX = {"boxstyle": "round,pad=0.25", "facecolor": "white", "edgecolor": "0.8", "alpha": 0.9}

#: Width in CSS pixels of the book's text column in a 1300-pixel-wide browser window (sphinx-book-theme): a wider
#: figure is scaled down to it, and its text with it.
PAGE_WIDTH_PX = 660
#: The smallest text a figure may show at :data:`PAGE_WIDTH_PX`, in CSS pixels (tick labels included).
MIN_FONT_PX = 10.0


def set_style() -> None:
    """Apply the book's figure style: seaborn "whitegrid", "paper" context, fixed palette.

    The palette starts with ID blue, attacked-OOD red and clean-OOD grey, so default
    colour cycling follows the same convention. Figures are drawn at 110 DPI. The
    matplotlib backend is left untouched.
    """
    sns.set_theme(context="paper", style="whitegrid", palette=_PALETTE, font_scale=1.15)
    plt.rcParams.update({
        "figure.dpi": _DPI,
        "savefig.dpi": _DPI,
        "savefig.bbox": "tight",
        "legend.frameon": True,
        "legend.framealpha": 0.9,
    })


def effective_font_px(fig: Figure, page_width_px: float = PAGE_WIDTH_PX) -> float:
    """The smallest visible text of ``fig`` as a reader sees it, in CSS pixels, once the figure (saved as the book
    saves it: PNG at the figure's DPI, tight bounding box) is scaled down to fit a text column ``page_width_px``
    wide. Compare with :data:`MIN_FONT_PX`. Raises ``ValueError`` for a figure with no visible text."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, bbox_inches="tight")
    width = Image.open(buffer).size[0]
    sizes = [t.get_fontsize() for t in fig.findobj(match=matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]
    if not sizes:
        raise ValueError("the figure has no visible text")
    return min(sizes) * fig.dpi / 72 * min(1.0, page_width_px / width)


def _numpy(x: Any) -> np.ndarray:
    """Detach a tensor (any device) or read an array-like as a float64 numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to(device="cpu", dtype=torch.float64)
    return np.asarray(x, dtype=np.float64)


def _as_named(values: Mapping[str, Any] | Any) -> dict[str, Any]:
    """Wrap a single array as ``{"": array}``; pass mappings through as a dict."""
    if isinstance(values, Mapping):
        return dict(values)
    return {"": values}


def _panel_grid(n_panels: int, max_cols: int, panel_size: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    """A figure with ``n_panels`` axes on a grid at most ``max_cols`` wide; spare cells removed."""
    ncols = min(n_panels, max_cols)
    nrows = -(-n_panels // ncols)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False,
                             figsize=(panel_size[0] * ncols, panel_size[1] * nrows))
    flat = list(axes.ravel())
    for ax in flat[n_panels:]:
        fig.delaxes(ax)
    return fig, flat[:n_panels]


def _log_bins(values: np.ndarray, threshold: float, n_bins: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Log-spaced bin edges covering ``values`` and ``threshold``; zeros moved to the lowest edge."""
    positive = values[values > 0]
    low = min(positive.min() if positive.size else threshold, threshold) / 1.5
    high = max(values.max(), threshold) * 1.5
    edges = np.logspace(np.log10(low), np.log10(high), n_bins + 1)
    return edges, np.clip(values, edges[0], None)


def _mape_panel(ax: Axes, values: np.ndarray, threshold: float, log_x: bool) -> None:
    """Histogram of per-sample MAPE with the threshold line and the 'x% < t' label."""
    if log_x:
        edges, shown = _log_bins(values, threshold)
        ax.set_xscale("log")
    else:
        edges = np.histogram_bin_edges(np.r_[values, threshold], bins=40)
        shown = values
    ax.hist(shown, bins=edges, color=OOD_COLOR, alpha=0.75, edgecolor="white", linewidth=0.4)
    ax.axvline(threshold, color="0.15", linestyle="--", linewidth=1.1)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.2)  # headroom for the label
    fraction = mape_fraction_below(values, threshold)
    ax.text(0.97, 0.95, f"{format_percent(fraction)} < {format_percent(threshold, keep_zeros=False)}",
            transform=ax.transAxes, ha="right", va="top", bbox=_TEXT_BOX)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_percent(v, keep_zeros=False)))
    ax.set_xlabel("MAPE")
    ax.set_ylabel("samples")


def mape_histogram(
    mape_values: Mapping[str, Any] | Any,
    *,
    threshold: float = 1e-3,
    title: str | None = None,
    log_x: bool = True,
) -> Figure:
    """Histograms of per-sample MAPE, one panel per experiment (paper Figures 3, 4, 8, 9, 11).

    Each panel shows the MAPE distribution of one attack run (Section 3's metric), a
    dashed line at ``threshold`` and the fraction of samples below it, the figure behind
    the paper's claim that "most MAPE values are less than 0.1%".

    Parameters
    ----------
    mape_values : mapping of str to array-like, or array-like
        Per-sample MAPE values as fractions; a mapping gives one titled panel per key.
    threshold : float, default 1e-3
        Threshold drawn and counted, as a fraction (1e-3 = 0.1%).
    title : str, optional
        Figure title.
    log_x : bool, default True
        Logarithmic MAPE axis with log-spaced bins; exact zeros fall in the lowest bin.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per panel, at most three panels per row.
    """
    set_style()
    named = {k: as_float64_array(v, f"mape_values[{k!r}]" if k else "mape_values").ravel()
             for k, v in _as_named(mape_values).items()}
    fig, axes = _panel_grid(len(named), 3, (2.9, 2.5))
    for ax, (name, values) in zip(axes, named.items()):
        _mape_panel(ax, values, threshold, log_x)
        if name:
            ax.set_title(name)
    if title:
        fig.suptitle(title, fontweight="bold")
    fig.tight_layout()
    return fig


def score_histogram(
    score_in: Any,
    score_out: Any,
    *,
    score_out_clean: Any = None,
    xlabel: str = "in-score",
    title: str | None = None,
    auroc: float | None = None,
) -> Figure:
    """Histograms of detector in-scores of ID, attacked OOD and clean OOD samples.

    The paper's Figures 13-23 set the score distribution of the in-distribution test
    set beside that of the attacked OOD samples: when the attack works, the two overlap
    and the AUROC is near 0.5. Densities are drawn on shared bins so groups of different
    sizes compare.

    Parameters
    ----------
    score_in : array-like, shape (N_in,)
        In-scores of the ID samples (blue).
    score_out : array-like, shape (N_out,)
        In-scores of the attacked OOD samples (red).
    score_out_clean : array-like, shape (N_clean,), optional
        In-scores of the OOD samples before the attack (grey).
    xlabel : str, default "in-score"
        Label of the score axis.
    title : str, optional
        Axes title.
    auroc : float, optional
        AUROC (ID vs attacked OOD) written as the legend title.

    Returns
    -------
    matplotlib.figure.Figure
        A figure with one axes.
    """
    set_style()
    groups = [("ID", as_float64_array(score_in, "score_in").ravel(), ID_COLOR),
              ("OOD (attacked)", as_float64_array(score_out, "score_out").ravel(), OOD_COLOR)]
    if score_out_clean is not None:
        clean = as_float64_array(score_out_clean, "score_out_clean").ravel()
        groups.append(("OOD (clean)", clean, CLEAN_OOD_COLOR))
    edges = np.histogram_bin_edges(np.concatenate([g[1] for g in groups]), bins=50)
    fig, ax = plt.subplots(figsize=(5.0, 3.2))
    for label, values, color in groups:
        sns.histplot(x=values, bins=edges, stat="density", element="step", fill=True,
                     alpha=0.3, color=color, label=label, ax=ax, linewidth=1.2)
    ax.set_xlabel(xlabel)
    legend_title = None if auroc is None else f"AUROC = {auroc:.3f}"
    ax.legend(title=legend_title, loc="best")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def z_scatter(
    z_in: Any,
    z_out: Any = None,
    *,
    mape: float | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """The paper's latent scatter plot: value of each entry of z against its index.

    Figures 1, 2, 7, 10 and 12 draw ``z_in = f(x_in)`` as blue dots and the attacked
    ``z_out = f(x_out)`` as red open circles: when the attack succeeds every circle
    sits on its dot. The MAPE (Section 3) is written inside the axes.

    Parameters
    ----------
    z_in : array-like, shape (D,) or (1, ...)
        Encoder output of one ID sample; flattened.
    z_out : array-like, shape like ``z_in``, optional
        Encoder output of the paired OOD sample.
    mape : float, optional
        MAPE to write, as a fraction. If omitted and ``z_out`` is given, it is computed
        with :func:`oodlib.metrics.mape`.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure is made if omitted.
    title : str, optional
        Axes title.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the axes.
    """
    set_style()
    own_figure = ax is None
    if ax is None:
        _, ax = plt.subplots(figsize=(5.0, 3.0))
    z_in_flat = _numpy(z_in).ravel()
    index = np.arange(z_in_flat.size)
    ax.scatter(index, z_in_flat, s=7, color=ID_COLOR, linewidths=0, label=r"$z_{in}$", zorder=2)
    if z_out is not None:
        z_out_flat = _numpy(z_out).ravel()
        ax.scatter(index, z_out_flat, s=22, facecolors="none", edgecolors=OOD_COLOR,
                   linewidths=0.7, label=r"$z_{out}$", zorder=3)
        if mape is None:
            mape = float(_mape_metric(z_out_flat[None], z_in_flat[None])[0])
    if mape is not None:
        ax.text(0.03, 0.95, f"MAPE = {format_percent(mape)}", transform=ax.transAxes,
                ha="left", va="top", bbox=_TEXT_BOX, zorder=4)
    ax.set_xlabel("feature index")
    ax.set_ylabel("value")
    ax.set_xlim(-0.02 * z_in_flat.size - 1, 1.02 * z_in_flat.size)
    if title:
        ax.set_title(title)
    if own_figure:
        if z_out is not None:
            ax.legend(loc="upper right", markerscale=1.2)
        ax.figure.tight_layout()
    return ax.figure


def _images(x: Any, name: str) -> np.ndarray:
    """Read NCHW (or one CHW) images in [0, 1] as an NHWC numpy array clipped to [0, 1]."""
    arr = _numpy(x)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[1] not in (1, 3):
        raise ValueError(f"{name} must be NCHW images with C in {{1, 3}}, got shape {arr.shape}")
    return np.clip(arr.transpose(0, 2, 3, 1), 0.0, 1.0)


def _show_image(ax: Axes, image: np.ndarray) -> None:
    """Draw one HWC image in [0, 1]: grey with the "gray" colour map, RGB as is; axes off."""
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(image)
    ax.set_axis_off()


def _per_sample_mape(z_out: np.ndarray, z_in: np.ndarray, given: Any) -> np.ndarray:
    """Per-sample MAPE, taken from ``given`` when supplied, else computed."""
    if given is not None:
        return _numpy(given).ravel()
    return np.asarray(_mape_metric(z_out, z_in))


def attack_panel(
    x_in: Any,
    x_start: Any,
    x_attacked: Any,
    z_in: Any,
    z_start: Any,
    z_attacked: Any,
    *,
    mapes: Any = None,
    n: int = 3,
    titles: Sequence[str] | None = None,
) -> Figure:
    """Attack examples, two rows per sample (paper Figures 1, 2, 7, 10, 12).

    Three columns: the ID image above its ``z_in``; the start image ``x'_out`` above
    ``z_start`` against ``z_in``; the attacked image ``x_out`` above ``z_attacked``
    against ``z_in``. The MAPE (Section 3) is written in both comparison scatters.
    The paper sets the six panels of a sample in one row; stacked, they keep
    :data:`MIN_FONT_PX` at the book's page width.

    Parameters
    ----------
    x_in, x_start, x_attacked : array-like or torch.Tensor, shape (N, C, H, W)
        ID, start and attacked images in [0, 1], C in {1, 3}.
    z_in, z_start, z_attacked : array-like or torch.Tensor, shape (N, ...)
        Their encoder outputs.
    mapes : array-like, shape (N,), optional
        MAPE of the attacked samples; computed from ``z_attacked`` and ``z_in`` if
        omitted. The start images' MAPE is always computed.
    n : int, default 3
        Number of samples (rows) shown: the first ``min(n, N)``.
    titles : sequence of 3 str, optional
        Titles of the three column pairs (ID, start, attacked).

    Returns
    -------
    matplotlib.figure.Figure
        ``6 * min(n, N)`` axes.
    """
    set_style()
    images = [_images(x, name) for x, name in
              ((x_in, "x_in"), (x_start, "x_start"), (x_attacked, "x_attacked"))]
    zs = [_numpy(z) for z in (z_in, z_start, z_attacked)]
    zs = [z.reshape(len(z), -1) for z in zs]
    rows = min(n, *(len(a) for a in images + zs))
    start_mapes = _per_sample_mape(zs[1], zs[0], None)
    attacked_mapes = _per_sample_mape(zs[2], zs[0], mapes)
    titles = list(titles) if titles is not None else ["ID image", "start image", "attacked image"]
    # two grid rows per sample (the three images above their codes), three columns: 7.5 inches wide, so the text
    # stays legible in the book's column (effective_font_px); the paper's one-row-per-sample layout is 15 inches
    fig, grid = plt.subplots(2 * rows, 3, squeeze=False, figsize=(7.5, 4.3 * rows),
                             gridspec_kw={"height_ratios": [1.6, 2.0] * rows})
    for i in range(rows):
        pictures, codes = grid[2 * i], grid[2 * i + 1]
        for j in range(3):
            _show_image(pictures[j], images[j][i])
        z_scatter(zs[0][i], ax=codes[0])
        z_scatter(zs[0][i], zs[1][i], mape=start_mapes[i], ax=codes[1])
        z_scatter(zs[0][i], zs[2][i], mape=attacked_mapes[i], ax=codes[2])
        for ax in codes[1:]:
            ax.set_ylabel("")
        if i < rows - 1:
            for ax in codes:
                ax.set_xlabel("")
    for j, name in enumerate(titles):
        grid[0, j].set_title(name)
        grid[1, j].set_title(("$z_{in}$", "$z_{start}$ vs $z_{in}$", "$z_{attacked}$ vs $z_{in}$")[j])
    fig.tight_layout(h_pad=0.6)
    return fig


ROW_LABEL_WIDTH = 12
"""Characters per line of an image grid's row label: a longer label is broken at spaces so that it stays beside
its own row (a row is 1.1 inches high)."""


def _row_label(name: str) -> str:
    return name if "$" in name else textwrap.fill(name, ROW_LABEL_WIDTH, break_long_words=False)


def image_grid(images: Mapping[str, Any] | Any, *, n: int = 8, title: str | None = None) -> Figure:
    """A grid of images, one row per named group (e.g. "start", "attacked", "ID").

    Used to *show* the attacked images: Section 5 and the JEM appendix warn that an
    "OOD" image that drifted into looking like an ID image is no longer OOD.

    Parameters
    ----------
    images : mapping of str to array-like, or array-like
        NCHW images in [0, 1], C in {1, 3}; a mapping gives one labelled row per key.
    n : int, default 8
        Images per row (the first ``n`` of each group).
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        ``rows * min(n, largest group)`` axes, all with their axis lines off. Row labels longer than
    :data:`ROW_LABEL_WIDTH` characters are broken at spaces (labels with mathtext are left whole).
    """
    set_style()
    groups = {k: _images(v, f"images[{k!r}]" if k else "images") for k, v in _as_named(images).items()}
    ncols = min(n, max(len(g) for g in groups.values()))
    fig, axes = plt.subplots(len(groups), ncols, squeeze=False,
                             figsize=(0.95 * ncols + 0.6, 1.1 * len(groups) + (0.3 if title else 0.0)))
    for row, (name, group) in zip(axes, groups.items()):
        for j, ax in enumerate(row):
            if j < len(group):
                _show_image(ax, group[j])
            else:
                ax.set_axis_off()
        if name:
            row[0].text(-0.08, 0.5, _row_label(name), transform=row[0].transAxes, rotation=90,
                        ha="right", va="center")
    if title:
        fig.suptitle(title, fontweight="bold")
    fig.tight_layout(pad=0.4, w_pad=0.2, h_pad=0.4)
    return fig


def _median_and_quartiles(history: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-iteration median, 25th and 75th percentiles of a (T,) or (T, N) history."""
    values = history.reshape(len(history), -1)
    return tuple(np.percentile(values, q, axis=1) for q in (50, 25, 75))


def _percent_ticks(axis: Any) -> None:
    """Label an axis that shows percentages ("1%", "10%", as the MAPE histograms); on a log axis spanning a decade
    or more only the decades are labelled."""
    as_percent = FuncFormatter(lambda v, _: format_percent(v / 100, keep_zeros=False))
    axis.set_major_formatter(as_percent)
    low, high = axis.get_view_interval()
    if axis.get_scale() == "log" and low > 0 and high / low >= 10:
        axis.set_minor_formatter(NullFormatter())
    else:
        axis.set_minor_formatter(as_percent if axis.get_scale() == "log" else NullFormatter())


def loss_curves(
    histories: Mapping[str, Any] | Any,
    *,
    iterations: Mapping[str, Any] | Any | None = None,
    ylabel: str = "MAPE in %",
    log_y: bool = True,
    xlabel: str = "iteration",
    band: bool = True,
    percent: bool | None = None,
) -> Figure:
    """Attack progress: the per-iteration median of a per-sample quantity, with its IQR band.

    Tracks the objective of Algorithm 1 (or the MAPE of Section 3) over the iterations
    of one or more attack variants, e.g. the authors' Adamax update against the printed
    normalised-gradient rule.

    Parameters
    ----------
    histories : mapping of str to array-like, or array-like
        Each history has shape (T,) or (T, N): T recorded iterations of N per-sample values.
    iterations : mapping of str to array-like, or array-like, optional
        The iteration number of each recorded row, shape (T,), keyed like ``histories`` (an attack records every
        ``record_every``-th iteration: :attr:`oodlib.attack.AttackResult.iterations`). Default: 0, 1, …, T − 1.
    ylabel : str, default "MAPE in %"
        Label of the value axis.
    log_y : bool, default True
        Logarithmic value axis.
    xlabel : str, default "iteration"
        Label of the iteration axis.
    band : bool, default True
        Shade the interquartile range across samples (only for (T, N) histories, N > 1).
    percent : bool, optional
        Plot the values (fractions) in percent, the book's unit of a MAPE (:mod:`oodlib.report`'s number policy).
        Default: when ``ylabel`` names a MAPE.

    Returns
    -------
    matplotlib.figure.Figure
        A figure with one axes.
    """
    set_style()
    named = _as_named(histories)
    at = _as_named(iterations) if iterations is not None else {}
    if at and set(at) != set(named):
        raise ValueError(f"iterations are keyed {sorted(at)}; the histories {sorted(named)}")
    scale = 100.0 if (names_mape(ylabel) if percent is None else percent) else 1.0
    fig, ax = plt.subplots(figsize=(5.0, 3.2))
    for color, (name, history) in zip(sns.color_palette(_PALETTE, len(named)), named.items()):
        values = scale * _numpy(history)
        median, q25, q75 = _median_and_quartiles(values)
        steps = _numpy(at[name]).reshape(-1) if at else np.arange(len(median))
        if len(steps) != len(median):
            raise ValueError(f"{name!r}: {len(steps)} iteration numbers for {len(median)} recorded rows")
        ax.plot(steps, median, color=color, linewidth=1.6, label=name or None)
        if band and values.ndim > 1 and values[0].size > 1:
            ax.fill_between(steps, q25, q75, color=color, alpha=0.2, linewidth=0)
    if log_y:
        ax.set_yscale("log")
    if scale != 1.0:
        _percent_ticks(ax.yaxis)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if any(named):
        ax.legend(loc="best")
    fig.tight_layout()
    return fig


def attack_curves(runs: Mapping[str, Any], *, quantity: str = "mape", ylabel: str | None = None) -> Figure:
    """:func:`loss_curves` of attack results (:class:`oodlib.attack.AttackResult`) on their true iteration axis:
    the per-sample ``quantity`` history (``"mape"``: MAPE of Section 3; ``"loss"``: the objective J of
    Algorithm 1) against the recorded iteration numbers, whatever the recording stride.

    Raises
    ------
    ValueError
        For an unknown ``quantity``.
    """
    if quantity not in ("mape", "loss"):
        raise ValueError(f"quantity must be 'mape' or 'loss'; got {quantity!r}")
    default = "MAPE in % (median, IQR band)" if quantity == "mape" else "‖f(x) − f(x_in)‖² (median, IQR band)"
    return loss_curves({name: getattr(run, f"{quantity}_history") for name, run in runs.items()},
                       iterations={name: run.iterations for name, run in runs.items()},
                       ylabel=ylabel or default)


def detector_attack_figures(runs: Mapping[str, DetectorAttack], x_in: Any, shown: Sequence[int], *, main: str,
                            crop: str, large: str, xlabel: str) -> dict[str, Figure]:
    """The three figures of a detector under attack (Appendices E and G): the detector's score histograms of the ID,
    start and attacked images from the ``main`` start and from the ``crop`` start (``"hist_main"``,
    ``"hist_crop"``), and an image grid of the ``shown`` ID images beside their start and attacked images, with the
    ``large``-budget attack from the main start (``"images"``)."""
    figures = {}
    for key, name in (("hist_main", main), ("hist_crop", crop)):
        run = runs[name]
        figures[key] = score_histogram(run.score_in, run.score_attacked, score_out_clean=run.score_start,
                                       xlabel=xlabel, auroc=run.summary["auroc"])
    m, c, big = runs[main], runs[crop], runs[large]
    larger = f"attacked (ε\u00a0×{big.eps / m.eps:g})"  # a no-break space keeps "(ε ×2)" on one line
    images = {"ID $x_{in}$": x_in[shown], f"{m.start} start": m.x_start[shown],
              f"attacked ({m.start})": m.result.x[shown], larger: big.result.x[shown],
              f"{c.start} start": c.x_start[shown], f"attacked ({c.start})": c.result.x[shown]}
    figures["images"] = image_grid(images, n=8)
    return figures
