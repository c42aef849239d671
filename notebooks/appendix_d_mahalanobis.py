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
# # Appendix D — The Mahalanobis detector under the OOD attack
#
# The Mahalanobis detector {cite:p}`mahalanobis_lee2018` mean-pools the feature maps of several layers into vectors
# $h_\ell(x)$, fits one Gaussian per class with a covariance $\Sigma_\ell$ shared by the classes, and scores
#
# $$
# M_\ell(x) = \max_c -\tfrac12 \big(h_\ell(\hat x_\ell) - \mu_{\ell,c}\big)^\top \Sigma_\ell^{-1}
# \big(h_\ell(\hat x_\ell) - \mu_{\ell,c}\big), \qquad
# \hat x_\ell = x - \varepsilon \operatorname{sign}\!\big(\nabla_x \tfrac12 d^2_{\ell}(x, \hat c_\ell)\big),
# $$
#
# where $\hat c_\ell$ is the closest class and ε the perturbation magnitude (PM). The original combines the layers
# with weights fitted on OOD validation data; the attack paper {cite:p}`liang2020ood` (Appendix D) averages them,
# since such data is not available in practice, and so do we (`oodlib.detectors.mahalanobis`; float64 statistics
# and a small relative ridge on each covariance). The paper attacks it with two choices of $f(x)$ — (1) the score
# itself and (2) the concatenated pooled feature vectors of the original input — from noise, and reports the AUROCs
# of {numref}`tbl-d-paper` below (the paper's Tables 3 and 4). With f = features and PM = 0.01 the attacked images
# even score *more* in-distribution than the test images (the paper's Figure 15).

# %% tags=["parameters"]
profile: str = "default"  # one of profiles; chosen with --profile (the runner sets it)
seed: int = 0  # in [0, 4294967295]; seed of data subsets, training and attack starts
device: str = "auto"  # one of devices; torch device; auto takes CUDA when available
dataset: str = "mnist5k"  # one of datasets; in-distribution dataset
second_dataset: str = "digits"  # one of datasets; dataset of the second classifier
second_image_size: int = 28  # > 0; image side the second dataset is resized to
arch: str = "small_cnn"  # one of archs; classifier architecture
epochs: int = 6  # > 0; training epochs of the classifier
second_epochs: int = 15  # > 0; training epochs of the second classifier
n_fit: int = 4000  # > 0; training images the detector is fitted on
n_eval: int = 1000  # > 0; test images the detector is evaluated on
n_samples: int = 100  # > 0; in-distribution test images attacked
start: str = "noise"  # one of start images; start image x'_out of the attack
eps: float = 10.0  # > 0; L2 budget ε of the attack, [0, 1] pixel units
steps: int = 100  # > 0; attack iterations N
magnitudes: list[float] = [0.0, 0.01]  # at least 0 and nonempty; input-perturbation magnitudes
figure_magnitude: float = 0.01  # in magnitudes; magnitude of the figures
ridge: float = 1e-6  # > 0; ridge added to the class covariance before inversion

# %%
import torch

from oodlib import data, experiments, plots
from oodlib.attack import ood_attack
from oodlib.detectors.mahalanobis import Mahalanobis
from oodlib.params import check_chapter
from oodlib.report import (Results, glue_figure, glue_value, markdown_table, paper_value, paper_values_frame,
                           profile_banner, table)
from oodlib.store import ModelSpec, get_model, model_info, training_data

check_chapter("appendix_d_mahalanobis", globals())  # the declared parameters, checked as the runner does
torch.manual_seed(seed)
names = [dataset, second_dataset]
specs = {dataset: ModelSpec.make(arch, dataset, epochs=epochs, seed=seed),
         second_dataset: ModelSpec.make(arch, second_dataset, epochs=second_epochs, seed=seed,
                                        image_size=second_image_size)}
models = {name: get_model(spec, device=device) for name, spec in specs.items()}
accuracy = {name: model_info(spec)["test_accuracy"] for name, spec in specs.items()}
train = {name: training_data(spec, "train").subset(n_fit, seed=seed) for name, spec in specs.items()}
test = {name: training_data(spec, "test").subset(n_eval, seed=seed) for name, spec in specs.items()}
x_in = {name: test[name].subset(n_samples, seed=seed).x for name in names}
x_start = {name: data.start_batch(start, n_samples, size=x.shape[-1], channels=x.shape[1], seed=seed)
           for name, x in x_in.items()}
