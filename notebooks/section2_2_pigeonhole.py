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
# # Section 2.2 — The pigeonhole argument: why an encoder must map some inputs together
#
# Section 2.2 of the paper {cite:p}`liang2020ood` explains why the OOD attack can exist at all. An encoder
# $z = f(x)$ that reduces dimensionality cannot be injective on its discrete input space: for ResNet-18 on
# ImageNet there are $256^{224\times 224\times 3}$ possible 8-bit images but only about $2^{32\times 512}$
# float32 codes, so "for some sample $x$ in the dataset, we can find another sample $x'$ such that
# $f(x') = f(x)$" — the Pigeonhole Principle. The paper then asks how much of the latent space $\mathcal{F}$ the
# OOD inputs $\Omega_{out}$ cover, and answers with a worst-case model: if every OOD input were mapped i.i.d.
# uniformly onto the $|\mathcal{F}|$ codes, the probability that the OOD codes cover all of $\mathcal{F}$ is
#
# $$
# P(\mathcal{F}_{out} = \mathcal{F}) = \frac{|\mathcal{F}|!\; S_2(|\Omega_{out}|, |\mathcal{F}|)}
# {|\mathcal{F}|^{|\Omega_{out}|}} \;\to\; 1 \quad \text{as } |\mathcal{F}| / |\Omega_{out}| \to 0,
# $$
#
# with $S_2$ the Stirling number of the second kind. This chapter evaluates both statements for every encoder
# of the paper and of this book (`oodlib.pigeonhole`), checks the coverage formula by simulation, and then
# tests what the worst-case model does *not* tell: whether codes of real OOD images actually land on codes of
# in-distribution images.

# %% tags=["parameters"]
profile: str = "default"  # one of profiles; chosen with --profile (the runner sets it)
seed: int = 0  # in [0, 4294967295]; seed of data subsets, training and attack starts
device: str = "auto"  # one of devices; torch device; auto takes CUDA when available
dataset: str = "mnist5k"  # one of datasets; in-distribution dataset
arch: str = "small_cnn"  # one of archs; classifier architecture
epochs: int = 6  # > 0; training epochs of the classifier
n_trials: int = 4000  # > 0; Monte-Carlo trials per pigeonhole case
n_noise: int = 1000  # > 0; uniform-noise images encoded
n_natural: int = 500  # > 0; natural images encoded

# %%
import numpy as np
import torch

from oodlib import data, experiments, metrics, pigeonhole, plots
from oodlib.autoencoder import AutoEncoderSpec
from oodlib.params import check_chapter
from oodlib.report import (Results, chapter_banner, format_percent, glue_figure, glue_value, glue_values,
                           markdown_table, paper_value)
from oodlib.store import ModelSpec, get_model, model_info

check_chapter("section2_2_pigeonhole", globals())  # the declared parameters, checked as the runner does
torch.manual_seed(seed)
spec = ModelSpec.make(arch, dataset, epochs=epochs, seed=seed)
results = Results()
chapter_banner("section2_2_pigeonhole", globals(),
               departures="The counting (tables and figure) is exact and profile-independent. The empirical "
                          f"part encodes images with the book's {arch} on {dataset} instead of the paper's "
                          "ImageNet ResNet-18; the argument it tests is the same.")

# %% [markdown]
# ## How much smaller is the latent space?
#
# Each row counts the distinct 8-bit inputs, $2^{8\,n}$ for $n$ input values, and the float32 bit patterns of the
# code, $2^{32\,d}$ for a $d$-dimensional $z$. Rows above the line are the encoders the paper attacks; below it
# are this book's stand-ins (counted from the models themselves, untrained). Colour images count three values per
# pixel; the grey OCT and CT images count one, since copying a channel three times adds no distinct inputs.

