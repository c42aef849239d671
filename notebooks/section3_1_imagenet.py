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
# # Section 3.1 — Evaluation on a subset of ImageNet (Figures 2–4, Table 1)
#
# The paper's first experiment {cite:p}`liang2020ood` attacks two ImageNet-pretrained encoders, ResNet-18
# {cite:p}`he2016resnet` (z: 512-d) and DenseNet-121 {cite:p}`huang2017densenet` (z: 1024-d), on 1000 validation
# images from 200 classes (224×224×3). Each of three start images — a chest x-ray, a lung CT slice and random
# noise, chosen because nothing in ImageNet looks like them — is paired with every one of the 1000 images, and
# Algorithm 1 (ε = 5 for x-ray and CT; ε = 20 for noise on ResNet-18 and 30 on DenseNet-121; N = 10⁴, α = ε/100,
# Appendix A) makes 1000 attacked OOD images per start image. The claims:
#
# - **Figures 3–4**: "Most of the MAPE values are less than 0.1%", for both encoders and all three start images.
# - **Table 1**: the maximum-softmax-probability (MSP) detector {cite:p}`hendrycks2017baseline` cannot tell the
#   1000 attacked OOD images from the 1000 in-distribution images: AUROC 0.643 / 0.633 / 0.500 (ResNet-18, x-ray /
#   CT / noise) and 0.638 / 0.651 / 0.500 (DenseNet-121).
#
# This page runs the same pipeline with the authors' attack routine (`oodlib.attack.ood_attack` defaults,
# {doc}`Section 2.1 <section2_1_algorithm>`).

# %% tags=["parameters"]
profile: str = "default"  # one of profiles; chosen with --profile (the runner sets it)
seed: int = 0  # in [0, 4294967295]; seed of data subsets, training and attack starts
device: str = "auto"  # one of devices; torch device; auto takes CUDA when available
dataset: str = "mnist5k"  # one of datasets; in-distribution dataset
archs: list[str] = ["small_cnn", "small_resnet"]  # one of archs and nonempty; classifiers attacked, one column each
epochs: int = 6  # > 0; training epochs of the classifier
recipe: str = "standard"  # one of recipes; training recipe of the classifiers
n_samples: int = 128  # > 0; in-distribution test images attacked
steps: int = 300  # > 0; attack iterations N
medical_start: str = "ct"  # one of start images; medical start image
eps_medical: list[float] = [5.0, 10.0]  # > 0 and length of archs; ε from the medical start, per architecture
eps_noise: list[float] = [10.0, 20.0]  # > 0 and length of archs; ε from the noise start, per architecture
n_natural: int = 200  # > 0; natural OOD images compared
n_examples: int = 3  # > 0; examples shown in the figures

# %%
import torch

from oodlib import data, experiments, metrics, plots
from oodlib.params import check_chapter
from oodlib.report import Results, glue_figure, glue_value, glue_values, markdown_table, paper_value, profile_banner
from oodlib.store import ModelSpec, get_model, model_info

check_chapter("section3_1_imagenet", globals())  # the declared parameters, checked as the runner does
PAPER_NAMES, PAPER_ARCHS, PAPER_DATASET = ["ResNet-18", "DenseNet-121"], ["resnet18", "densenet121"], "imagenet_val"
PAPER_LATENT, PAPER_FIGURES = [512, 1024], [3, 4]
PAPER_TABLE_1 = [{start: paper_value("section3_1", f"table1_{a}_{start}") for start in ("xray", "ct", "noise")}
                 for a in PAPER_ARCHS]
PAPER_EPS = [{"medical": paper_value("section3_1", "eps_medical"), "noise": paper_value("section3_1", f"eps_noise_{a}")}
             for a in PAPER_ARCHS]
if not len(archs) == len(eps_medical) == len(eps_noise) <= len(PAPER_NAMES):
    raise ValueError("give one or two encoders (standing in for ResNet-18 and DenseNet-121) with one ε each")

torch.manual_seed(seed)
specs = {arch: ModelSpec.make(arch, dataset, epochs=epochs, seed=seed, recipe=recipe) for arch in archs}
models = {arch: get_model(spec, device=device) for arch, spec in specs.items()}
test = data.load_dataset(dataset, "test", limit=n_samples, seed=seed)
x_in = test.x
x_natural = data.natural_ood_set(n_natural, size=x_in.shape[-1], channels=x_in.shape[1], seed=seed)
n_values = x_in[0].numel()
labels = {arch: experiments.model_label(name, arch, dataset, paper_arch, PAPER_DATASET)
          for arch, name, paper_arch in zip(archs, PAPER_NAMES, PAPER_ARCHS)}
