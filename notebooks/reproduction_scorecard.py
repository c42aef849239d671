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
# # Reproduction scorecard
#
# Every number of every chapter that we set beside the paper's, gathered from the chapters' results files
# (`results/<profile>/<chapter>.json`, written by the runner with the parameters each chapter ran with). The paper's
# value is blank where the paper states a claim but no number (e.g. "most MAPE values are less than 0.1%"); the
# note then says what the paper claims. The relative difference is (ours − paper) / |paper|.
#
# Read the scorecard with the profile in mind: the **default** profile runs small models on embedded data on a
# CPU, so it reproduces the paper's *mechanisms* and *directions* at a much smaller scale; only the **paper**
# profile (real datasets, the paper's models and iterations, a GPU) can reproduce its numbers. Each chapter says
# where and why its numbers differ.

# %% tags=["parameters"]
profile: str = "default"  # one of profiles; chosen with --profile (the runner sets it)

# %%
from oodlib.params import check_chapter
from oodlib.report import (collect_results, glue_value, markdown_table, paper_values_frame, profile_banner,
                           relative_difference, table)

check_chapter("reproduction_scorecard", globals())  # the declared parameters, checked as the runner does
rows = collect_results(profile, exclude=("reproduction_scorecard",))
with_paper = [r for r in rows if r["paper"] is not None and r["measured"] is not None]
glue_value("n_rows", len(rows))
glue_value("n_with_paper", len(with_paper))
glue_value("n_chapters", len({r["chapter"] for r in rows}))
reference = paper_values_frame()
glue_value("n_reference", len(reference))
profile_banner(profile, {})

# %% [markdown]
# {glue:text}`n_rows` rows from {glue:text}`n_chapters` chapters; {glue:text}`n_with_paper` of them have a number
# in the paper to compare with ({numref}`tbl-scorecard`).

# %%
markdown_table(["chapter", "item", "metric", "paper", "ours", "rel. diff.", "note"],
               [[r["chapter"], r["item"], r["metric"], r["paper"], r["measured"],
                 relative_difference(r["measured"], r["paper"]), r["note"]] for r in rows],
               caption=f"Every compared number of the book, paper beside ours (profile {profile}; AUROC with ID "
                       "as positive on in-scores; FPR@95TPR convention A)",
               name="tbl-scorecard", digits=3)

# %% [markdown]
# ## The paper's reference values
#
# The chapters read every number of the paper (and of the seed papers of the extension chapters) from one data
# file, `oodlib/paper_values.csv`: {glue:text}`n_reference` values, each with where the paper gives it and the
# convention it is stated in ({numref}`tbl-paper-values`).

# %%
table(reference, columns=["chapter", "claim", "source", "quantity", "value", "convention"],
      caption="The paper's reference values as the chapters read them (oodlib/paper_values.csv)",
      name="tbl-paper-values", digits=4)