# %%
book_specs = {
    f"{arch} ({dataset}), the book's default encoder": spec,
    f"small_resnet ({dataset}), the second encoder": ModelSpec.make("small_resnet", dataset, epochs=epochs,
                                                                   seed=seed),
    f"small_cnn, 128-d z ({dataset}), Appendix B.3 stand-in": ModelSpec.make(
        "small_cnn", dataset, epochs=epochs, seed=seed, options={"latent_dim": 128}),
    "small_cnn, instance norm (lfw), Appendix B.2 stand-in": ModelSpec.make(
        "small_cnn", "lfw", epochs=epochs, seed=seed, options={"norm": "instance"}),
    f"mlp ({dataset}), null-space chapter": ModelSpec.make("mlp", dataset, epochs=epochs, seed=seed),
}
book_encoders = [pigeonhole.spec_encoder_space(name, s) for name, s in book_specs.items()]
book_encoders.append(pigeonhole.encoder_space(f"conv auto-encoder ({dataset}), Section 2.4",
                                              AutoEncoderSpec(dataset=dataset).untrained()))
encoders = list(pigeonhole.PAPER_ENCODERS) + book_encoders
coverage = {e.name: pigeonhole.paper_scale_coverage(e) for e in encoders}
resnet = pigeonhole.PAPER_ENCODERS[0]
coverage_resnet = pigeonhole.paper_scale_coverage(resnet, n_in_distribution=14_000_000)
paper_log2_ratio = paper_value("section2_2_pigeonhole", "log2_ratio")  # 2^(32·512) / 256^(224·224·3), log2
results.add("Section 2.2: ResNet-18 (ImageNet), log2(|F| / |Omega|)", "log2 of the size ratio",
            resnet.log2_ratio, paper=paper_log2_ratio, note="exact integer count; float32 bit patterns")
results.add("Section 2.2: ResNet-18, P(F_out = F) at |Omega_out| = 256^150528 - 1.4e7", "probability",
            coverage_resnet, note="paper: 'close to 1'; coupon-collector limit, exact to double precision")
for e in book_encoders:
    results.add(f"Section 2.2 (book): {e.name}, log2(|F| / |Omega|)", "log2 of the size ratio", e.log2_ratio)
glue_values(log2_ratio_resnet=resnet.log2_ratio, neg_log2_ratio=-resnet.log2_ratio,
            neg_log10_ratio_resnet=-resnet.log2_ratio * np.log10(2.0), compression_default=book_encoders[0].compression,
            compression_resnet=resnet.compression, coverage_resnet=coverage_resnet,
            resnet_threshold=resnet.log2_latent_space * np.log(2.0))
rows = [[e.name, f"{e.n_inputs:,}", str(e.latent_dim), e.compression, f"{e.log2_input_space:,}",
         f"{e.log2_latent_space:,}", f"{e.log2_ratio:,}", coverage[e.name]] for e in encoders]
rows.insert(len(pigeonhole.PAPER_ENCODERS), ["*this book*", "", "", "", "", "", "", ""])
markdown_table(["encoder", "input values n", "latent dim d", "n / d", "log₂ |Ω| = 8n", "log₂ |F| = 32d",
                "log₂ (|F| / |Ω|)", "P(F_out = F)"], rows,
               caption="Discrete input and latent space sizes (8-bit inputs, float32 codes) and the worst-case "
                       "coverage probability at those sizes; counts are exact and do not depend on the profile",
               name="tbl-s22-spaces", digits=1)

