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
# # Appendix C — ODIN under the OOD attack
#
# ODIN {cite:p}`odin_liang2018` improves the maximum-softmax baseline {cite:p}`hendrycks2017baseline` in two ways:
# it divides the logits by a temperature $T$ before the softmax, and it nudges the input towards higher confidence
# before scoring it,
#
# $$
# \tilde x = x - \varepsilon\, \operatorname{sign}\!\big(\nabla_x \mathrm{CE}(f(x)/T, \hat y)\big), \qquad
# S(x) = \max_c \operatorname{softmax}\big(f(\tilde x)/T\big)_c ,
# $$
#
# with $\hat y$ the predicted class and $\varepsilon$ the *perturbation magnitude* (PM). Appendix C of the attack
# paper {cite:p}`liang2020ood` attacks ODIN with Algorithm 1, taking as $f(x)$ "the logits output from the model,
# given the preprocessed input": the attack differentiates through the preprocessing. Because $\operatorname{sign}$
# is piecewise constant, $\partial\tilde x/\partial x = I$ almost everywhere and the gradient through the
# preprocessing is the gradient at $\tilde x$ (`oodlib.detectors.odin`; the unit tests check it against a
# second-order `create_graph=True` computation). The paper reports an AUROC of 0.500 for every
# $T \in \{1, 10, 100, 1000\}$ and PM $\in \{0, 0.001, 0.002, 0.004\}$ (its Table 2) and shows the score
# histograms at $T = 1000$, PM = 0.001 (its Figure 13). ODIN with $T = 1$, PM = 0 is the MSP baseline.
#
# As a modern reference we add the energy score {cite:p}`energy_liu2020`, $\operatorname{logsumexp}(f(x))$, which
# the paper did not test. It is a function of the logits alone, so the same attack applies to it.

# %% tags=["parameters"]
profile: str = "default"  # one of profiles; chosen with --profile (the runner sets it)
seed: int = 0  # in [0, 4294967295]; seed of data subsets, training and attack starts
device: str = "auto"  # one of devices; torch device; auto takes CUDA when available
dataset: str = "mnist5k"  # one of datasets; in-distribution dataset
arch: str = "small_cnn"  # one of archs; classifier architecture
epochs: int = 6  # > 0; training epochs of the classifier
n_eval: int = 1000  # > 0; test images the detector is evaluated on
n_samples: int = 100  # > 0; in-distribution test images attacked
start: str = "noise"  # one of start images; start image x'_out of the attack
eps: float = 10.0  # > 0; L2 budget ε of the attack, [0, 1] pixel units
steps: int = 100  # > 0; attack iterations N
temperatures: list[float] = [1.0, 10.0, 100.0, 1000.0]  # > 0 and nonempty; ODIN temperatures T
magnitudes: list[float] = [0.0, 0.001, 0.002, 0.004]  # at least 0 and nonempty; ODIN input-perturbation magnitudes
figure_temperature: float = 1000.0  # in temperatures; T of the figures
figure_magnitude: float = 0.001  # in magnitudes; magnitude of the figures

# %%
import torch

from oodlib import data, experiments, metrics, plots
from oodlib.attack import ood_attack
from oodlib.detectors.energy import Energy
from oodlib.detectors.odin import ODIN
from oodlib.params import check_chapter
from oodlib.report import Results, glue_figure, glue_value, glue_values, markdown_table, paper_value, profile_banner
from oodlib.store import ModelSpec, get_model, model_info

check_chapter("appendix_c_odin", globals())  # the declared parameters, checked as the runner does
torch.manual_seed(seed)
spec = ModelSpec.make(arch, dataset, epochs=epochs, seed=seed)
model = get_model(spec, device=device)
test = data.load_dataset(dataset, "test", limit=n_eval, seed=seed)
x_eval = test.x
x_in = test.subset(n_samples, seed=seed).x
size, channels = x_in.shape[-1], x_in.shape[1]
x_natural = data.natural_ood_set(len(x_eval), size=size, channels=channels, seed=seed)
x_start = data.start_batch(start, n_samples, size=size, channels=channels, seed=seed)
x_natural_start = data.natural_ood_set(n_samples, size=size, channels=channels, seed=seed + 1)
n_values = x_in[0].numel()
eps_cifar = paper_value("appendices", "eps_cifar")  # the paper's ε = 10 on 32×32×3
eps_matched = experiments.scale_eps(eps_cifar, n_values, paper_values=3 * 32 * 32)
configs = [(t, m) for m in magnitudes for t in temperatures]
detectors = {c: ODIN(model, temperature=c[0], magnitude=c[1]) for c in configs}
energy = Energy(model)
figure_config = (figure_temperature, figure_magnitude)
paper_auroc = paper_value("appendix_c", "attacked_auroc")  # Table 2: every T and PM
results = Results()
accuracy = glue_value("accuracy", model_info(spec)["test_accuracy"])
rms_paper = experiments.rms_per_value(eps_cifar, 3 * 32 * 32)
glue_values(n_samples=n_samples, n_eval=len(x_eval), steps=steps, eps=eps, eps_matched=eps_matched,
            rms_eps=experiments.rms_per_value(eps, n_values), rms_paper=rms_paper)
