"""The experiment that Appendices E (Outlier Exposure) and G (confidence-calibrated classifier) share.

A classifier trained with an OOD-aware objective stands beside the same network trained with cross-entropy alone,
on one or more in-distribution datasets. Both are scored clean (whole test set against natural-image crops and
against the unattacked start images); then Algorithm 1 attacks the feature the defended detector's score is
computed from (Appendix E.2: the logits; Appendix G.2: the classifier module's input), each of ``n_samples`` test
images paired with its own start image: from the chapter's start (one the clean detector catches; by default
``noise_mean_matched``) at the paper's root-mean-square budget, from natural-image crops at that budget, from
uniform noise at that budget (the paper's start, a labelled comparison: on digit data the clean detectors do not
catch it), and from the chapter's start at a larger budget (an ablation).

Every attacked AUROC comes with its evidence (:func:`oodlib.experiments.attack_evidence`): the clean AUROC on the
same start images, the clean AUROC on the natural-image OOD set and whether the attacked images became
in-distribution-like; :func:`add_attack_rows` stores them with :meth:`oodlib.report.Results.add_attack`.

:func:`prepare` builds the shared inputs, :func:`clean_detection` and :func:`attack_table` return tidy
:class:`pandas.DataFrame` tables (one row per configuration) that :func:`oodlib.report.table` renders and
:meth:`oodlib.report.Results.add_table` turns into results rows, and :func:`attack` runs the attacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
from torch import Tensor

from . import data, experiments, plots
from .detectors import Detector, make_detector
from .models import Classifier
from .report import Results, Row, glue_figure, glue_value, table
from .store import ModelSpec, get_model, model_info, training_data

if TYPE_CHECKING:
    from IPython.display import Markdown

CROP = "natural crop"
"""Name of the natural-image start (crops of photographs disjoint from the evaluation OOD set)."""

STANDARD = "standard"
"""Name of the cross-entropy model set beside the defended one."""

UNIFORM = "noise"
"""The paper's start (uniform noise), attacked beside the chapter's start as a labelled comparison."""

COMPARISON = "uniform noise (comparison)"
"""Name of the attack from :data:`UNIFORM`."""


@dataclass
class DefenseStudy:
    """The inputs of one defense chapter, per in-distribution dataset ``d`` (the first, :attr:`main`, is shown).

    ``models[d]`` maps ``"standard"`` and the defense's label to a classifier; ``x_in[d]`` holds the ``n_samples``
    attacked test images (N, C, H, W) in [0, 1]; ``starts[d]`` the start batches of the same shape (the chapter's
    start, :data:`CROP` and :data:`UNIFORM`); ``configs[d]`` maps each attack's label to ``(start name, ε)`` with
    ε in L2 pixel units, scaled from the paper's 32×32×3 images by :func:`oodlib.experiments.scale_eps`;
    ``reference[d]`` the ``(x_train, x_id_test)`` of the ID-likeness check (held-out test images, not the
    attacked ones)."""

    datasets: list[str]
    start: str
    large: str
    eps_paper: float
    eps_paper_large: float
    paper_image_values: int
    model_specs: dict[str, dict[str, ModelSpec]]
    models: dict[str, dict[str, Classifier]]
    tests: dict[str, data.ImageSet]
    x_in: dict[str, Tensor]
    geometry: dict[str, dict[str, int]]
    eps: dict[str, dict[float, float]]
    x_natural: dict[str, Tensor]
    starts: dict[str, dict[str, Tensor]]
    configs: dict[str, dict[str, tuple[str, float]]]
    reference: dict[str, tuple[Tensor, Tensor]]
    shown: list[int]

    @property
    def main(self) -> str:
        """The dataset whose numbers the text quotes and whose figures are drawn."""
        return self.datasets[0]

    @property
    def labels(self) -> dict[str, str]:
        """Glue-key suffix of each attack: the chapter's start (``main``), the natural crops, uniform noise (the
        comparison) and the larger budget."""
        return {self.start: "main", CROP: "crops", COMPARISON: "noise", self.large: "large"}


def prepare(standard: dict[str, ModelSpec], defended: dict[str, ModelSpec], label: str, *, n_samples: int,
            n_ood: int, start: str, eps_paper: float, eps_paper_large: float, paper_image_values: int,
            seed: int = 0, device: str = "auto") -> DefenseStudy:
    """Load (or train) the standard and the defended model of every dataset (keys of ``defended``, in order),
    draw ``n_samples`` paired test images, ``n_ood`` natural-image OOD crops, the start batches (``start``, e.g.
    ``"noise_mean_matched"`` with the dataset's training mean; natural crops; uniform noise) and the reference sets of the ID-likeness check, and scale ``eps_paper`` / ``eps_paper_large``
    (L2, on ``paper_image_values`` values) to each dataset's image size.

    Raises
    ------
    ValueError
        If ``standard`` and ``defended`` name different datasets.
    """
    if list(standard) != list(defended):
        raise ValueError(f"standard and defended specs name different datasets: {list(standard)} vs "
                         f"{list(defended)}")
    datasets = list(defended)
    model_specs = {d: {STANDARD: standard[d], label: defended[d]} for d in datasets}
    models = {d: {m: get_model(spec, device=device) for m, spec in model_specs[d].items()} for d in datasets}
    tests = {d: training_data(defended[d], "test") for d in datasets}
    trains = {d: training_data(defended[d], "train") for d in datasets}
    paired = {d: tests[d].subset(n_samples, seed=seed) for d in datasets}
    x_in = {d: paired[d].x for d in datasets}
    geometry = {d: {"size": x_in[d].shape[-1], "channels": x_in[d].shape[1]} for d in datasets}
    eps = {d: {budget: experiments.scale_eps(budget, x_in[d][0].numel(), paper_image_values)
               for budget in (eps_paper, eps_paper_large)} for d in datasets}
    x_natural = {d: data.natural_ood_set(n_ood, **geometry[d], seed=seed) for d in datasets}
    starts = {d: {start: experiments.start_images(start, n_samples, x_train=trains[d].x, seed=seed),
                  CROP: data.natural_ood_set(n_samples, **geometry[d], seed=seed + 1),
                  UNIFORM: data.start_batch(UNIFORM, n_samples, **geometry[d], seed=seed)} for d in datasets}
    large = f"{start}, ε ×{eps_paper_large / eps_paper:g}"
    budgets = {start: (start, eps_paper), CROP: (CROP, eps_paper), COMPARISON: (UNIFORM, eps_paper),
               large: (start, eps_paper_large)}
    configs = {d: {a: (s, eps[d][budget]) for a, (s, budget) in budgets.items()} for d in datasets}
    reference = {d: experiments.reference_sets(trains[d], tests[d], n_samples, seed=seed) for d in datasets}
    shown = experiments.example_indices(paired[datasets[0]].y, 8)
    return DefenseStudy(datasets, start, large, eps_paper, eps_paper_large, paper_image_values, model_specs, models,
                        tests, x_in, geometry, eps, x_natural, starts, configs, reference, shown)


def glue_setup(study: DefenseStudy) -> None:
    """Glue the budgets of the main dataset (``eps_main``, ``eps_main_large``, ``rms_paper``, ``large_factor``)."""
    glue_value("eps_main", study.eps[study.main][study.eps_paper])
    glue_value("eps_main_large", study.eps[study.main][study.eps_paper_large])
    glue_value("rms_paper", experiments.rms_per_value(study.eps_paper, study.paper_image_values))
    glue_value("large_factor", study.eps_paper_large / study.eps_paper)


def scaled_budgets(study: DefenseStudy) -> str:
    """"10.32 on mnist5k, 2.89 on digits": the paper's ε scaled to each dataset, for a profile banner."""
    return ", ".join(f"{study.eps[d][study.eps_paper]:.2f} on {d}" for d in study.datasets)


def clean_detection(study: DefenseStudy, scores: dict[str, str]) -> pd.DataFrame:
    """AUROC (ID positive, in-scores) of each dataset's whole test set against the natural-image OOD set and
    against each unattacked start batch, for every model and every named detector of ``scores`` (display name →
    registered detector name, built on the model with :func:`oodlib.detectors.make_detector`).

    Returns one row per (dataset, model, score), indexed by ``ID set``, ``model`` and ``score``, with the columns
    ``test accuracy`` and ``AUROC vs <set>`` for the sets ``natural-image OOD set``, the paper's start and
    :data:`CROP`."""
    rows = []
    for d in study.datasets:
        sets = {"natural-image OOD set": study.x_natural[d], **study.starts[d]}
        for m, model in study.models[d].items():
            accuracy = model_info(study.model_specs[d][m])["test_accuracy"]
            for s, name in scores.items():
                detector = make_detector(name, model)
                rows.append({"ID set": d, "model": m, "score": s, "test accuracy": accuracy,
                             **{f"AUROC vs {k}": experiments.detector_auroc(detector, study.tests[d].x, x_out)
                                for k, x_out in sets.items()}})
    return _ordered_index(pd.DataFrame(rows), ["ID set", "model", "score"])


def _ordered_index(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``frame.set_index(keys)`` with each level's labels ordered as they first appear, so that the rows, built in
    that order, are lexically sorted: ``.loc`` on a partial key is then fast and silent (no PerformanceWarning)
    and the table keeps its order."""
    levels = [pd.Categorical(frame[k], categories=list(dict.fromkeys(frame[k]))) for k in keys]
    return frame.drop(columns=keys).set_index(pd.MultiIndex.from_arrays(levels, names=keys))


def attack(study: DefenseStudy, detectors: dict[str, Detector], target: str, *, steps: int, routine: str,
           seed: int = 0) -> dict[str, dict[str, experiments.DetectorAttack]]:
    """Every attack of ``study.configs`` on every dataset: Algorithm 1 (``routine``, one of
    :data:`oodlib.attack.ROUTINES`; the chapters reproduce the authors' experiment with ``"authors"``) matches the
    detector's attack target named ``target`` (one of ``Detector.targets``: ``"logits"``, ``"classifier_input"``),
    then the detector scores the attacked images. See :func:`oodlib.experiments.attack_detector`."""
    return {d: experiments.attack_detector(detectors[d], target, study.x_in[d], study.starts[d], study.configs[d],
                                           steps=steps, seed=seed, routine=routine)
            for d in study.datasets}


def attack_table(study: DefenseStudy, runs: dict[str, dict[str, experiments.DetectorAttack]],
                 detectors: dict[str, Detector], paper: dict[str, float | None], *, table: str, feature: str,
                 steps: int) -> pd.DataFrame:
    """One row per (dataset, attack): ``ID set``, ``attack``, ``start``, ``ε``, ``paper (<table>)`` (the paper's
    AUROC under attack of the dataset, on the chapter's start at the paper's budget; None elsewhere), the evidence
    of :func:`oodlib.experiments.attack_evidence` for ``detectors[d]`` on the same start images (``clean
    (starts)``, ``AUROC, attacked``, ``clean (natural OOD)``, ``ID-like fraction`` and ``ID-like``), AUPR-In,
    AUPR-Out, FPR@95TPR (A), ``median MAPE (<feature>)`` and ``note`` (budget, N and sample count)."""
    rows = []
    for d in study.datasets:
        for a, run in runs[d].items():
            evidence = experiments.attack_evidence(detectors[d], study.x_in[d], run.x_start, run.result.x,
                                                   x_natural=study.x_natural[d], reference=study.reference[d])
            summary = run.summary
            rows.append({"ID set": d, "attack": a, "start": run.start, "ε": run.eps,
                         f"paper ({table})": paper[d] if a == study.start else None,
                         "clean (starts)": evidence.clean, "AUROC, attacked": evidence.attacked,
                         "clean (natural OOD)": evidence.clean_natural,
                         "ID-like fraction": evidence.ood.fraction_id_like, "ID-like": evidence.ood.id_like,
                         "AUPR-In": summary["aupr_in"], "AUPR-Out": summary["aupr_out"],
                         "FPR@95TPR (A)": summary["fpr95_A"], f"median MAPE ({feature})": run.median_mape,
                         "note": f"ε = {run.eps:.2f} on {d}, N = {steps}, {len(run.x_start)} test images, "
                                 f"routine {run.result.params.get('routine')}"})
    return pd.DataFrame(rows)


def add_attack_rows(results: Results, study: DefenseStudy, attacks: pd.DataFrame, *, appendix: str, table: str,
                    feature: str, paper_notes: dict[str, str]) -> dict[str, dict[str, Row]]:
    """The results rows of :func:`attack_table`'s ``attacks``, each with its clean companions
    (:meth:`oodlib.report.Results.add_attack`): the chapter's start at the paper's budget as ``<table>: <d> vs
    OOD`` (with the paper's value, hence a verdict, and ``paper_notes[d]`` appended to the note where not empty;
    ``clean_offered``: the clean AUROCs of the other starts), the crops as ``<appendix> (extension)``, uniform noise
    as ``<appendix> (comparison)`` and the larger budget as ``<appendix> (ablation)`` rows without a paper value;
    and every attack's median MAPE of ``feature``. Returns each dataset's AUROC rows by glue label
    (:attr:`DefenseStudy.labels`)."""
    kinds = {CROP: "extension", COMPARISON: "comparison", study.large: "ablation"}
    rows: dict[str, dict[str, Row]] = {}
    for r in attacks.to_dict("records"):
        d, a, note = r["ID set"], r["attack"], r["note"]
        offered = [c for c, s, other in zip(attacks["clean (starts)"], attacks["start"], attacks["ID set"])
                   if other == d and s != r["start"]]
        evidence = {"attacked": r["AUROC, attacked"], "clean": r["clean (starts)"],
                    "clean_natural": r["clean (natural OOD)"], "id_like": bool(r["ID-like"])}
        if a == study.start:
            extra = paper_notes.get(d, "")
            row = results.add_attack(f"{table}: {d} vs OOD", **evidence, paper=r[f"paper ({table})"],
                                     clean_offered=offered, metric="AUROC, attacked",
                                     note=f"{a} start; {note}; {extra}" if extra else f"{a} start; {note}")
        else:
            row = results.add_attack(f"{appendix} ({kinds[a]}): {d}, {a} start", **evidence,
                                     metric="AUROC, attacked", note=note)
        rows.setdefault(d, {})[study.labels[a]] = row
        results.add(f"{appendix}: {d}, {a} start", f"median MAPE of the {feature}", r[f"median MAPE ({feature})"])
    return rows


def attack_markdown(attacks: pd.DataFrame, *, caption: str, name: str) -> "Markdown":
    """:func:`attack_table`'s ``attacks`` as a numbered table: every column but ``attack``, ``note`` and the
    ``ID-like`` flag (its fraction is shown)."""
    return table(attacks, columns=[c for c in attacks.columns if c not in ("attack", "note", "ID-like")],
                 caption=caption, name=name)


def glue_attacks(study: DefenseStudy, attacks: pd.DataFrame, rows: dict[str, dict[str, Row]], *,
                 feature: str) -> None:
    """Glue, for each attack of the main dataset (labels :attr:`DefenseStudy.labels`: ``main``, ``crops``,
    ``noise``, ``large``), ``auroc_<label>``, ``clean_<label>`` (same starts), ``natural_<label>``,
    ``idlike_<label>`` (fraction of ID-like attacked images), ``mape_<label>`` and ``verdict_<label>`` (the row's
    verdict, "no verdict" without a paper value); and ``other_datasets``, :func:`other_datasets` (``rows``: as
    :func:`add_attack_rows` returns them)."""
    main = attacks[attacks["ID set"] == study.main].set_index("attack")
    for a, label in study.labels.items():
        r = main.loc[a]
        glue_value(f"auroc_{label}", r["AUROC, attacked"])
        glue_value(f"clean_{label}", r["clean (starts)"])
        glue_value(f"natural_{label}", r["clean (natural OOD)"])
        glue_value(f"idlike_{label}", r["ID-like fraction"])
        glue_value(f"mape_{label}", r[f"median MAPE ({feature})"])
        glue_value(f"verdict_{label}", rows[study.main][label].verdict or "no verdict")
    glue_value("other_datasets", other_datasets(study, rows))


def other_datasets(study: DefenseStudy, rows: dict[str, dict[str, Row]]) -> str:
    """One sentence per dataset after the main one: its verdict on the chapter's start, clean → attacked, and the
    larger budget's attacked AUROC (e.g. "On digits the claim is not reproduced (clean 1.000 → attacked 0.805;
    at ε ×2: 0.518)."); a sentence saying so when the study has one dataset."""
    sentences = []
    for d in study.datasets[1:]:
        main, large = rows[d]["main"], rows[d]["large"]
        sentences.append(f"On {d} the claim is {main.verdict or 'not judged'} (clean {main.clean:.3f} → attacked "
                         f"{main.measured:.3f}; at ε ×{study.eps_paper_large / study.eps_paper:g}: "
                         f"{large.measured:.3f}).")
    return " ".join(sentences) or "This profile runs no second dataset."


def glue_figures(study: DefenseStudy, runs: dict[str, dict[str, experiments.DetectorAttack]], xlabel: str) -> None:
    """Draw and glue the main dataset's figures (:func:`oodlib.plots.detector_attack_figures`) as
    ``fig_hist_main``, ``fig_hist_crop`` and ``fig_images``; ``xlabel`` names the detector's in-score."""
    figures = plots.detector_attack_figures(runs[study.main], study.x_in[study.main], study.shown, main=study.start,
                                            crop=CROP, large=study.large, xlabel=xlabel)
    for key, fig in figures.items():
        glue_figure(f"fig_{key}", fig)
