"""The experiment pipelines shared by the encoder chapters (Section 1, Section 3.1, Appendix B) and by the
detector chapters whose attack target is a detector's own feature (Appendices E and G).

For each start image x'_out (Section 3.1: "Using each of the three initial OOD samples ... we generated 1000 OOD
samples paired with the 1000 (in-distribution) samples"), attack the encoder ``model.features`` so that every
attacked image matches the code of its paired in-distribution image, then measure MAPE (Section 3) and the MSP
detector's AUROC (Table 1). :func:`attack_detector` does the same against a detector: the attack matches the
feature its score is computed from, and the detector's score of the attacked images is compared with the ID images'.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from . import _checks, data, metrics, verdicts
from .attack import REPRODUCTION_ROUTINE, AttackResult, ood_attack
from .detectors import Detector, make_detector
from .models import Classifier
from .report import Results, Row
from .store import ModelSpec, get_model, model_info, training_data
from .utils import batched, eval_mode, module_device

PAPER_IMAGE_VALUES = 3 * 224 * 224  # the ImageNet experiments' input size (Section 3.1)



def scale_eps(eps_paper: float, n_values: int, paper_values: int = PAPER_IMAGE_VALUES) -> float:
    """ε scaled by √(number of input values): the same root-mean-square change per pixel as the paper's ε on its
    own image size (``shared/reference/attack.md``)."""
    return eps_paper * math.sqrt(n_values / paper_values)


def rms_per_value(eps: float, n_values: int) -> float:
    """The root-mean-square per-value change of a perturbation of L2 norm ε spread over ``n_values`` values
    (a NaN ε — "no such budget" — gives NaN: a unit conversion, not a parameter check)."""
    return eps / math.sqrt(n_values)


@dataclass
class StartRun:
    """The attack from one start image against every in-distribution sample."""

    start: str
    eps: float
    x_start: Tensor
    x_attacked: Tensor
    z_in: Tensor
    z_start: Tensor
    z_attacked: Tensor
    mape: Tensor
    mape_start: Tensor
    result: AttackResult

    @property
    def fraction_below(self) -> float:
        """Fraction of samples with MAPE < 0.1% (the paper's headline threshold)."""
        return metrics.mape_fraction_below(self.mape, 1e-3)


@torch.no_grad()
def encode(model: Classifier, x: Tensor, batch_size: int = 512) -> Tensor:
    """``model.features`` of many images (N ≥ 1), batched, in eval mode (each submodule's mode restored), returned
    on the CPU. Raises ``ValueError`` for an empty ``x`` or a non-positive ``batch_size``."""
    with eval_mode(model):
        return batched(model.features, x, batch_size, module_device(model))


def start_batch(name: str, n: int, *, size: int, channels: int, seed: int = 0,
                id_mean: Tensor | float | None = None) -> Tensor:
    """:func:`oodlib.data.start_batch` with the ID mean grey level passed to the ``"noise_mean_matched"`` start only
    (the other starts ignore ``id_mean``), so that a chapter can offer any start with one call. Raises
    ``ValueError`` for an unknown start, or the mean-matched start without ``id_mean``."""
    return data.start_batch(name, n, size=size, channels=channels, seed=seed,
                            id_mean=id_mean if name == "noise_mean_matched" else None)


def attack_from_start(model: Classifier, x_in: Tensor, start: str, *, eps: float, steps: int, seed: int = 0,
                      id_mean: Tensor | float | None = None, **attack_options) -> StartRun:
    """Algorithm 1 on ``model.features`` from the start image ``start`` (per-sample noise for the noise starts),
    paired with each image of ``x_in``. ``id_mean`` (:func:`id_mean` of the ID training images) is used by the
    ``"noise_mean_matched"`` start only. The reproduction chapters claim to reproduce the paper, so the routine is
    :data:`REPRODUCTION_ROUTINE` unless ``attack_options`` names another."""
    _checks.nonempty(x_in, "x_in")
    attack_options.setdefault("routine", REPRODUCTION_ROUTINE)
    x_start = start_batch(start, len(x_in), size=x_in.shape[-1], channels=x_in.shape[1], seed=seed, id_mean=id_mean)
    result = ood_attack(model.features, x_in, x_start, eps=eps, steps=steps, seed=seed, **attack_options)
    z_in, z_start, z_attacked = encode(model, x_in), encode(model, x_start), encode(model, result.x)
    return StartRun(start=start, eps=eps, x_start=x_start, x_attacked=result.x, z_in=z_in, z_start=z_start,
                    z_attacked=z_attacked, mape=metrics.mape(z_attacked, z_in).float(),
                    mape_start=metrics.mape(z_start, z_in).float(), result=result)


def attack_from_starts(model: Classifier, x_in: Tensor, starts: list[str], eps: list[float], *, steps: int,
                       seed: int = 0, **attack_options) -> dict[str, StartRun]:
    """:func:`attack_from_start` for each (start image, ε) pair."""
    if len(starts) != len(eps):
        raise ValueError(f"give one ε per start image: {len(starts)} start images, {len(eps)} values of ε")
    return {s: attack_from_start(model, x_in, s, eps=e, steps=steps, seed=seed, **attack_options)
            for s, e in zip(starts, eps)}


def detector_auroc(detector: Detector, x_in: Tensor, x_out: Tensor) -> float:
    """AUROC (ID positive, in-score) of ``detector`` separating ``x_in`` from ``x_out`` (each N ≥ 1)."""
    _checks.nonempty(x_in, "x_in")
    _checks.nonempty(x_out, "x_out")
    return metrics.auroc(detector.score_batched(x_in), detector.score_batched(x_out))


@dataclass(frozen=True)
class AttackEvidence:
    """What a claim "AUROC under attack ≈ 0.5" needs beside the attacked AUROC (AUROC: ID positive, in-scores).

    ``clean``: the detector's AUROC of the ID images against the unattacked start images; ``attacked``: against
    the same starts after the attack; ``clean_natural``: against the natural-image OOD set (None if not given);
    ``ood``: :func:`oodlib.verdicts.ood_check` of the attacked images (None if no reference set was given).
    ``as_row()`` gives the keyword arguments of :meth:`oodlib.report.Results.add_attack`."""

    clean: float
    attacked: float
    clean_natural: float | None
    ood: verdicts.OODCheck | None

    def as_row(self) -> dict[str, float | bool | None]:
        return {"clean": self.clean, "attacked": self.attacked, "clean_natural": self.clean_natural,
                "id_like": None if self.ood is None else self.ood.id_like}


def attack_evidence(detector: Detector | Callable[[Tensor], Tensor], x_in: Tensor, x_start: Tensor,
                    x_attacked: Tensor, *, x_natural: Tensor | None = None,
                    reference: tuple[Tensor, Tensor] | None = None) -> AttackEvidence:
    """The clean and attacked AUROCs of one detector on one set of start images, and whether the attacked images
    are still out-of-distribution (the issue's rule: a claim is judged only on starts the clean detector catches,
    and only while the attacked images stay OOD).

    Parameters
    ----------
    detector : a :class:`~oodlib.detectors.Detector` (its ``score_batched``), or a function from images (N, C, H, W)
        to in-scores (N,) (higher = more in-distribution).
    x_in : the ID images (N, C, H, W) the detector must tell apart (e.g. the attack's targets).
    x_start, x_attacked : the start images and the same images after the attack, (M, C, H, W) each.
    x_natural : optional natural-image OOD samples (:func:`oodlib.data.natural_ood_set`) for ``clean_natural``.
    reference : optional ``(x_train, x_id_test)``: ID training images and held-out ID images, for
        :func:`oodlib.verdicts.ood_check`.

    Raises
    ------
    ValueError
        If a batch is empty, or ``x_start`` and ``x_attacked`` differ in shape.
    """
    for name, x in (("x_in", x_in), ("x_start", x_start), ("x_attacked", x_attacked)):
        _checks.nonempty(x, name)
    if x_start.shape != x_attacked.shape:
        raise ValueError(f"x_start {tuple(x_start.shape)} and x_attacked {tuple(x_attacked.shape)} differ in shape")
    score = detector.score_batched if isinstance(detector, Detector) else detector
    s_in = score(x_in)
    clean = metrics.auroc(s_in, score(x_start))
    attacked = metrics.auroc(s_in, score(x_attacked))
    natural = None if x_natural is None else metrics.auroc(s_in, score(x_natural))
    ood = None if reference is None else verdicts.ood_check(x_attacked, *reference)
    return AttackEvidence(clean=clean, attacked=attacked, clean_natural=natural, ood=ood)


def msp_table(model: Classifier, x_in: Tensor, runs: dict[str, StartRun], x_natural: Tensor | None = None
              ) -> dict[str, dict[str, float]]:
    """Table 1's measurement: MSP AUROC of the in-distribution images against the start images (clean) and
    against the attacked images, per start image; plus a natural OOD set (clean) if given."""
    msp = make_detector("msp", model)
    table = {name: {"clean": detector_auroc(msp, x_in, run.x_start),
                    "attacked": detector_auroc(msp, x_in, run.x_attacked)} for name, run in runs.items()}
    if x_natural is not None:
        table["natural images"] = {"clean": detector_auroc(msp, x_in, x_natural), "attacked": float("nan")}
    return table


def add_mape_rows(results: Results, item_prefix: str, runs: dict[str, StartRun], paper_fraction: float | None
                  = None, note: str = "") -> None:
    """Rows "<prefix>, <start> start" with the fraction of MAPE < 0.1% and the median MAPE."""
    for name, run in runs.items():
        results.add(f"{item_prefix}, {name} start", "fraction of MAPE < 0.1%", run.fraction_below,
                    paper=paper_fraction, note=note)
        results.add(f"{item_prefix}, {name} start", "median MAPE", run.mape.median(), note=note)


def compare_variants(f: nn.Module | Callable[[Tensor], Tensor], x_in: Tensor, x_start: Tensor,
                     variants: dict[str, dict], **common) -> dict[str, AttackResult]:
    """Run :func:`~oodlib.attack.ood_attack` once per named variant (keyword overrides of ``common``), e.g. the
    authors' Adamax update against the printed rule at equal iterations (Section 2.1). ``f``: what the attack
    takes (a module, a bound method of one, or a detector with ``target=`` in ``common``)."""
    return {name: ood_attack(f, x_in, x_start, **{**common, **options}) for name, options in variants.items()}


def median_curve(result: AttackResult) -> tuple[Tensor, Tensor]:
    """(iterations, median MAPE over samples) of an attack's recorded history."""
    return result.iterations, result.mape_history.nanmedian(dim=1).values


# --------------------------------------------------------------------------------------------------- figures, tables
# Glue shared by the encoder chapters (Section 1 / Figure 1, Section 3.1 / Figures 2–4 and Table 1, Appendix B /
# Figures 7–12): which samples a figure shows, what each figure and table row holds, and how it is labelled.

START_LABELS: dict[str, str] = {"ct": "CT", "mr": "MR", "xray": "chest x-ray", "fundus": "fundus photo",
                                "spiral": "colour spiral", "checker2": "2×2 checkerboard",
                                "checker8": "8×8 checkerboard", "noise_mean_matched": "mean-matched noise"}
"""Display names of start images that differ from their key (``"xray"``, the paper's chest x-ray, has no offline
image: it only labels the rows that say it was not reproduced)."""


def start_label(name: str) -> str:
    """Display name of a start image: ``"ct"`` → ``"CT"``, ``"fundus"`` → ``"fundus photo"``; others unchanged."""
    return START_LABELS.get(name, name)


def model_label(paper_name: str, arch: str, dataset: str, paper_arch: str, paper_dataset: str) -> str:
    """How a results row names an encoder: the paper's name when the run uses the paper's own model and data
    (``"ResNet-18"``), else the paper's name with the stand-in that replaces it
    (``"ResNet-18 (stand-in: small_cnn on mnist5k)"``)."""
    if arch == paper_arch and dataset == paper_dataset:
        return paper_name
    return f"{paper_name} (stand-in: {arch} on {dataset})"


def example_indices(y: Tensor, n: int) -> list[int]:
    """Indices of ``n`` samples to show in a figure: the first sample of each class in label order, so the rows
    show different classes; when there are fewer than ``n`` classes, the next samples in order fill up."""
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    labels = [int(v) for v in y.tolist()]
    first: dict[int, int] = {}
    for i, label in enumerate(labels):
        first.setdefault(label, i)
    chosen = [first[c] for c in sorted(first)][:n]
    taken = set(chosen)
    rest = [i for i in range(len(labels)) if i not in taken]
    return chosen + rest[:n - len(chosen)]


def panel_inputs(x_in: Tensor, run: StartRun, index: list[int]) -> dict[str, Tensor]:
    """The keyword arguments of :func:`oodlib.plots.attack_panel` for the samples ``index`` of one start run
    (the paper's Figures 1, 2, 7, 10 and 12: image, start image, attacked image and their codes)."""
    idx = torch.as_tensor(index, dtype=torch.long)
    return {"x_in": x_in[idx], "x_start": run.x_start[idx], "x_attacked": run.x_attacked[idx],
            "z_in": run.z_in[idx], "z_start": run.z_start[idx], "z_attacked": run.z_attacked[idx],
            "mapes": run.mape[idx]}


def image_rows(x_in: Tensor, runs: dict[str, StartRun], index: list[int], shared_start: bool = True
               ) -> dict[str, Tensor]:
    """Rows for :func:`oodlib.plots.image_grid`, so a reader can judge whether the attacked images are still
    out-of-distribution: the in-distribution images, then

    - ``shared_start=True`` (runs from the same start images, e.g. one per encoder): one row of start images and
      one row of attacked images per run, labelled by the run's key;
    - ``shared_start=False`` (runs from different start images): a start row and an attacked row per run.
    """
    if not runs:
        raise ValueError("give at least one run")
    idx = torch.as_tensor(index, dtype=torch.long)
    rows = {"ID": x_in[idx]}
    if shared_start:
        rows["start"] = next(iter(runs.values())).x_start[idx]
        rows.update({label: run.x_attacked[idx] for label, run in runs.items()})
        return rows
    for label, run in runs.items():
        rows[f"{label}\nstart"] = run.x_start[idx]
        rows[f"{label}\nattacked"] = run.x_attacked[idx]
    return rows


def mape_panels(runs: dict[str, StartRun]) -> dict[str, Tensor]:
    """Per-sample MAPE of each start run, keyed by a panel title naming the start image and ε (the MAPE
    histograms of Figures 3, 4, 8, 9 and 11)."""
    return {f"{start_label(run.start)} start, ε = {run.eps:g}": run.mape for run in runs.values()}


def mape_summary(runs: dict[str, StartRun]) -> list[list]:
    """One table row per start run: start image, ε, the root-mean-square change per input value it allows,
    median MAPE, the fractions of MAPE below 0.1% (the paper's threshold) and below 1%, and the mean L2 distance
    ``||x_out - x'_out||`` the attack actually travelled."""
    rows = []
    for run in runs.values():
        n_values = run.x_start[0].numel()
        travelled = (run.x_attacked - run.x_start).flatten(1).norm(dim=1).mean()
        rows.append([start_label(run.start), f"{run.eps:g}", rms_per_value(run.eps, n_values),
                     float(run.mape.median()), run.fraction_below, metrics.mape_fraction_below(run.mape, 1e-2),
                     float(travelled)])
    return rows


MAPE_SUMMARY_HEADER: list[str] = ["start image", "ε (L2)", "RMS change per value", "median MAPE",
                                  "fraction MAPE < 0.1%", "fraction MAPE < 1%", "mean ‖x_out − x'_out‖₂"]
"""Column names of :func:`mape_summary`."""


def auroc_rows(table: dict[str, dict[str, float]], paper: dict[str, float | None] | None = None) -> list[list]:
    """Table-1-style rows from :func:`msp_table`: start image, MSP AUROC before and after the attack, and the
    paper's value (after the attack) where it reports one; "not reproduced" rows for paper starts missing from
    ``table`` (the chest x-ray)."""
    paper = paper or {}
    rows = [[start_label(name), "not reproduced", "not reproduced", paper[name]]
            for name in paper if name not in table]
    rows += [[start_label(name) if name != "natural images" else "natural-image OOD set", values["clean"],
              values["attacked"] if name != "natural images" else "not attacked", paper.get(name)]
             for name, values in table.items()]
    return [[cell if cell is not None else "—" for cell in row] for row in rows]


AUROC_HEADER: list[str] = ["OOD samples", "MSP AUROC, clean", "MSP AUROC, attacked", "paper (attacked)"]
"""Column names of :func:`auroc_rows`."""


def add_auroc_rows(results: Results, item_prefix: str, table: dict[str, dict[str, float]],
                   paper: dict[str, float | None], note: str = "", missing_note: str = "") -> None:
    """Results rows "<prefix>, <start> start": the MSP AUROC after the attack beside the paper's (Table 1), the
    AUROC before the attack (no paper value), and a row with ``measured=None`` for each paper start image that
    was not run (``missing_note`` says why)."""
    for name, value in paper.items():
        if name not in table:
            results.add(f"{item_prefix}, {start_label(name)} start", "MSP AUROC (attacked)", None, paper=value,
                        note=missing_note)
    for name, values in table.items():
        if name == "natural images":
            results.add(f"{item_prefix}, natural-image OOD set", "MSP AUROC (clean)", values["clean"], note=note)
            continue
        results.add(f"{item_prefix}, {start_label(name)} start", "MSP AUROC (attacked)", values["attacked"],
                    paper=paper.get(name), note=note)
        results.add(f"{item_prefix}, {start_label(name)} start", "MSP AUROC (clean)", values["clean"], note=note)


def attack_configs(model: Classifier, x_in: Tensor, configs: dict[str, tuple[str, float]], *, steps: int,
                   seed: int = 0, id_mean: Tensor | float | None = None, **attack_options) -> dict[str, StartRun]:
    """:func:`attack_from_start` for each named ``(start image, ε)`` configuration — unlike
    :func:`attack_from_starts`, one start image may appear at several budgets (Appendix B.3 at two values of ε)."""
    return {name: attack_from_start(model, x_in, start, eps=eps, steps=steps, seed=seed, id_mean=id_mean,
                                    **attack_options)
            for name, (start, eps) in configs.items()}


@dataclass
class EncoderStudy:
    """One encoder under the attack (a section of Appendix B): the model, its test accuracy, the attacked test
    images per configuration, and the MSP detector's AUROCs (:func:`msp_table`) with a natural-image OOD set."""

    model: Classifier
    accuracy: float
    test: data.ImageSet
    runs: dict[str, StartRun]
    msp: dict[str, dict[str, float]]


def run_study(spec: ModelSpec, configs: dict[str, tuple[str, float]], *, n_samples: int, steps: int,
              n_natural: int, seed: int = 0, device: str = "auto", **attack_options) -> EncoderStudy:
    """The Section 3.1 pipeline for one classifier: get the model of ``spec`` from the store, take ``n_samples``
    of its test split (class-restricted as the spec says), attack them from each ``(start image, ε)`` of
    ``configs`` (:func:`attack_configs`), and measure the MSP AUROC before and after the attack, plus against
    ``n_natural`` natural-image OOD crops (:func:`oodlib.data.natural_ood_set`)."""
    n_samples = _checks.integer(n_samples, "n_samples", minimum=1)
    n_natural = _checks.integer(n_natural, "n_natural", minimum=1)
    model = get_model(spec, device=device)
    test = training_data(spec, "test").subset(n_samples, seed=seed)
    runs = attack_configs(model, test.x, configs, steps=steps, seed=seed, **attack_options)
    natural = data.natural_ood_set(n_natural, size=test.x.shape[-1], channels=test.x.shape[1], seed=seed)
    info = model_info(spec) or {}
    return EncoderStudy(model=model, accuracy=float(info.get("test_accuracy", float("nan"))), test=test,
                        runs=runs, msp=msp_table(model, test.x, runs, natural))


STUDY_HEADER: list[str] = [*MAPE_SUMMARY_HEADER[:-1], "MSP AUROC, clean", "MSP AUROC, attacked"]
"""Column names of :func:`study_rows`."""


def study_rows(study: EncoderStudy) -> list[list]:
    """One table row per configuration of a study: :func:`mape_summary` (without the distance travelled) and the
    MSP AUROC before and after the attack; a last row for the natural-image OOD set (clean only)."""
    rows = [[name, *summary[1:-1], study.msp[name]["clean"], study.msp[name]["attacked"]]
            for name, summary in zip(study.runs, mape_summary(study.runs))]
    natural = study.msp.get("natural images")
    if natural is not None:
        rows.append(["natural-image OOD set", *["—"] * (len(MAPE_SUMMARY_HEADER) - 2), natural["clean"],
                     "not attacked"])
    return rows


def add_run_rows(results: Results, item_prefix: str, runs: dict[str, StartRun], note: str = "") -> None:
    """Results rows "<prefix>, <start> start, ε = <ε>" with the fraction of MAPE < 0.1% and the median MAPE of
    each run (the paper's MAPE histograms give no number, only the claim that most values are below 0.1%)."""
    for run in runs.values():
        item = f"{item_prefix}, {start_label(run.start)} start, ε = {run.eps:g}"
        results.add(item, "fraction of MAPE < 0.1%", run.fraction_below, note=note)
        results.add(item, "median MAPE", run.mape.median(), note=note)


@dataclass
class DetectorAttack:
    """A detector under Algorithm 1 from one start image (Appendices E.2 and G.2): the attack matched the feature
    the detector's score is computed from, and the detector's in-scores of the ID, start and attacked images."""

    start: str
    eps: float
    x_start: Tensor
    result: AttackResult
    score_in: Tensor
    score_start: Tensor
    score_attacked: Tensor

    @property
    def auroc_start(self) -> float:
        """AUROC (ID positive) of the ID images against the start images, before the attack."""
        return metrics.auroc(self.score_in, self.score_start)

    @property
    def summary(self) -> dict[str, float]:
        """:func:`oodlib.metrics.detection_summary` of the ID images against the attacked images."""
        return metrics.detection_summary(self.score_in, self.score_attacked)

    @property
    def median_mape(self) -> float:
        """Median MAPE of the matched feature over the attacked images."""
        return float(self.result.mape.median())


def attack_detector(detector: Detector, target: str, x_in: Tensor, starts: dict[str, Tensor],
                    configs: dict[str, tuple[str, float]], *, steps: int, seed: int = 0, **attack_options
                    ) -> dict[str, DetectorAttack]:
    """For each named ``(start image, ε)`` of ``configs``, Algorithm 1 on the detector's attack target ``target``
    (one of ``detector.targets``: the feature its score is computed from, e.g. ``"logits"`` for Outlier Exposure
    (Appendix E), ``"classifier_input"`` for the confidence-calibrated classifier (Appendix G)) from the start
    batch ``starts[start]``, image ``i`` paired with ``x_in[i]``; then ``detector``'s scores. One start batch may
    appear at several budgets. The routine is the authors' unless ``attack_options`` names another.

    Raises ``ValueError`` for an empty ``x_in`` or start batch, or a ``target`` the detector does not name."""
    _checks.nonempty(x_in, "x_in")
    for name, batch in starts.items():
        _checks.nonempty(batch, f"starts[{name!r}]")
    attack_options.setdefault("routine", REPRODUCTION_ROUTINE)
    score_in = detector.score_batched(x_in)
    runs = {}
    for name, (start, eps) in configs.items():
        result = ood_attack(detector, x_in, starts[start], target=target, eps=eps, steps=steps, seed=seed,
                            **attack_options)
        runs[name] = DetectorAttack(start=start, eps=eps, x_start=starts[start], result=result, score_in=score_in,
                                    score_start=detector.score_batched(starts[start]),
                                    score_attacked=detector.score_batched(result.x))
    return runs


DETECTOR_ATTACK_HEADER: list[str] = ["AUROC, start images", "AUROC, attacked", "AUPR-In", "AUPR-Out",
                                     "FPR@95TPR (A)", "median MAPE"]
"""Column names of :func:`detector_attack_row`."""


def detector_attack_row(run: DetectorAttack) -> list[float]:
    """The AUROC before the attack, the detection summary after it, and the median MAPE of the matched feature."""
    summary = run.summary
    return [run.auroc_start, summary["auroc"], summary["aupr_in"], summary["aupr_out"], summary["fpr95_A"],
            run.median_mape]


# --- def
# Shared by the defence chapters (Appendices E, F, G, J and the extension chapters): the start batch of any start
# image (the mean-matched noise needs the ID training mean), and the reference sets of the ID-likeness check.

def id_mean(x_train: Tensor) -> Tensor:
    """Per-channel mean pixel value (C,) of in-distribution training images (N, C, H, W) in [0, 1]: the
    ``id_mean`` of :func:`oodlib.data.start_batch` for the ``noise_mean_matched`` start.

    Raises ``ValueError`` for an empty batch."""
    _checks.nonempty(x_train, "x_train")
    return x_train.float().mean(dim=(0, 2, 3))


def start_images(name: str, n: int, *, x_train: Tensor, seed: int = 0) -> Tensor:
    """``n`` start images (n, C, H, W) of the start ``name`` (:data:`oodlib.data.START_IMAGES`) at the size and
    channels of ``x_train``; the ``noise_mean_matched`` start takes :func:`id_mean` of ``x_train``, the others
    ignore it. Raises ``ValueError`` for an unknown start or an empty ``x_train``."""
    _checks.nonempty(x_train, "x_train")
    return start_batch(name, n, size=x_train.shape[-1], channels=x_train.shape[1], seed=seed, id_mean=id_mean(x_train))


def held_out(test: data.ImageSet, n_paired: int, n: int, seed: int = 0) -> Tensor:
    """Up to ``n`` images (n, C, H, W) of ``test`` that are *not* in ``test.subset(n_paired, seed)`` (the attack's
    targets), in their order: the held-out ID images of :func:`oodlib.verdicts.ood_check`.

    Raises ``ValueError`` if no test image is left over."""
    taken = torch.zeros(len(test), dtype=torch.bool)
    taken[torch.from_numpy(data._choose(len(test), n_paired, seed))] = True
    rest = test.x[~taken][:n]
    _checks.nonempty(rest, "held-out test images")
    return rest


def reference_sets(train: data.ImageSet, test: data.ImageSet, n_paired: int, *, n_train: int = 2000,
                   n_test: int = 500, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(x_train, x_id_test)`` for :func:`attack_evidence`'s ``reference``: ``n_train`` training images and
    ``n_test`` test images held out from the ``n_paired`` attack targets (:func:`held_out`)."""
    return train.subset(n_train, seed=seed).x, held_out(test, n_paired, n_test, seed=seed)


def runs_evidence(detector: Detector, x_in: Tensor, runs: dict[str, DetectorAttack], *, x_natural: Tensor,
                  reference: tuple[Tensor, Tensor]) -> dict[str, AttackEvidence]:
    """:func:`attack_evidence` of ``detector`` for each run of :func:`attack_detector` (same keys): the clean AUROC
    of ``x_in`` against the run's start images, the attacked AUROC, the clean AUROC against ``x_natural`` and the
    ID-likeness check against ``reference`` = ``(x_train, x_id_test)``."""
    return {name: attack_evidence(detector, x_in, run.x_start, run.result.x, x_natural=x_natural,
                                  reference=reference) for name, run in runs.items()}

# --- sec31
# Section 3.1 under the issue-14 rule: Table 1 judged on start images the clean MSP detector catches, the MAPE claim
# with the authors' routine beside the library's fast one, and the uniform-noise finding measured.


def msp_evidence(model: Classifier, x_in: Tensor, runs: dict[str, StartRun], *, x_natural: Tensor,
                 reference: tuple[Tensor, Tensor]) -> dict[str, AttackEvidence]:
    """Table 1 under the issue-14 rule: per run, :func:`attack_evidence` of the MSP detector (clean AUROC on the
    run's own start images, attacked AUROC, clean AUROC on ``x_natural``, and the ID-likeness check against
    ``reference = (x_train, x_held_out)``)."""
    msp = make_detector("msp", model)
    return {name: attack_evidence(msp, x_in, run.x_start, run.x_attacked, x_natural=x_natural, reference=reference)
            for name, run in runs.items()}


def add_evidence_rows(results: Results, item_prefix: str, evidence: dict[str, AttackEvidence],
                      paper: dict[str, float | None], *, metric: str = "MSP AUROC under attack",
                      notes: dict[str, str] | None = None) -> dict[str, Row]:
    """One :meth:`Results.add_attack` row "<prefix>, <name>" per evidence, with ``paper[name]`` (None: a
    comparison row, no verdict) and, as ``clean_offered``, the clean AUROCs of every other run of ``evidence``
    (the starts this chapter offers). Returns the rows by name (their ``verdict`` and ``reason`` for the glue)."""
    notes = notes or {}
    rows = {}
    for name, ev in evidence.items():
        offered = [other.clean for key, other in evidence.items() if key != name]
        rows[name] = results.add_attack(f"{item_prefix}, {name}", **ev.as_row(), paper=paper.get(name),
                                        clean_offered=offered, note=notes.get(name, ""), metric=metric)
    return rows


EVIDENCE_HEADER: list[str] = ["start image", "ε (L2)", "RMS change per value", "median MAPE", "clean (starts)",
                              "clean (natural OOD)", "attacked", "attacked images ID-like", "paper", "verdict"]
"""Column names of :func:`evidence_rows`."""


def evidence_rows(runs: dict[str, StartRun], evidence: dict[str, AttackEvidence], rows: dict[str, Row]
                  ) -> list[list]:
    """One table row per run: its ε and RMS change per value, median MAPE, the MSP AUROCs clean on the starts,
    clean on the natural OOD set and attacked, the fraction of attacked images that are ID-like, the paper's value
    and the verdict ("—" where the row is a comparison or ablation)."""
    table = []
    for name, run in runs.items():
        ev, row = evidence[name], rows[name]
        id_like = "—" if ev.ood is None else f"{ev.ood.fraction_id_like:.0%}"
        table.append([name, f"{run.eps:.3g}", rms_per_value(run.eps, run.x_start[0].numel()),
                      float(run.mape.median()), ev.clean, ev.clean_natural, ev.attacked, id_like,
                      "—" if row.paper is None else row.paper, row.verdict or "—"])
    return table


MAPE_VARIANT_HEADER: list[str] = ["run", "routine", "ε (L2)", "N", "pairs", "median MAPE", "fraction MAPE < 0.1%",
                                  "fraction MAPE < 1%"]
"""Column names of :func:`mape_variant_rows`."""


def mape_variant_rows(runs: dict[str, AttackResult]) -> list[list]:
    """One table row per named attack result (:func:`compare_variants`): its name, routine, ε, N and number of
    pairs as run (as text, so that a table prints them as integers), the median MAPE and the fractions below 0.1%
    (the paper's threshold) and 1%."""
    return [[name, r.params["routine"], f"{r.params['eps']:.3g}", str(r.params["steps"]), str(len(r.mape)),
             float(r.mape.median()),
             metrics.mape_fraction_below(r.mape, 1e-3), metrics.mape_fraction_below(r.mape, 1e-2)]
            for name, r in runs.items()]


@torch.no_grad()
def clean_msp_study(model: Classifier, x_in: Tensor, batches: dict[str, Tensor]) -> dict[str, dict[str, float]]:
    """Why the small classifiers are most confident on uniform noise (Section 3.1's uniform-noise finding): per
    named OOD batch (N, C, H, W), its mean pixel value, its mean MSP and the MSP detector's clean AUROC
    (ID positive) against ``x_in``; ``"ID"`` first, with the ID images' mean pixel value and mean MSP."""
    msp = make_detector("msp", model)
    s_in = msp.score_batched(x_in)
    study = {"ID": {"mean pixel": float(x_in.mean()), "mean MSP": float(s_in.mean()), "clean AUROC": float("nan")}}
    for name, x in batches.items():
        s = msp.score_batched(x)
        study[name] = {"mean pixel": float(x.mean()), "mean MSP": float(s.mean()),
                       "clean AUROC": metrics.auroc(s_in, s)}
    return study

# --- det
def start_batches(names: list[str], n: int, *, size: int, channels: int, seed: int = 0,
                  id_mean: float | Tensor | None = None) -> dict[str, Tensor]:
    """``n`` start images (n, C, size, size) per start name of :data:`oodlib.data.START_IMAGES`, keyed by name;
    ``id_mean`` (the in-distribution training mean) goes to ``"noise_mean_matched"`` only. The starts a chapter
    offers, for the clean AUROCs the verdict rule needs (issue 14: *not testable here* when no offered start is
    caught). Raises ``ValueError`` for an unknown name, or ``"noise_mean_matched"`` without ``id_mean``."""
    return {name: start_batch(name, n, size=size, channels=channels, seed=seed, id_mean=id_mean) for name in names}


# --- det
def clean_aurocs(detector: Detector | Callable[[Tensor], Tensor], x_in: Tensor, starts: dict[str, Tensor]
                 ) -> dict[str, float]:
    """The detector's clean AUROC (ID positive, in-scores) of ``x_in`` (N, C, H, W) against each unattacked start
    batch of ``starts`` (M, C, H, W), keyed as ``starts``. Raises ``ValueError`` for an empty batch."""
    _checks.nonempty(x_in, "x_in")
    score = detector.score_batched if isinstance(detector, Detector) else detector
    s_in = score(x_in)
    out = {}
    for name, x in starts.items():
        _checks.nonempty(x, f"starts[{name!r}]")
        out[name] = metrics.auroc(s_in, score(x))
    return out


# --- det
def rows_not_in(pool: Tensor, used: Tensor) -> Tensor:
    """The rows of ``pool`` (N, ...) equal to no row of ``used`` (M, ...), in their order: e.g. the ID test images
    that were not attack targets, for the ``reference`` of :func:`attack_evidence`. Raises ``ValueError`` if the
    rows of the two differ in shape or no row is left."""
    if pool.shape[1:] != used.shape[1:]:
        raise ValueError(f"rows differ in shape: pool {tuple(pool.shape[1:])}, used {tuple(used.shape[1:])}")
    seen = {row.numpy().tobytes() for row in used.detach().cpu().contiguous()}
    keep = [i for i, row in enumerate(pool.detach().cpu().contiguous()) if row.numpy().tobytes() not in seen]
    if not keep:
        raise ValueError("no row of pool is left after removing the rows of used")
    return pool[torch.as_tensor(keep, dtype=torch.long)]


# --- det
@torch.no_grad()
def layer_mape(layers: Callable[[Tensor], list[Tensor]], x_attacked: Tensor, x_in: Tensor) -> Tensor:
    """Per-sample, per-layer MAPE (Section 3) between the attacked images and their paired ID images, (N, L)
    float64: ``layers`` maps images (N, C, H, W) to one feature tensor (N, ...) per layer (e.g.
    :meth:`oodlib.detectors.mahalanobis.Mahalanobis.pooled_features`, whose concatenation is Appendix D's
    f = features). Shows which part of a concatenated f the attack left unmatched (issue 14, item 5).

    Raises ``ValueError`` if the two batches are empty or differ in shape."""
    _checks.nonempty(x_in, "x_in")
    if x_attacked.shape != x_in.shape:
        raise ValueError(f"x_attacked {tuple(x_attacked.shape)} and x_in {tuple(x_in.shape)} differ in shape")
    pairs = zip(layers(x_attacked), layers(x_in))
    return torch.stack([torch.as_tensor(metrics.mape(a.cpu(), b.cpu())).double() for a, b in pairs], dim=1)