x_natural = {name: data.natural_ood_set(len(test[name]), size=x.shape[-1], channels=x.shape[1], seed=seed)
             for name, x in x_in.items()}
fitted = {name: Mahalanobis(models[name], ridge=ridge).fit(train[name].x, train[name].y) for name in names}
detectors = {(name, m): fitted[name].with_magnitude(m) for name in names for m in magnitudes}
n_values = x_in[dataset][0].numel()
results = Results()
for name in names:
    glue_value(f"accuracy_{name}", accuracy[name])
    glue_value(f"n_eval_{name}", len(test[name]))
glue_value("n_samples", n_samples)
glue_value("steps", steps)
glue_value("rms_eps", experiments.rms_per_value(eps, n_values))
profile_banner(profile, {"datasets": names, "arch": arch, "epochs": [epochs, second_epochs], "n_fit": n_fit,
                         "n_eval": n_eval, "n_samples": n_samples, "start": start, "eps": eps, "steps": steps,
                         "magnitudes": magnitudes, "ridge": ridge},
               departures=f"The paper uses the authors' pretrained ResNet-34 on CIFAR-10 and CIFAR-100 (five "
                          f"feature layers), ε = 10 on 32×32×3 images and N = 1000 on every test image. Here a "
                          f"{arch} per in-distribution set — {dataset} ({accuracy[dataset]:.1%} test accuracy) and "
                          f"{second_dataset} upsampled to {x_in[second_dataset].shape[-1]}×"
                          f"{x_in[second_dataset].shape[-1]} ({accuracy[second_dataset]:.1%}) — with its "
                          f"{len(models[dataset].feature_maps(x_in[dataset][:1]))} feature layers, {n_samples} test "
                          f"images per set, ε = {eps:g} (a root-mean-square change of "
                          f"{experiments.rms_per_value(eps, n_values):.3f} per value, twice the paper's "
                          f"{experiments.rms_per_value(10.0, 3 * 32 * 32):.3f}; Appendix C shows why) and N = {steps}.")

# %%
paper_tables = paper_values_frame().query("chapter == 'appendix_d'")
table(paper_tables, columns=["source", "quantity", "value"],
      caption="The paper's Tables 3 and 4 (its networks trained on CIFAR-10, then on CIFAR-100): AUROC under "
              "attack, ID positive, in-scores", name="tbl-d-paper")

# %% [markdown]
# The second in-distribution set stands in for CIFAR-100: the paper changes the in-distribution data and keeps
# the architecture, and so do we, with scikit-learn's 8×8 digits upsampled to the size of MNIST. They are blurrier
# and brighter than MNIST digits and come from other writers, so the two rows test the detector on two different
# in-distribution statistics with one architecture.
#
# ## Clean detection

# %%
clean = {key: (experiments.detector_auroc(d, test[key[0]].x, x_natural[key[0]]),
               experiments.detector_auroc(d, x_in[key[0]], x_start[key[0]])) for key, d in detectors.items()}
markdown_table(["in-distribution", "PM", "AUROC vs natural crops", f"AUROC vs {start} starts"],
               [[name, f"{m:g}", *clean[(name, m)]] for name, m in detectors],
               caption=f"Clean AUROC of the Mahalanobis detector, layers averaged (ID positive, in-scores; "
                       f"profile {profile})", name="tbl-d-clean")

# %% [markdown]
# ## The attack with f(x) = the score and f(x) = the concatenated features
#
# For each in-distribution set we run Algorithm 1 (the authors' routine) from noise, once on the concatenated
# pooled features of the original input — one attack serves both PMs, since only the scoring preprocesses — and
# once on the score itself for each PM (the preprocessing is then inside $f$). The score is a scalar, so its MAPE is
# the relative error $|M(x_{out}) - M(x_{in})| / |M(x_{in})|$.

# %%
attack = {"eps": eps, "steps": steps, "seed": seed, "routine": "authors"}
feature_attacks = {name: ood_attack(fitted[name], x_in[name], x_start[name], target="features", **attack)
                   for name in names}
score_attacks = {(name, m): ood_attack(d, x_in[name], x_start[name], target="score", **attack)
                 for (name, m), d in detectors.items()}
attacked = {(name, m, "score"): experiments.detector_auroc(d, x_in[name], score_attacks[(name, m)].x)
            for (name, m), d in detectors.items()}