profile_banner(profile, {"dataset": dataset, "arch": arch, "epochs": epochs, "n_eval": len(x_eval),
                         "n_samples": n_samples, "start": start, "eps": eps, "steps": steps,
                         "temperatures": temperatures, "magnitudes": magnitudes},
               departures=f"The paper attacks a WRN-28-10 (94.71% accuracy) on all 10,000 CIFAR-10 test images "
                          f"(32×32×3) with ε = 10 and N = 100. Here a {arch} ({accuracy:.1%} test accuracy) on "
                          f"{n_samples} {dataset} test images ({n_values} values each) with the same N and ε = "
                          f"{eps:g}, which on this image size is a root-mean-square change of "
                          f"{experiments.rms_per_value(eps, n_values):.3f} per value against the paper's "
                          f"{rms_paper:.3f}: the budget with the paper's per-value size (ε = {eps_matched:.2f}) "
                          f"cannot match the logits from noise on this model (see below). Clean detection uses "
                          f"{len(x_eval)} test images against as many natural-image crops.")

# %% [markdown]
# ## Clean detection
#
# Before any attack: the AUROC (in-distribution positive) of each ODIN setting and of the energy score, against
# natural-image crops (`oodlib.data.natural_ood_set`, {glue:text}`n_eval` of each) and against the noise images
# that the attack starts from.

# %%
clean_natural = {c: experiments.detector_auroc(d, x_eval, x_natural) for c, d in detectors.items()}
clean_start = {c: experiments.detector_auroc(d, x_in, x_start) for c, d in detectors.items()}
energy_clean = (experiments.detector_auroc(energy, x_eval, x_natural),
                experiments.detector_auroc(energy, x_in, x_start))
glue_values(msp_natural=clean_natural[(temperatures[0], magnitudes[0])], fig_natural=clean_natural[figure_config],
            fig_start=clean_start[figure_config], energy_natural=energy_clean[0])
markdown_table(["T", "PM", "AUROC vs natural crops", f"AUROC vs {start} starts"],
               [[f"{t:g}", f"{m:g}", clean_natural[(t, m)], clean_start[(t, m)]] for t, m in configs]
               + [["energy", "—", *energy_clean]],
               caption=f"Clean AUROC of ODIN and of the energy score (ID positive, in-scores; profile {profile})",
               name="tbl-c-clean")

# %% [markdown]
# The MSP baseline ($T = 1$, PM = 0) separates the digits from natural crops with an AUROC of
# {glue:text}`msp_natural:.3f`, but at $T = 1000$, PM = 0.001 the AUROC drops to {glue:text}`fig_natural:.3f`, and
# against noise it is {glue:text}`fig_start:.3f`: this small MNIST classifier gives noise and natural crops
# *larger* logit gaps than digits, and a high temperature ranks inputs by that gap (at large $T$,
# $\max_c \operatorname{softmax}(f/T)_c \approx 1/K + (\max_c f_c - \bar f)/(KT)$). ODIN's tuning was done on
# CIFAR-scale networks, where large $T$ helps; on this model it hurts, and the perturbation magnitudes, which the
# ODIN paper also chose for CIFAR, barely change the score. The energy score behaves like the large-$T$ settings
# ({glue:text}`energy_natural:.3f` against natural crops). The attack's noise starts are therefore *not* detected
# to begin with; the attack still has to make their scores equal to those of the digits, which is what Table 2
# measures.
#
# ## The attack: f(x) = the logits of the preprocessed input
#
# For every setting with PM > 0 we run Algorithm 1 (the authors' routine: Adamax on the perturbation, step ε/100,
# the last iterate) with $f(x) = f_{\text{logits}}(\tilde x)$, pairing each of the {glue:text}`n_samples` test
# images with its own noise start. With PM = 0, $\tilde x = x$ for every $T$, so one attack on the plain logits
# serves the four temperatures. The AUROC is then measured between the paired in-distribution images and the
# attacked images, as in the paper.