# %% [markdown]
# For ResNet-18, $\log_2(|\mathcal{F}|/|\Omega|)$ = {glue:text}`log2_ratio_resnet:,.0f`: the latent space is
# $10^{-x}$ times the input space with $x \approx$ {glue:text}`neg_log10_ratio_resnet:,.0f`, exactly the paper's
# ratio $2^{32\times 512} / 256^{224\times 224\times 3}$ ({numref}`tbl-s22-spaces`). Every encoder in the table —
# including the book's small ones, which compress {glue:text}`compression_default:.1f` input values into one latent
# entry (ResNet-18: {glue:text}`compression_resnet:.0f`) — has a latent space smaller than its input space by
# thousands of binary orders of magnitude, so none of them can be injective.
#
# ## How fast does coverage become certain?
#
# The coverage probability depends on how many OOD inputs there are per latent code. Exact values (solid) come
# from the Stirling-number formula; for large $|\mathcal{F}|$ the coupon-collector limit {cite:p}`theory-erdos1961`
# $\exp(-|\mathcal{F}|\, e^{-|\Omega_{out}|/|\mathcal{F}|})$ (dashed) is used, whose error at those sizes is
# below $10^{-6}$. Circles are Monte-Carlo estimates: the fraction of {glue:text}`n_trials` simulated uniform
# placements that hit every spot.

# %%
curves = pigeonhole.coverage_curves([10, 100, 10**4, 10**8, 2 ** resnet.log2_latent_space],
                                    np.geomspace(1.0, 3.0e4, 160))
cases = [(m, 10) for m in (15, 20, 25, 30, 40, 60)] + [(m, 100) for m in (350, 420, 460, 550, 700)]
simulated = pigeonhole.simulation_table(cases, n_trials, seed=seed)
glue_value("n_trials", n_trials)
glue_value("max_abs_z", simulated["z_score"].abs().max())
glue_figure("fig_coverage", pigeonhole.coverage_figure(curves, simulated))
for row in simulated.itertuples():
    results.add(f"Section 2.2: coverage, |Omega_out| = {row.points}, |F| = {row.spots}",
                "Monte-Carlo P(F_out = F)", row.simulated, note=f"exact {row.exact:.4f}")
markdown_table(["|Ω_out|", "|F|", "|Ω_out| / |F|", "exact P", "Monte Carlo", "standard error", "z-score"],
               [[str(r.points), str(r.spots), r.points_per_spot, r.exact, r.simulated, r.std_error, r.z_score]
                for r in simulated.itertuples()],
               caption=f"Exact coverage probability against a Monte-Carlo estimate from {n_trials} trials "
                       f"(profile {profile})", name="tbl-s22-simulation")

# %% [markdown]
# ```{glue:figure} fig_coverage
# :name: fig-s22-coverage
#
# Probability that i.i.d. uniformly mapped OOD inputs cover every latent code, against the number of OOD inputs
# per code, for five sizes of the latent space (the last is ResNet-18's $2^{32\times 512}$). Dotted lines: the
# coupon-collector threshold $\ln|\mathcal{F}|$. Circles: Monte Carlo with two-standard-error bars.
# ```
#
# The simulation agrees with the formula (largest |z-score| {glue:text}`max_abs_z:.2f` in
# {numref}`tbl-s22-simulation`). Coverage switches from almost impossible to almost certain around
# $|\Omega_{out}| \approx |\mathcal{F}| \ln |\mathcal{F}|$ — about {glue:text}`resnet_threshold:,.0f` OOD inputs
# per code for ResNet-18. The real ratio is $2^{k}$ inputs per code with $k$ = {glue:text}`neg_log2_ratio:,.0f`, so
# under the paper's model the coverage probability is {glue:text}`coverage_resnet:.1f` to double precision, as
# the paper says.
#
# ## What the counting argument proves, and what it does not
#
# *What it proves.* Non-injectivity is a certainty, not a probability: with fewer codes than inputs, at least
# $|\Omega| - |\mathcal{F}|$ inputs share a code with another input. Every encoder in {numref}`tbl-s22-spaces`
# maps huge sets of images onto each single code it can produce.
#
# *What it does not prove.*
# - **It counts float32 bit patterns, not codes an encoder can produce.** $2^{32}$ patterns per entry include
#   NaNs, infinities and both zeros; a ReLU encoder never emits a negative entry; and a trained network maps the
#   bounded pixel cube onto a small, structured subset of $\mathbb{R}^d$. The true $|\mathcal{F}|$ is far
#   smaller — which only strengthens non-injectivity, but says nothing about *where* the collisions are.
# - **The coverage probability is a model, not a measurement.** A trained encoder is a fixed, deterministic,
#   highly non-uniform map, not an i.i.d. uniform one. The collisions that must exist could all be OOD–OOD (many
#   noise images sharing one "noise" code) rather than OOD–ID.
# - **It does not show that an OOD image maps onto a given in-distribution code $z_{in}$, nor that such an image
#   lies within ε of a given start image $x'_{out}$, nor that it still looks OOD.** Those are exactly what
#   Algorithm 1 has to find, and whether it can depends on ε and on the model (Section 2.1, where a small ε fails
#   on a small encoder). The same count also applies to the auto-encoder of Section 2.4, whose detector
#   nevertheless catches the attack, because it looks at $x$ as well as $z$.
#
# The next experiment makes the second point concrete: it encodes images with the book's trained encoder
# ({glue:text}`accuracy:.1%` test accuracy) and asks, for each image, how close its code comes to the code of
# *any* of the in-distribution training images (the smallest MAPE, Section 3's metric, over the whole training
# set).