attacked.update({(name, m, "features"): experiments.detector_auroc(d, x_in[name], feature_attacks[name].x)
                 for (name, m), d in detectors.items()})
mape = {(name, m, "score"): score_attacks[(name, m)].mape.median() for name, m in detectors}
mape.update({(name, m, "features"): feature_attacks[name].mape.median() for name, m in detectors})
table_number = {names[0]: 3, names[1]: 4}  # the paper's CIFAR-10 (Table 3) and CIFAR-100 (Table 4)
paper_auroc = {(name, m, target): paper_value("appendix_d", f"table{table_number[name]}_{target}_pm{m:g}",
                                              missing_ok=True) for name, m, target in attacked}
for (name, m, target), value in attacked.items():
    results.add(f"Table {table_number[name]}: {name}, PM={m:g}, f(x) = {target}", "AUROC under attack", value,
                paper=paper_auroc[(name, m, target)])
for which, name in zip(("first", "second"), names):
    glue_value(f"score_auroc_{which}", min(attacked[(name, m, "score")] for m in magnitudes))
    glue_value(f"features_auroc_{which}", min(attacked[(name, m, "features")] for m in magnitudes))
    glue_value(f"score_mape_{which}", min(mape[(name, m, "score")] for m in magnitudes))
    glue_value(f"id_mean_{which}", x_in[name].mean())
    glue_value(f"shift_cost_{which}", (x_start[name].mean() - x_in[name].mean()).abs() * x_in[name][0].numel() ** 0.5)
glue_value("start_mean", x_start[names[0]].mean())
glue_value("eps", eps)
markdown_table(["in-distribution", "PM", "f(x)", "median MAPE of f", "attacked AUROC", "paper (CIFAR-10 / -100)"],
               [[name, f"{m:g}", target, mape[(name, m, target)], attacked[(name, m, target)],
                 paper_auroc[(name, m, target)] or "—"]
                for name in names for m in magnitudes for target in ("score", "features")],
               caption=f"Tables 3 and 4 reproduced: AUROC between {n_samples} test images and their attacked noise "
                       f"images (ε = {eps:g}, N = {steps}; ID positive, in-scores; profile {profile}). The paper's "
                       f"first set is CIFAR-10 (Table 3), its second CIFAR-100 (Table 4).",
               name="tbl-d-tables34", digits=3)

# %% [markdown]
# Unlike the paper's, our attacked images do not pass the detector ({numref}`tbl-d-tables34`). On the first set
# the attack through the score leaves a median relative error of at least {glue:text}`score_mape_first:.2f`, and
# the lowest AUROC over the PMs is {glue:text}`score_auroc_first:.3f` (f = score) and
# {glue:text}`features_auroc_first:.3f` (f = features). On the second set the score attack gets closer (median
# relative error down to {glue:text}`score_mape_second:.3f`, AUROC down to {glue:text}`score_auroc_second:.3f`),
# while the lowest AUROC of the features attack is {glue:text}`features_auroc_second:.3f`. The second set's images
# are brighter (mean grey level {glue:text}`id_mean_second:.2f` against {glue:text}`id_mean_first:.2f`; the noise
# starts average {glue:text}`start_mean:.2f`). Shifting the mean grey level of an n-pixel image by d costs at
# least d·√n in L2: {glue:text}`shift_cost_first:.1f` to reach the first set's mean from the noise and
# {glue:text}`shift_cost_second:.1f` for the second, against ε = {glue:text}`eps:g`. The budget, not only the
# detector, limits the attack here.
#
# ## Why matching the features does not carry over
#
# The detector averages one distance per layer. The table below sets the median per-layer score of the test
# images beside that of the images attacked through the features and through the score (first in-distribution
# set, PM = 0), with the mean size of each layer's pooled features.

# %%
first = detectors[(names[0], magnitudes[0])]
layer_rows = {"test images": first.layer_scores(x_in[names[0]]),
              "attacked, f = features": first.layer_scores(feature_attacks[names[0]].x),
              "attacked, f = score": first.layer_scores(score_attacks[(names[0], magnitudes[0])].x),
              f"{start} starts": first.layer_scores(x_start[names[0]])}
medians = {k: v.detach().median(dim=0).values for k, v in layer_rows.items()}
with torch.no_grad():
    sizes = [h.abs().mean() for h in first.pooled_features(x_in[names[0]].to(next(first.parameters()).device))]