medical = experiments.start_label(medical_start)
keys = {medical_start: "medical", "noise": "noise"}  # glue-key suffix of each start image
results = Results()
for i, arch in enumerate(archs):
    glue_value(f"accuracy_{i}", model_info(specs[arch])["test_accuracy"])
    glue_value(f"latent_{i}", models[arch].latent_dim)
    glue_value(f"values_per_latent_{i}", n_values / models[arch].latent_dim)
    glue_value(f"values_per_latent_paper_{i}", experiments.PAPER_IMAGE_VALUES / PAPER_LATENT[i])
    glue_value(f"rms_medical_{i}", experiments.rms_per_value(eps_medical[i], n_values))
    glue_value(f"rms_noise_{i}", experiments.rms_per_value(eps_noise[i], n_values))
    glue_value(f"rms_paper_noise_{i}", experiments.rms_per_value(PAPER_EPS[i]["noise"],
                                                                 experiments.PAPER_IMAGE_VALUES))
glue_values(rms_paper_medical=experiments.rms_per_value(PAPER_EPS[0]["medical"], experiments.PAPER_IMAGE_VALUES),
            rms_cifar=experiments.rms_per_value(paper_value("appendices", "eps_cifar"), 3 * 32 * 32),
            n_samples=len(x_in), steps=steps)
profile_banner(profile, {"dataset": dataset, "archs": archs, "recipe": recipe, "n_samples": n_samples,
                         "steps": steps, "medical_start": medical_start, "eps_medical": eps_medical,
                         "eps_noise": eps_noise, "n_natural": n_natural},
               departures=f"The paper attacks ImageNet-pretrained ResNet-18 and DenseNet-121 on 1000 ImageNet "
                          f"validation images (224×224×3) with N = 10⁴. Here {' and '.join(archs)} "
                          f"({recipe} recipe, {dataset}) stand in for them, with {len(x_in)} test images of "
                          f"{x_in.shape[-1]}×{x_in.shape[-2]}×{x_in.shape[1]} values and N = {steps}. The chest "
                          f"x-ray start image is not reproduced: no offline package ships a chest radiograph; the "
                          f"{medical} slice bundled with pydicom is the medical start. ε is chosen for the image "
                          f"size (see below), not copied from the paper.")

# %% [markdown]
# ## Budgets
#
# The paper's budgets are small per pixel: ε = 5 on 224×224×3 values is a root-mean-square change of
# {glue:text}`rms_paper_medical:.3f` per value. A 224×224×3 image gives ResNet-18
# {glue:text}`values_per_latent_paper_0:.0f` input values per latent dimension (DenseNet-121:
# {glue:text}`values_per_latent_paper_1:.0f`); the first encoder here has only {glue:text}`values_per_latent_0:.1f`
# and the second {glue:text}`values_per_latent_1:.1f`. With so few free directions the attack needs a much larger
# step away from the start image, and at the paper's per-pixel budget it does not match the codes at all
# ({doc}`Section 2.1 <section2_1_algorithm>`, MAPE against ε). The default profile therefore gives the medical start
# the
# per-pixel budget of the paper's CIFAR-10 appendices ({glue:text}`rms_cifar:.2f` per value, ε = 5 on 28×28) and
# noise twice that (the paper gives noise 4–6 times the medical budget). The second encoder (the small ResNet)
# stayed far from the codes at those budgets while this chapter was prepared, so it gets twice both — as the
# paper raised the noise budget for DenseNet-121 (ε = 30 against 20 for ResNet-18). This page was built with
# RMS changes per value of {glue:text}`rms_medical_0:.3f` and {glue:text}`rms_noise_0:.3f` for the first encoder
# and {glue:text}`rms_medical_1:.3f` and {glue:text}`rms_noise_1:.3f` for the second (paper:
# {glue:text}`rms_paper_medical:.3f`, and {glue:text}`rms_paper_noise_0:.3f` / {glue:text}`rms_paper_noise_1:.3f`
# for noise). To see the second encoder at the first one's budgets, run the chapter with
# `-p eps_medical "[5, 5]" -p eps_noise "[10, 10]"`.

# %%
runs = {arch: experiments.attack_from_starts(models[arch], x_in, [medical_start, "noise"], [e_med, e_noise],
                                             steps=steps, seed=seed)
        for arch, e_med, e_noise in zip(archs, eps_medical, eps_noise)}