# %%
model = get_model(spec, device=device)
glue_value("accuracy", model_info(spec)["test_accuracy"])
train, test = data.load_dataset(dataset, "train"), data.load_dataset(dataset, "test")
size, channels = test.x.shape[-1], test.x.shape[1]
queries = {
    "ID test images": test.x,
    "uniform noise": data.start_batch("noise", n_noise, size=size, channels=channels, seed=seed + 1),
    "natural images (OOD)": data.natural_ood_set(n_natural, size=size, channels=channels, seed=seed),
}
z_train = experiments.encode(model, train.x)
nearest = {name: pigeonhole.nearest_code_mape(experiments.encode(model, x), z_train) for name, x in queries.items()}
glue_figure("fig_nearest", plots.mape_histogram(nearest))
nearest_rows = [[name, str(len(v)), v.median(), v.min(), metrics.mape_fraction_below(v)] for name, v in nearest.items()]
for name, count, median, smallest, fraction in nearest_rows:
    results.add(f"Section 2.2 (beyond the paper): {name}, nearest training code", "fraction MAPE < 0.1%",
                fraction, note=f"median nearest MAPE {format_percent(median)} over {count} images")
glue_values(noise_min_mape=nearest["uniform noise"].min(), natural_min_mape=nearest["natural images (OOD)"].min(),
            id_median_mape=nearest["ID test images"].median())
markdown_table(["images", "count", "median nearest MAPE", "smallest nearest MAPE", "fraction < 0.1%"],
               nearest_rows, caption=f"MAPE between each image's code and the nearest code of the {len(train)} "
                                     f"training images ({arch} on {dataset}, profile {profile})",
               name="tbl-s22-nearest")

# %% [markdown]
# ```{glue:figure} fig_nearest
# :name: fig-s22-nearest
#
# For each image, the MAPE between its code and the closest code among the in-distribution training images. The
# dashed line is the paper's 0.1% threshold.
# ```
#
# Not one unattacked OOD image comes near an in-distribution code: the smallest nearest-code MAPE is
# {glue:text}`noise_min_mape` for noise and {glue:text}`natural_min_mape` for natural images
# ({numref}`tbl-s22-nearest`), while held-out digits typically sit at {glue:text}`id_median_mape` from a training
# digit. Images drawn at random, even by the thousand, land in their own region of the latent space; the OOD–ID
# collisions that the counting argument makes plausible are a vanishing fraction of all inputs and must be
# *searched for* — which is what Algorithm 1 does (Section 2.1) and what the null-space construction does
# exactly for linear and ReLU networks (the next chapter).

# %%
results.save()
results.table(f"Section 2.2: measured values (profile {profile})", "tbl-s22-results")
