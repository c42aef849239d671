# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Section 2.2 — Constructing OOD inputs in the null space of an encoder
#
# After the counting argument, Section 2.2 of the paper {cite:p}`liang2020ood` gives a construction. For a
# one-layer linear encoder $z = Wx$ with $W \in \mathbb{R}^{K\times M}$ and $K \ll M$, take a basis
# $\eta_1, \dots, \eta_{M-K}$ of the null space $\{\eta : W\eta = 0\}$ and set
#
# $$
# x' = x + \sum_i \lambda_i \eta_i \quad\Rightarrow\quad z' = Wx' = Wx = z .
# $$
#
# "We can set the magnitude of the 'noise' $\sum_i\lambda_i\eta_i$ to be arbitrarily large such that $x'$ will
# look like garbage and become OOD." For a network of `Linear` and `ReLU` layers, which is piecewise linear
# {cite:p}`theory-ding2020`, "a similar approach can be applied layer by layer". This chapter runs both
# constructions on trained models (`oodlib.nullspace`), measures how exactly $z$ is kept and how far $x'$ can
# move, and checks the one thing the construction leaves out: whether $x'$ is still an image, with pixels in
# $[0, 1]$.

# %% tags=["parameters"]
profile: str = "default"  # one of profiles; chosen with --profile (the runner sets it)
seed: int = 0  # in [0, 4294967295]; seed of data subsets, training and attack starts
device: str = "auto"  # one of devices; torch device; auto takes CUDA when available
dataset: str = "mnist5k"  # one of datasets; in-distribution dataset
arch: str = "mlp"  # one of archs; classifier architecture
epochs: int = 6  # > 0; training epochs of the classifier
n_samples: int = 16  # > 0; test images whose encoder null space is walked
n_components: int = 64  # > 0; principal components kept (the rest is the null space)
null_norms: list[float] = [2.0, 5.0, 10.0, 20.0, 40.0]  # > 0 and nonempty; L2 norms of the null-space perturbations
walk_length: float = 20.0  # > 0; L2 length of the ReLU null-space walks
start: str = "noise"  # one of start images; start image x'_out of the attack

# %%
import torch

from oodlib import data, nullspace, plots
from oodlib.params import check_chapter
from oodlib.report import (Results, chapter_banner, glue_figure, glue_value, glue_values, markdown_table,
                           paper_value)
from oodlib.store import ModelSpec, get_model, model_info

check_chapter("section2_2_null_space", globals())  # the declared parameters, checked as the runner does
torch.manual_seed(seed)
train = data.load_dataset(dataset, "train")
x_in = data.load_dataset(dataset, "test").subset(n_samples, seed=seed).x
n_values = x_in[0].numel()
results = Results()
glue_values(n_values=n_values, n_components=n_components, null_dim=n_values - n_components)
chapter_banner("section2_2_null_space", globals(),
               departures="The paper gives the construction without an experiment. Here the linear encoder is "
                          f"the {n_components}-component PCA of {dataset} (the latent size of the book's CNN) "
                          f"and the ReLU network is the book's {arch} classifier; perturbation norms are L2 "
                          "norms in [0, 1] pixel units.")

# %% [markdown]
# ## A linear encoder: $z' = z$ exactly
#
# The linear encoder $W$ projects an image onto its first {glue:text}`n_components` principal components (rows of
# $W$ orthonormal), a $K \times M$ matrix with $K$ = {glue:text}`n_components` and $M$ = {glue:text}`n_values`,
# so its null space has {glue:text}`null_dim` dimensions. Each test image gets a random null-space direction
# (`nullspace.null_space_attack`), scaled to several norms $\lVert x' - x \rVert_2$.

# %%
W = nullspace.pca_encoder(train.x, n_components)
linear_code = nullspace.LinearCode(W)
x_null = {norm: nullspace.null_space_attack(W, x_in.flatten(1).double(), norm, seed=seed).view(x_in.shape)
          for norm in null_norms}