glue_value("layer0_test", medians["test images"][0])
glue_value("layer0_features", medians["attacked, f = features"][0])
glue_value("layer0_start", medians[f"{start} starts"][0])
glue_value("layer0_size", sizes[0])
glue_value("layer_last_size", sizes[-1])
glue_value("mape_features", mape[(names[0], magnitudes[0], "features")])
markdown_table(["images", *[f"layer {i + 1}" for i in range(first.n_layers)]],
               [[k, *v.tolist()] for k, v in medians.items()]
               + [["mean pooled feature |h| (test images)", *[f"{v:.3f}" for v in sizes]]],
               caption=f"Median per-layer Mahalanobis score $M_\\ell$ ({names[0]}, PM = {magnitudes[0]:g}; higher = "
                       f"more in-distribution; profile {profile})", name="tbl-d-layers", digits=1)

# %% [markdown]
# The features attack brings the concatenated feature vector to a median MAPE of
# {glue:text}`mape_features:.3f`, yet the first layer's score is {glue:text}`layer0_features:.1f`: better than the
# noise starts' {glue:text}`layer0_start:.1f`, still far from the test images' {glue:text}`layer0_test:.1f`
# ({numref}`tbl-d-layers`). The attack's objective is a plain squared error over the concatenation, in which the
# first layer's few, small pooled features (mean size {glue:text}`layer0_size:.3f`, against
# {glue:text}`layer_last_size:.3f` for the last layer) weigh little; the Mahalanobis distance instead weighs every
# direction by its inverse variance, and the first-layer responses of digits on a dark background vary very
# little. A residual that is small in the attack's units is large in the detector's.

# %%
figure_key = (names[0], figure_magnitude)
figure_detector = detectors[figure_key]
score_in = figure_detector.score_batched(x_in[names[0]])
fig = plots.score_histogram(score_in, figure_detector.score_batched(score_attacks[figure_key].x),
                            xlabel=f"Mahalanobis in-score (PM = {figure_magnitude:g})",
                            auroc=attacked[(*figure_key, "score")])
glue_figure("fig_d_hist_score", fig)
fig = plots.score_histogram(score_in, figure_detector.score_batched(feature_attacks[names[0]].x),
                            xlabel=f"Mahalanobis in-score (PM = {figure_magnitude:g})",
                            auroc=attacked[(*figure_key, "features")])
glue_figure("fig_d_hist_features", fig)
shown = slice(None, None, max(1, n_samples // 8))  # every k-th pair, so that several classes appear
fig = plots.image_grid({"ID": x_in[names[0]][shown], "start": x_start[names[0]][shown],
                        "f = score": score_attacks[figure_key].x[shown],
                        "f = features": feature_attacks[names[0]].x[shown]}, n=8)
glue_figure("fig_d_images", fig)

# %% [markdown]
# ```{glue:figure} fig_d_hist_score
# :name: fig-d-hist-score
#
# Figure 14 reproduced: Mahalanobis in-scores (PM = 0.01, f(x) = the score) of the first in-distribution set's
# test images (blue) and of the attacked images (red). The noise starts, far lower, are left out so that the two
# groups can be told apart; {numref}`tbl-d-layers` gives their per-layer scores.
# ```
#
# ```{glue:figure} fig_d_hist_features
# :name: fig-d-hist-features
#
# Figure 15 reproduced: the same with f(x) = the concatenated features.
# ```
#
# ```{glue:figure} fig_d_images
# :name: fig-d-images
#
# Test images, noise starts, and the images attacked through the score (PM = 0.01) and through the features.
# ```
#
# ## Summary
#
# {numref}`tbl-d-tables34` sets our AUROCs beside the paper's: where the paper finds 0.500 (f = score) and
# 0.179–0.604 (f = features), the layer-averaged Mahalanobis detector resists the attack on this small network
# from noise starts. We attribute the difference to scale and data rather than to the detector being robust in
# general: the ε-ball around uniform noise holds few images with MNIST's dark background statistics (the
# brighter second set is attacked more successfully), the small network's first layer enters the average with the
# same weight as the last, and N = {glue:text}`steps` fixed-size steps (against the paper's 1000) leave a residual
# that the inverse covariance amplifies. These are hypotheses consistent with the tables, not tested one by one
# here.

# %%
results.save()
results.table(f"Appendix D: measured values beside the paper's (profile {profile})", "tbl-d-results")