tables = {arch: experiments.msp_table(models[arch], x_in, runs[arch], x_natural) for arch in archs}
examples = experiments.example_indices(test.y, n_examples)
for start in (medical_start, "noise"):
    fig = plots.attack_panel(**experiments.panel_inputs(x_in, runs[archs[0]][start], examples), n=n_examples,
                             titles=["in-distribution $x_{in}$", f"start $x'_{{out}}$ "
                                     f"({experiments.start_label(start)})", "attacked $x_{out}$"])
    glue_figure(f"fig_examples_{keys[start]}", fig)
    grid = experiments.image_rows(x_in, {arch: runs[arch][start] for arch in archs},
                                  experiments.example_indices(test.y, 10))
    glue_figure(f"fig_images_{keys[start]}", plots.image_grid(grid, n=10))

# %% [markdown]
# ## Figure 2: examples
#
# ```{glue:figure} fig_examples_medical
# :name: fig-s31-examples-medical
#
# As in the paper's Figure 2, medical-start column, for the first encoder: in-distribution images with their codes
# $z_{in}$ (blue), the medical start image with its code (red circles) and the attacked images with theirs. MAPE
# in each scatter.
# ```
#
# ```{glue:figure} fig_examples_noise
# :name: fig-s31-examples-noise
#
# As in the paper's Figure 2, random-noise column: the same in-distribution images, per-sample noise start images and
# the attacked noise images.
# ```
#
# Are the attacked images still out-of-distribution? The paper's Appendix A says of its noise runs "We inspected
# the OOD images from random noise: they are not recognizable to human vision". At this image size the per-pixel
# budget is large, so judge for yourself: {numref}`fig-s31-images-medical` and {numref}`fig-s31-images-noise` show
# ten in-distribution images (one per class where possible), their start images and the attacked images of both
# encoders.
#
# ```{glue:figure} fig_images_medical
# :name: fig-s31-images-medical
#
# Top row: in-distribution images; second row: the medical start image; then the attacked images made from it for
# each encoder (row label), each paired with the in-distribution image above it.
# ```
#
# ```{glue:figure} fig_images_noise
# :name: fig-s31-images-noise
#
# As {numref}`fig-s31-images-medical` for the noise start: every pair has its own noise image.
# ```
#
# ## Figures 3–4: MAPE histograms

# %%
for i, arch in enumerate(archs):
    glue_figure(f"fig_mape_{i}", plots.mape_histogram(experiments.mape_panels(runs[arch]), title=labels[arch]))
    experiments.add_mape_rows(results, f"Figure {PAPER_FIGURES[i]}: {labels[arch]}",
                              {experiments.start_label(s): r for s, r in runs[arch].items()},
                              note="paper: \"most of the MAPE values are less than 0.1%\" (no number given)")
    results.add(f"Figure {PAPER_FIGURES[i]}: {labels[arch]}, chest x-ray start", "fraction of MAPE < 0.1%", None,
                note="not reproduced: no chest x-ray image is available offline")
    for start, run in runs[arch].items():
        glue_value(f"median_{keys[start]}_{i}", run.mape.median())
        glue_value(f"below01_{keys[start]}_{i}", run.fraction_below)
        glue_value(f"below1_{keys[start]}_{i}", metrics.mape_fraction_below(run.mape, 1e-2))
mape_rows = [[labels[arch], *row] for arch in archs for row in experiments.mape_summary(runs[arch])]
markdown_table(["encoder", *experiments.MAPE_SUMMARY_HEADER], mape_rows,
               caption=f"MAPE of the attacked images per encoder and start image ({len(x_in)} pairs each, "
                       f"N = {steps}, authors' routine; profile {profile}). The paper reports histograms with "
                       f"\"most\" values below 0.1%.", name="tbl-s31-mape", digits=4)