linear_rows = []
for norm, x_prime in x_null.items():
    error = nullspace.relative_code_error(linear_code, x_prime, x_in)
    outside = nullspace.fraction_outside_unit_box(x_prime)
    clipped_error = nullspace.relative_code_error(linear_code, x_prime.clamp(0, 1), x_in)
    linear_rows.append([norm, error.max(), outside.mean(), clipped_error.median()])
    results.add(f"Section 2.2: linear encoder (PCA-{n_components}), ||x' - x|| = {norm:g}",
                "max relative code error ||Wx' - Wx|| / ||Wx||", error.max(),
                paper=paper_value("section2_2_null_space", "code_error"),
                note="paper: z' = Wx' = z exactly; float64 rounding")
    results.add(f"Section 2.2: linear encoder (PCA-{n_components}), ||x' - x|| = {norm:g}",
                "mean fraction of pixels outside [0, 1]", outside.mean())
glue_values(linear_max_error=max(r[1] for r in linear_rows), linear_outside=linear_rows[-1][2],
            linear_clipped=linear_rows[-1][3], largest_norm=null_norms[-1])
markdown_table(["‖x' − x‖₂", "max relative code error", "fraction of pixels outside [0, 1]",
                "median relative code error after clipping to [0, 1]"], linear_rows,
               caption=f"Null-space perturbations of {n_samples} test images under the PCA-{n_components} linear "
                       f"encoder (float64; profile {profile})", name="tbl-s22n-linear")

# %%
fig = plots.image_grid({"x": x_in, **{f"‖η‖ = {norm:g}": nullspace.display_scaled(x_prime)
                                       for norm, x_prime in x_null.items()}}, n=8)
glue_figure("fig_linear_images", fig)

# %% [markdown]
# ```{glue:figure} fig_linear_images
# :name: fig-s22n-linear-images
#
# Test digits (top) and $x' = x + \eta$ with $\eta$ in the null space of the PCA encoder, for growing
# $\lVert\eta\rVert_2$. Every row has exactly the code of the top row. Because $x'$ leaves $[0, 1]$, each
# image is shown min–max scaled.
# ```
#
# The code is kept to rounding error (largest relative error {glue:text}`linear_max_error:.1e`,
# {numref}`tbl-s22n-linear`) however large the perturbation, and as the norm grows the digit fades into the noise
# until it is gone ({numref}`fig-s22n-linear-images`) — the paper's construction works as stated. What the paper
# does not say is that $x'$ is no longer an image. MNIST's background pixels are exactly 0, so almost any
# perturbation pushes about half of them negative: at $\lVert\eta\rVert_2$ = {glue:text}`largest_norm:g`, a
# fraction {glue:text}`linear_outside:.2f` of the pixels lie outside $[0, 1]$, and clipping them back (what any
# camera or image file does) moves the code by {glue:text}`linear_clipped:.2f` of its norm.
#
# ## The same encoder with the pixel range enforced
#
# For a linear encoder the repair is itself a convex problem: the image in $[0, 1]^M$ closest to an OOD start
# image $x'_{out}$ whose code is exactly $z_{in}$,
# $\min \lVert x - x'_{out}\rVert_2^2$ s.t. $Wx = Wx_{in}$, $0 \le x \le 1$ — the linear, exactly solvable
# counterpart of Algorithm 1. `nullspace.box_constrained_code_match` solves it through its dual (a
# semismooth Newton method on $W\,\mathrm{clip}(x'_{out} - W^\top\lambda, 0, 1) = z_{in}$).

# %%
x_start = data.start_batch(start, n_samples, size=x_in.shape[-1], channels=x_in.shape[1], seed=seed)
box = nullspace.box_constrained_code_match(W, linear_code(x_in), x_start)
results.add(f"Section 2.2 (beyond the paper): PCA-{n_components}, closest image in [0, 1] to a {start} start",
            "max relative code error", box.relative_code_error.max(), note="float32 image")
results.add(f"Section 2.2 (beyond the paper): PCA-{n_components}, closest image in [0, 1] to a {start} start",
            "mean ||x - x'_out||", box.distance_to_start.mean())
glue_values(box_error=box.relative_code_error.max(), box_distance=box.distance_to_start.mean(),
            start_distance=(x_in - x_start).flatten(1).norm(dim=1).mean(), box_iterations=int(box.iterations.max()))