# %%
attack = {"eps": eps, "steps": steps, "seed": seed, "routine": "authors"}
logit_attack = ood_attack(model, x_in, x_start, **attack)
attacks = {c: logit_attack if c[1] == 0 else ood_attack(d, x_in, x_start, target="logits", **attack)
           for c, d in detectors.items()}
attacked = {c: experiments.detector_auroc(d, x_in, attacks[c].x) for c, d in detectors.items()}
transfer = {c: experiments.detector_auroc(d, x_in, logit_attack.x) for c, d in detectors.items()}
logit_mape = {c: metrics.mape(experiments.encode(model, attacks[c].x), experiments.encode(model, x_in)).median()
              for c in configs}
energy_attacked = experiments.detector_auroc(energy, x_in, logit_attack.x)
for t, m in configs:
    results.add(f"Table 2: T={t:g}, PM={m:g}", "AUROC under attack", attacked[(t, m)], paper=paper_auroc)
results.add("Energy score (not in the paper), f(x) = logits", "AUROC under attack", energy_attacked)
glue_values(auroc_min=min(attacked.values()), auroc_max=max(attacked.values()), transfer_min=min(transfer.values()),
            transfer_max=max(transfer.values()), energy_attacked=energy_attacked,
            mape_logits=logit_mape[(temperatures[0], magnitudes[0])])
markdown_table(["T", "PM", "clean AUROC vs starts", f"attacked AUROC (paper: {paper_auroc:.3f})",
                "attacked with f = plain logits", "median logit MAPE"],
               [[f"{t:g}", f"{m:g}", clean_start[(t, m)], attacked[(t, m)], transfer[(t, m)], logit_mape[(t, m)]]
                for t, m in configs]
               + [["energy", "—", energy_clean[1], energy_attacked, energy_attacked,
                   logit_mape[(temperatures[0], magnitudes[0])]]],
               caption=f"Table 2 reproduced: ODIN's AUROC between {n_samples} test images and their attacked noise "
                       f"images (ε = {eps:g}, N = {steps}; ID positive, in-scores; profile {profile}). The "
                       f"fifth column scores the images of the plain-logits attack (PM = 0) with each setting; the "
                       f"last gives the median MAPE of the logits (not of the preprocessed logits).",
               name="tbl-c-table2", digits=3)

# %% [markdown]
# Under attack every setting gives an AUROC between {glue:text}`auroc_min:.3f` and {glue:text}`auroc_max:.3f`
# against the paper's 0.500 everywhere ({numref}`tbl-c-table2`); the energy score gives
# {glue:text}`energy_attacked:.3f`. The plain-logits attack, which ignores the preprocessing altogether, is scored
# between {glue:text}`transfer_min:.3f` and {glue:text}`transfer_max:.3f`: a step of at most 0.004 per pixel cannot
# undo a match of the logits, so the preprocessing offers no protection even against an attacker who does not
# model it. The attack matches the logits to a median MAPE of {glue:text}`mape_logits:.3f` — far from the paper's
# 0.1 % on encoders, but the ODIN score only needs the *ranking* of the softmax to look in-distribution. Against
# the noise starts this is the move from an AUROC near 0 (the detector already ranked the noise above the digits)
# to 0.5; the next section repeats it from starts that the detector does catch.

# %%
figure_detector = detectors[figure_config]
fig = plots.score_histogram(figure_detector.score_batched(x_in),
                            figure_detector.score_batched(attacks[figure_config].x),
                            score_out_clean=figure_detector.score_batched(x_start),
                            xlabel=f"ODIN in-score (T = {figure_temperature:g}, PM = {figure_magnitude:g})",
                            auroc=attacked[figure_config])
