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
# # Appendix A — Parameters
#
# The paper's Appendix A lists its attack settings: on the ImageNet subset, ResNet-18 with ε = 5 (x-ray, CT) and
# ε = 20 (noise), DenseNet-121 with ε = 5 and ε = 30, N = 10⁴, α = ε/100; OCT ε = 10 (fundus photograph) and
# ε = 20 (noise); COVID-19 CT ε = 20; GTSRB ε = 10; CelebA (Glow) ε = 10 — always N = 10⁴ and α = ε/100, L2
# norm. The table below is generated from the book's three parameter profiles (`notebooks/params/*.yml`) together
# with each chapter's declared defaults, so it always shows what the book actually ran; the *declared* column is
# each parameter's type and constraint as written beside its chapter's parameters cell, checked before any
# chapter runs:
#
# - **paper** — the paper's settings on the real datasets (needs `data_scripts/` and a GPU);
# - **default** — embedded data on a 2-core CPU; sizes chosen so the whole book builds in under 30 minutes;
# - **smoke** — tiny sizes so CI executes every chapter in seconds (its numbers mean nothing).
#
# ε is an L2 radius in [0, 1] pixel units. Where the default profile runs on 28×28 images instead of the paper's
# 224×224×3 or 32×32×3, each chapter says how it scaled ε (by √(number of input values) from the paper's CIFAR
# experiments, or as stated) and shows the attacked images.

# %% tags=["parameters"]
profile: str = "default"  # one of profiles; chosen with --profile (the runner sets it)

# %%
from oodlib.params import check_chapter, parameter_table
from oodlib.report import markdown_table, profile_banner
from oodlib.runner import book_notebooks

check_chapter("appendix_a_parameters", globals())  # the declared parameters, checked as the runner does
chapters = [nb for nb in book_notebooks() if nb.stem not in ("appendix_a_parameters", "reproduction_scorecard")]
profile_banner(profile, {})

# %%
markdown_table(["chapter", "parameter", "declared", "paper", "default", "smoke"], parameter_table(chapters),
               caption="Every chapter's parameters in the three profiles", name="tbl-appendix-a")