fig = plots.attack_panel(x_in, x_start, box.x, linear_code(x_in), linear_code(x_start), linear_code(box.x), n=3,
                         titles=["in-distribution $x_{in}$", f"start $x'_{{out}}$ ({start})",
                                 "closest image with $Wx = Wx_{in}$"])
glue_figure("fig_box", fig)

# %% [markdown]
# ```{glue:figure} fig_box
# :name: fig-s22n-box
#
# Linear encoder, pixel range enforced: the image in $[0, 1]$ closest to the start image whose PCA code equals
# that of the digit on the left (codes: blue dots, $z_{in}$; red circles, $z$ of the image beside them).
# ```
#
# Every solution is a valid image whose code matches to float32 rounding (largest relative error
# {glue:text}`box_error:.1e`, at most {glue:text}`box_iterations` Newton iterations). It lies at a mean distance
# {glue:text}`box_distance:.2f` from its noise start, closer than the digit itself
# ({glue:text}`start_distance:.2f`). But it does not look like noise: it shows the digit plainly, drawn over
# the noise ({numref}`fig-s22n-box`). The first {glue:text}`n_components` principal components carry most of
# what makes a digit visible, so the image nearest to the noise that keeps them *is* a noisy digit. Inside the
# pixel range, whether a code-matching input looks OOD depends on what the encoder discards — a question the
# counting argument and the unconstrained null-space construction cannot answer.
#
# ## A ReLU network: walking across activation regions
#
# The book's ReLU MLP classifier ({glue:text}`accuracy:.1%` test accuracy) is
# $z = \mathrm{ReLU}(W_2\,\mathrm{ReLU}(W_1 x + b_1) + b_2)$ followed by a linear head. Its input
# standardisation $(x - \mu)/\sigma$ is folded into $W_1, b_1$ (`nullspace.classifier_mlp_layers`), so the
# construction acts on the image itself. Inside the activation region of $x$ (fixed on/off state of every hidden
# ReLU) the map to the pre-activation of $z$ is affine, $A x + c$; a step along the null space of $A$ keeps it —
# hence $z$ and the logits — unchanged until a hidden pre-activation reaches zero. `relu_null_space_walk` then
# switches that unit and continues along the null space of the next region (sliding along the common boundary
# where several units reach zero at once), so the perturbation can grow beyond one region.

# %%
mlp_spec = ModelSpec.make(arch, dataset, epochs=epochs, seed=seed)
model = get_model(mlp_spec, device="cpu")  # the construction is float64 linear algebra on the CPU
glue_value("accuracy", model_info(mlp_spec)["test_accuracy"])
layers = nullspace.classifier_mlp_layers(model)
x_flat = x_in.flatten(1).double()
radius = nullspace.relu_region_radius(layers, x_flat, seed=seed)
walks = nullspace.stack_walks(nullspace.relu_null_space_walks(layers, x_flat, walk_length, seed=seed))
x_walk = walks["x"].view(x_in.shape)
features_error = nullspace.relative_code_error(model.features, x_walk.float(), x_in)
logits_error = nullspace.relative_code_error(model, x_walk.float(), x_in)
walk_outside = nullspace.fraction_outside_unit_box(x_walk)
clipped_error = nullspace.relative_code_error(model.features, x_walk.float().clamp(0, 1), x_in)
relu_rows = [
    ["straight null-space segment inside the region of x (median, min, max)",
     f"{radius.median():.3g} ({radius.min():.3g}, {radius.max():.3g})"],
    [f"walk to ‖x' − x‖₂ = {walk_length:g}: segments (median, max)",
     f"{walks['n_segments'].median().item()} ({walks['n_segments'].max().item()})"],
    ["relative error of the pre-activation of z, float64 (max)", f"{walks['relative_output_error'].max():.2e}"],
    ["relative error of z = model.features(x'), float32 model (max)", f"{features_error.max():.2e}"],
    ["relative error of the logits, float32 model (max)", f"{logits_error.max():.2e}"],
    ["fraction of pixels outside [0, 1] (mean)", f"{walk_outside.mean():.3f}"],
    ["relative error of z after clipping x' to [0, 1] (median)", f"{clipped_error.median():.3f}"],
]
item = f"Section 2.2: ReLU {arch}, null-space walk to ||x' - x|| = {walk_length:g}"
results.add(f"Section 2.2: ReLU {arch}, straight null-space segment inside one region", "median length",
            radius.median())
