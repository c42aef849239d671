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
# Which of the paper's claims this build reproduced ({numref}`tbl-verdict-summary`, chapters in the paper's order),
# decided by one rule in code (`oodlib.verdicts`, stated below); then every judged claim and every number that
# the chapters set beside the paper's.

# %% tags=["parameters"]
profile: str = "default"  # one of profiles; chosen with --profile (the runner sets it)

# %%
from oodlib import verdicts
from oodlib.params import check_chapter
from oodlib.report import (chapter_banner, chapter_label, collect_results, format_measurement, format_percent,
                           glue_values, in_book_order, markdown_table, paper_values_frame, relative_difference, table,
                           verdict_summary)

check_chapter("reproduction_scorecard", globals())  # the declared parameters, checked as the runner does
rows = in_book_order(collect_results(profile, exclude=("reproduction_scorecard",)))
judged = [r for r in rows if r.get("verdict")]
with_paper = [r for r in rows if r["paper"] is not None and r["measured"] is not None]
summary = verdict_summary(rows)
reference = paper_values_frame()
glue_values(n_rows=len(rows), n_with_paper=len(with_paper), n_chapters=len({r["chapter"] for r in rows}),
            n_judged=len(judged), n_reference=len(reference), clean_min=verdicts.CLEAN_AUROC_MIN,
            tolerance=verdicts.AUROC_TOLERANCE, id_like_quantile=100 * verdicts.ID_LIKE_QUANTILE,
            rule_threshold=format_percent(verdicts.MAPE_THRESHOLD, keep_zeros=False),
            rule_majority=format_percent(verdicts.MAPE_MAJORITY, keep_zeros=False),
            **{f"n_{label.replace(' ', '_')}": int(summary.iloc[-1][label])
               for label in (verdicts.REPRODUCED, verdicts.NOT_REPRODUCED, verdicts.NOT_TESTABLE)})
table(summary, caption=f"Verdicts per chapter, in the paper's order, with the claims reproduced (profile {profile})",
      name="tbl-verdict-summary")

# %%
chapter_banner("reproduction_scorecard", globals(),
               departures="The **default** profile runs small models on embedded data on a CPU, so it tests the "
                          "paper's mechanisms at a much smaller scale; only the **paper** profile (real datasets, "
                          "the paper's models and iterations, a GPU) can reproduce its numbers.")

# %% [markdown]
# ## The verdicts
#
# Of {glue:text}`n_judged` claims judged, {glue:text}`n_reproduced` are *reproduced*, {glue:text}`n_not_reproduced`
# *not reproduced* and {glue:text}`n_not_testable_here` *not testable here* ({numref}`tbl-verdicts`). The rule was
# fixed before the numbers were seen, and one library function applies it (unit-tested branch by branch):
#
# * an **AUROC-under-attack** claim is *reproduced* when the detector's clean AUROC on the same, unattacked start
#   images is at least {glue:text}`clean_min` (it catches them), the AUROC under attack is within
#   {glue:text}`tolerance` of the paper's, and the attacked images are still out-of-distribution; *not testable
#   here* when the clean AUROC is below {glue:text}`clean_min` for every start image the chapter offers; *not
#   reproduced* otherwise;
# * attacked images are **in-distribution-like** when more than half of them are as close (L2, pixels) to their
#   nearest training image as the {glue:text}`id_like_quantile:.0f`th percentile of held-out ID test images; such a
#   result cannot count as reproduced;
# * "most MAPE values are less than 0.1%" (Section 3.1) is *reproduced* when at least
#   {glue:text}`rule_majority` of the pairs have MAPE below {glue:text}`rule_threshold`.

# %%
markdown_table(["claim", "verdict", "paper", "clean (starts)", "clean (natural OOD)", "attacked", "ID-like"],
               [[f"{chapter_label(r['chapter'])} — {r['item']}", r["verdict"], r["paper"], r.get("clean"), r.get("clean_natural"), r["measured"],
                 {None: "—", True: "yes", False: "no"}[r.get("id_like")]] for r in judged],
               caption=f"Every judged claim (profile {profile}). AUROC with ID as positive on in-scores; clean = "
                       "the detector on the unattacked start images (or on the natural-image OOD set), attacked = "
                       "on the same starts after the attack; for the MAPE claim, the fraction of pairs below 0.1% "
                       "(the paper gives no number: 'most')",
               name="tbl-verdicts", digits=3)

# %% [markdown]
# ## Every number beside the paper's
#
# {glue:text}`n_rows` rows from {glue:text}`n_chapters` chapters; {glue:text}`n_with_paper` of them have a number
# in the paper to compare with ({numref}`tbl-scorecard`, chapters in the paper's order). The paper's value is
# blank where the paper states a claim but no number; the note then says what the paper claims. The relative
# difference is (ours − paper) / |paper|.

# %%
markdown_table(["chapter", "item", "metric", "paper", "ours", "rel. diff.", "note"],
               [[r["chapter"], r["item"], r["metric"], format_measurement(r["paper"], r["metric"]),
                 format_measurement(r["measured"], r["metric"]),
                 relative_difference(r["measured"], r["paper"]), r["note"]] for r in rows],
               caption=f"Every compared number of the book, paper beside ours (profile {profile}; AUROC with ID "
                       "as positive on in-scores; FPR@95TPR convention A)",
               name="tbl-scorecard", digits=3, long_text=True)

# %% [markdown]
# ## The paper's reference values
#
# The chapters read every number of the paper (and of the seed papers of the extension chapters) from one data
# file, `oodlib/paper_values.csv`: {glue:text}`n_reference` values, each with where the paper gives it and the
# convention it is stated in ({numref}`tbl-paper-values`).

# %%
table(reference, columns=["chapter", "claim", "source", "quantity", "value", "convention"],
      caption="The paper's reference values as the chapters read them (oodlib/paper_values.csv), with four decimals "
              "so that each keeps the digits its paper prints (ATOM's 88.94% is 0.8894)",
      name="tbl-paper-values", digits=4, long_text=True)
