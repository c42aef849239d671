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
# ε is an L2 radius in [0, 1] pixel units.
#
# ## The book's two policies
#
# **Per-value budget.** An L2 radius means little without the image size: ε = 10 on 32×32×3 images is a
# root-mean-square change of 10/√3072 ≈ 0.18 per value. Where a chapter runs on smaller images than the paper's,
# its default ε keeps the paper's root-mean-square change per value: ε = ε_paper·√(values here / values in the
# paper) (`oodlib.experiments.scale_eps`). A larger budget appears only as a labelled ablation beside that default,
# and every page states its ε and the root-mean-square change per value it means. Two pages do not follow it yet,
# and say so on the page: Section 2.1, which illustrates the algorithm with no experiment of the paper to match,
# and Appendix B, which gives every start the per-value budget of the paper's GTSRB appendix (its B.3 runs one
# start at two budgets); neither judges a claim.
#
# **Routine.** `oodlib.attack.ood_attack` has three routines (`oodlib.attack.ROUTINES`): the authors' public code
# (`authors`: Adamax on the perturbation, fixed step α = ε/100, last iterate), Algorithm 1 as printed (`printed`)
# and the library's `fast` routine (the authors' update with a cosine-decayed step and early stopping). Every
# experiment helper of the library attacks with the authors' routine unless the chapter names another
# (`oodlib.experiments.REPRODUCTION_ROUTINE`), and every chapter names the routine it runs in its parameters or
# its attack calls. A chapter that reproduces the authors' experiment runs their routine; a chapter about what the
# attack *can* reach (the MAPE claim of Section 3.1, the likelihood attacks of Section 3.2 and Appendix I) runs
# the fast routine and shows the other one beside it where they differ.

# %% tags=["parameters"]
profile: str = "default"  # one of profiles; chosen with --profile (the runner sets it)

# %%
from oodlib.params import check_chapter, parameter_table
from oodlib.report import chapter_banner, markdown_table
from oodlib.runner import book_notebooks

check_chapter("appendix_a_parameters", globals())  # the declared parameters, checked as the runner does
chapters = [nb for nb in book_notebooks() if nb.stem not in ("appendix_a_parameters", "reproduction_scorecard")]
chapter_banner("appendix_a_parameters", globals())

# %%
markdown_table(["chapter", "parameter", "declared", "paper", "default", "smoke"], parameter_table(chapters),
               caption="Every chapter's parameters in the three profiles", name="tbl-appendix-a", long_text=True)