results.add(item, "max relative error of z's pre-activation (float64)", walks["relative_output_error"].max(),
            paper=paper_value("section2_2_null_space", "code_error"),
            note="paper: 'a similar approach can be applied'; float64 rounding")
results.add(item, "max relative error of z (float32 model)", features_error.max())
results.add(item, "median number of linear segments", walks["n_segments"].double().median())
results.add(item, "mean fraction of pixels outside [0, 1]", walk_outside.mean())
results.add(item, "median relative error of z after clipping to [0, 1]", clipped_error.median())
glue_values(radius_median=radius.median(), radius_min=radius.min(), walk_length=walk_length,
            n_reached=int((walks["perturbation_norm"] >= walk_length * (1 - 1e-9)).sum()), n_samples=n_samples,
            walk_error=walks["relative_output_error"].max(), features_error=features_error.max(),
            segments_max=int(walks["n_segments"].max()), walk_outside=walk_outside.mean(),
            walk_clipped=clipped_error.median())
markdown_table(["quantity", "value"], relu_rows,
               caption=f"Null-space construction on the trained ReLU {arch} ({n_samples} test images, profile "
                       f"{profile}); relative errors are ‖f(x') − f(x)‖ / ‖f(x)‖", name="tbl-s22n-relu")

# %%
z_in, z_walk, z_clipped = (model.features(v.float()).detach() for v in (x_in, x_walk, x_walk.clamp(0, 1)))
fig = plots.attack_panel(x_in, x_walk.float().clamp(0, 1), nullspace.display_scaled(x_walk), z_in, z_clipped,
                         z_walk, n=3, titles=["in-distribution $x$", "$x'$ clipped to $[0, 1]$",
                                              "$x'$ (min–max scaled)"])
glue_figure("fig_relu", fig)

# %% [markdown]
# ```{glue:figure} fig_relu
# :name: fig-s22n-relu
#
# The null-space walk on the ReLU MLP. Right: $x'$ at $\lVert x' - x\rVert_2$ = {glue:text}`walk_length:g` and its
# code $z'$ (red circles), which sits on $z$ (blue dots). Middle: the same $x'$ clipped to the pixel range, whose
# code no longer matches.
# ```
#
# A straight null-space step stays in the activation region of $x$ only for a short distance (median
# {glue:text}`radius_median:.2f`, smallest {glue:text}`radius_min:.2f`, {numref}`tbl-s22n-relu`): the paper's
# "layer by layer" remark needs the region walk to go further. With it, {glue:text}`n_reached` of the
# {glue:text}`n_samples` images reach $\lVert x' - x\rVert_2$ = {glue:text}`walk_length:g` (the most segments
# any walk needed: {glue:text}`segments_max`) while the pre-activation of $z$ moves by at most
# {glue:text}`walk_error:.1e` of its norm in float64 — and by {glue:text}`features_error:.1e` when the trained
# float32 model evaluates $x'$. The construction keeps $z$ (and so the logits and every detector computed from
# them) while the digit fades into noise ({numref}`fig-s22n-relu`).
#
# As in the linear case, the price is the pixel range: a fraction {glue:text}`walk_outside:.2f` of the pixels of
# $x'$ lie outside $[0, 1]$, and clipping them changes $z$ by {glue:text}`walk_clipped:.2f` of its norm. The
# null-space construction proves that matching inputs exist in $\mathbb{R}^M$; finding one that is also a valid
# image near a chosen OOD start is the constrained search that Algorithm 1 performs (Section 2.1), and for a
# convolutional encoder — where "a new method is needed", as the paper says of non-ReLU networks — it is the only
# route.

# %%
results.save()
results.table(f"Section 2.2: null-space construction, measured values (profile {profile})", "tbl-s22n-results")