# %% [markdown]
# ```{glue:figure} fig_mape_0
# :name: fig-s31-mape-0
#
# As in the paper's Figure 3: MAPE histograms of the first encoder, one panel per start image (the paper's left panel,
# chest x-ray, is not reproduced). The dashed line is the paper's 0.1% threshold; the label gives the fraction of
# samples below it.
# ```
#
# ```{glue:figure} fig_mape_1
# :name: fig-s31-mape-1
#
# As in the paper's Figure 4: the same for the second encoder.
# ```
#
# **Measured against the claim.** For the first encoder the median MAPE is {glue:text}`median_medical_0:.2e`
# (medical start) and {glue:text}`median_noise_0:.2e` (noise); the fractions below the paper's 0.1% are
# {glue:text}`below01_medical_0:.2f` and {glue:text}`below01_noise_0:.2f`, and below 1% they are
# {glue:text}`below1_medical_0:.2f` and {glue:text}`below1_noise_0:.2f`. For the second encoder: medians
# {glue:text}`median_medical_1:.2e` and {glue:text}`median_noise_1:.2e`, below 0.1%
# {glue:text}`below01_medical_1:.2f` and {glue:text}`below01_noise_1:.2f`, below 1%
# {glue:text}`below1_medical_1:.2f` and {glue:text}`below1_noise_1:.2f`.
#
# In the default profile the codes are matched to about 1% of their largest entry, not to the paper's 0.1%: the
# histograms sit an order of magnitude to the right of the paper's. Three reasons, all of scale rather than of the
# method. (i) Free dimensions: the attack has to satisfy one equation per latent dimension with the input values
# inside the ε-ball, and a small image offers an order of magnitude fewer input values per latent dimension than
# a 224×224×3 one does to ResNet-18 or DenseNet-121 (numbers above).
# (ii) Iterations: N = {glue:text}`steps` here against 10⁴. (iii) The authors' routine keeps a constant per-pixel
# step (Adamax, α = ε/100), so the iterate jitters around a plateau whose height is set by the step, not by the
# budget ({doc}`Section 2.1 <section2_1_algorithm>` shows the plateau and that a decaying step lowers it). The
# paper-profile run
# (ImageNet, N = 10⁴, `notebooks/params/paper.yml`) is the one that can confirm or refute the 0.1% claim.
#
# ## Table 1: the MSP detector before and after the attack

# %%
auroc_rows = [[labels[arch], *row] for i, arch in enumerate(archs)
              for row in experiments.auroc_rows(tables[arch], PAPER_TABLE_1[i])]
for i, arch in enumerate(archs):
    experiments.add_auroc_rows(results, f"Table 1: {labels[arch]}", tables[arch], PAPER_TABLE_1[i],
                               note="AUROC with ID positive on the MSP in-score",
                               missing_note="not reproduced: no chest x-ray image is available offline")
    glue_value(f"auroc_clean_natural_{i}", tables[arch]["natural images"]["clean"])
    for start, key in keys.items():
        glue_value(f"auroc_clean_{key}_{i}", tables[arch][start]["clean"])
        glue_value(f"auroc_attacked_{key}_{i}", tables[arch][start]["attacked"])
markdown_table(["encoder", *experiments.AUROC_HEADER], auroc_rows,
               caption=f"Table 1: AUROC of the MSP detector (in-distribution positive, MSP as in-score) between the "
                       f"{len(x_in)} in-distribution test images and the {len(x_in)} OOD images of each start "
                       f"image, before (clean) and after the attack; the natural-image OOD set ({n_natural} crops "
                       f"of scikit-image photographs and textures) is never attacked. Profile {profile}.",
               name="tbl-s31-table1", digits=3)

# %% [markdown]
# The paper reports only the attacked column. The attack matches $z$, and the MSP is a function of $z$
# (softmax of a linear map of it), so a matched code gives a matched score and an AUROC of 0.5 — which is what the
# paper finds for noise (0.500) and nearly for x-ray and CT (0.63–0.65; presumably the small ε = 5 budget left
# some of those pairs less well matched). Here the attacked AUROCs are
# {glue:text}`auroc_attacked_medical_0:.3f` (medical) and {glue:text}`auroc_attacked_noise_0:.3f` (noise) for the
# first encoder and
# {glue:text}`auroc_attacked_medical_1:.3f` and {glue:text}`auroc_attacked_noise_1:.3f` for the second.
#
# The clean column needs a warning the paper does not give. Before any attack the MSP separates the
# in-distribution images from the natural-image OOD set with AUROC {glue:text}`auroc_clean_natural_0:.3f` (first
# encoder) and {glue:text}`auroc_clean_natural_1:.3f` (second), but from the medical start image with
# {glue:text}`auroc_clean_medical_0:.3f` and {glue:text}`auroc_clean_medical_1:.3f` and from noise with
# {glue:text}`auroc_clean_noise_0:.3f` and {glue:text}`auroc_clean_noise_1:.3f`. An AUROC far below 0.5 means the
# small classifiers are *more* confident on these start images than on their own test digits: the MSP detector
# fails on far-from-data inputs without any attack, a known weakness of softmax confidence. Where the clean AUROC
# is below 0.5, the attack moves it *up* towards 0.5 — it makes the OOD images as confident as the
# in-distribution ones, neither more nor less. The statement that survives at this scale is therefore the
# paper's central one: after the attack the detector's score distribution on OOD images approaches that of the
# in-distribution images, whatever it was before, as closely as the codes are matched.

# %%
results.save()
results.table(f"Section 3.1: measured values (profile {profile})", "tbl-s31-results", digits=4)