glue_figure("fig_c_hist", fig)
shown = slice(None, None, max(1, n_samples // 8))  # every k-th pair, so that several classes appear
fig = plots.image_grid({"ID": x_in[shown], "start": x_start[shown], "attacked": attacks[figure_config].x[shown]}, n=8)
glue_figure("fig_c_images", fig)

# %% [markdown]
# ```{glue:figure} fig_c_hist
# :name: fig-c-hist
#
# Figure 13 reproduced: ODIN in-scores at $T = 1000$, PM = 0.001 of the in-distribution test images (blue), of
# the attacked images (red) and of the noise start images before the attack (grey).
# ```
#
# ```{glue:figure} fig_c_images
# :name: fig-c-images
#
# In-distribution images, their noise start images and the attacked images ($T = 1000$, PM = 0.001). The attacked
# images still look like noise: they are out-of-distribution samples that ODIN scores like digits.
# ```
#
# ## Starts that the detector catches
#
# To see the attack defeat a detector that works, we repeat the plain-logits attack from natural-image crops (a
# second draw of `natural_ood_set`, disjoint from the evaluation crops above) and score the result with the MSP
# baseline ($T = 1$, PM = 0), the one setting that separates natural crops on this model.

# %%
natural_attack = ood_attack(model, x_in, x_natural_start, **attack)
msp = detectors[(temperatures[0], magnitudes[0])]
natural_clean = experiments.detector_auroc(msp, x_in, x_natural_start)
natural_attacked = experiments.detector_auroc(msp, x_in, natural_attack.x)
results.add(f"Appendix C: MSP (T={temperatures[0]:g}, PM={magnitudes[0]:g}), natural-image starts",
            "AUROC under attack", natural_attacked, paper=paper_auroc, note=f"clean: {natural_clean:.3f}")
glue_value("natural_clean", natural_clean)
glue_value("natural_attacked", natural_attacked)
fig = plots.image_grid({"ID": x_in[shown], "start": x_natural_start[shown], "attacked": natural_attack.x[shown]}, n=8)
glue_figure("fig_c_natural", fig)

# %% [markdown]
# From natural crops, the MSP baseline's AUROC falls from {glue:text}`natural_clean:.3f` before the attack to
# {glue:text}`natural_attacked:.3f` after it ({numref}`fig-c-natural`).
#
# ```{glue:figure} fig_c_natural
# :name: fig-c-natural
#
# In-distribution images, natural-image start crops and the attacked crops (plain-logits attack, ε as above).
# ```
#
# ## The paper's per-value budget
#
# The paper's ε = 10 on 32×32×3 images is a root-mean-square change of {glue:text}`rms_paper:.3f` per value; on
# this image size the same change is ε = {glue:text}`eps_matched:.2f`, which is why the chapter uses ε =
# {glue:text}`eps:g` ({glue:text}`rms_eps:.3f` per value) instead.

# %%
small_attack = ood_attack(model, x_in, x_start, **{**attack, "eps": eps_matched})
small_mape = metrics.mape(experiments.encode(model, small_attack.x), experiments.encode(model, x_in)).median()
small_auroc = experiments.detector_auroc(figure_detector, x_in, small_attack.x)
results.add(f"Appendix C: plain-logits attack at eps = {eps_matched:.2f} (the paper's RMS per value)",
            "median logit MAPE", small_mape)
results.add(f"Appendix C: plain-logits attack at eps = {eps_matched:.2f}, ODIN T={figure_temperature:g}, "
            f"PM={figure_magnitude:g}", "AUROC under attack", small_auroc, paper=paper_auroc)
glue_values(small_mape=small_mape, small_auroc=small_auroc, mean_start=x_start.mean(), mean_id=x_in.mean())

# %% [markdown]
# At ε = {glue:text}`eps_matched:.2f` the median logit MAPE stays at {glue:text}`small_mape:.3f` (against
# {glue:text}`mape_logits:.3f` at ε = {glue:text}`eps:g`) and the AUROC at $T = 1000$, PM = 0.001 is
# {glue:text}`small_auroc:.3f`: the noise starts have a mean grey level of {glue:text}`mean_start:.2f` where the
# digits average {glue:text}`mean_id:.2f`, and inside the smaller ball the attack cannot bring the noise's logits
# down to a digit's.
#
# ## Summary
#
# Where the paper finds 0.500 for all sixteen settings, we find values close to it once the budget is large
# enough to match the logits; the preprocessing is no obstacle. Two differences are due to scale: this model is
# over-confident on noise, so ODIN fails on the noise starts before any attack, and the budget has twice the
# paper's per-value size.

# %%
results.save()
results.table(f"Appendix C: measured values beside the paper's (profile {profile})", "tbl-c-results")
