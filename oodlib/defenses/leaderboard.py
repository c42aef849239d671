"""The threat-model leaderboard: every detector under every attack, on the same data.

Rows are detectors on their models: the baselines the attack paper broke (MSP, ODIN, Mahalanobis, Energy on the
plain classifier; Outlier Exposure on its own network) and the robust detectors of the source papers (ALOE, ATOM,
AOE, BAL). Columns are threat models (:data:`THREATS`):

- ``clean`` — no attack: in-distribution test images against natural OOD images;
- ``start`` — no attack: against the start images of Algorithm 1 (:attr:`EvalData.x_start`; by default the natural
  OOD images, in the leaderboard chapter noise with the ID set's mean grey level);
- ``noise`` — no attack, uniform-noise images instead (a labelled comparison: on MNIST-like data many detectors
  score uniform noise *above* the digits, so it is no start image for an attack here);
- ``atom_pgd`` — ATOM's evaluation: L∞ PGD on the OOD images raising the row's in-score, ε = 8/255
  (:func:`oodlib.attack.pgd.atom_threat`);
- ``aloe_pgd`` — ALOE's evaluation: L∞ PGD, ε = 1/255, lowering the in-score of the ID images and raising that of
  the OOD images (:func:`oodlib.attack.pgd.aloe_threat`);
- ``aoe_fgsm`` — AOE's threat: one FGSM step lowering the energy of the OOD images under the row's classifier
  (:func:`oodlib.attack.pgd.aoe_threat`);
- ``ood_features`` / ``ood_logits`` — Algorithm 1 of Liang et al. starting from :attr:`EvalData.x_start`,
  matching the penultimate features / the logits of paired ID images inside an L2 ball
  (:func:`oodlib.attack.ood_attack`);
- ``ood_adaptive`` — Algorithm 1 aimed at the row's own score as well: ``f(x) = [features(x), λ·score(x)]``
  (:class:`AdaptiveTarget`).

Every cell holds the AUROC (ID positive, in-scores) and the FPR at 95% TPR (convention A: the fraction of OOD
accepted at the threshold that keeps 95% of ID), and, for an attack, the same detector's clean AUROC against the
unattacked images the attack started from (:attr:`Outcome.clean`) and, when :attr:`EvalData.reference` is given,
whether the attacked images became in-distribution-like (:func:`oodlib.verdicts.ood_check`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from .. import metrics, verdicts
from ..attack import ood_attack, owning_module
from ..attack.pgd import aloe_threat, aoe_threat, atom_threat
from ..detectors.base import DETECTORS, Detector, make_detector
from ..utils import batched, eval_mode, module_device


@dataclass(frozen=True)
class Row:
    """A leaderboard row: a detector (registered name, and the module that registers it) on a model (a key of
    the models the caller passes, e.g. ``"standard"`` or ``"atom"``)."""

    label: str
    model: str
    detector: str
    module: str
    paper: str


ROWS: dict[str, Row] = {row.label: row for row in (
    Row("MSP", "standard", "msp", "oodlib.detectors.msp", "Hendrycks & Gimpel 2017"),
    Row("ODIN", "standard", "odin", "oodlib.detectors.odin", "Liang, Li & Srikant 2018"),
    Row("Mahalanobis", "standard", "mahalanobis", "oodlib.detectors.mahalanobis", "Lee et al. 2018"),
    Row("Energy", "standard", "energy", "oodlib.detectors.energy", "Liu et al. 2020"),
    Row("OE", "outlier_exposure", "outlier_exposure", "oodlib.detectors.outlier_exposure",
        "Hendrycks, Mazeika & Dietterich 2019"),
    Row("ALOE", "aloe", "msp", "oodlib.detectors.msp", "Chen et al. 2020 (ALOE)"),
    Row("ATOM", "atom", "atom", "oodlib.defenses.atom", "Chen et al. 2021 (ATOM)"),
    Row("AOE", "aoe", "energy", "oodlib.detectors.energy", "Botschen et al. 2025 (AOE)"),
    Row("BAL", "standard", "bal", "oodlib.defenses.bal", "Pei et al. 2022 (BAL)"),
)}

THREATS: tuple[str, ...] = ("clean", "start", "noise", "atom_pgd", "aloe_pgd", "aoe_fgsm", "ood_features",
                            "ood_logits", "ood_adaptive")
CLEAN_THREATS: tuple[str, ...] = ("clean", "start", "noise")
"""The columns without an attack."""
SMALL_BALL_TABLE: tuple[str, ...] = ("clean", "atom_pgd", "aloe_pgd", "aoe_fgsm", "noise")
"""The columns of the small-ball attackers' table: the natural OOD images clean and after each attack that starts
from them, then uniform noise (comparison)."""
OOD_ATTACK_TABLE: tuple[str, ...] = ("start", "ood_features", "ood_logits", "ood_adaptive")
"""The columns of the OOD attack's table: Algorithm 1's start images clean and after each attack target. With
:data:`SMALL_BALL_TABLE` every threat of :data:`THREATS` once."""
THREAT_STARTS: dict[str, str] = {"atom_pgd": "clean", "aloe_pgd": "clean", "aoe_fgsm": "clean",
                                 "ood_features": "start", "ood_logits": "start", "ood_adaptive": "start"}
"""For each attack, the column of the unattacked images it starts from (its clean companion)."""
THREAT_LABELS: dict[str, str] = {
    "clean": "clean (natural OOD)", "start": "Alg. 1 start (no attack)",
    "noise": "uniform noise (no attack, comparison)", "atom_pgd": "ATOM L∞ PGD (ε = 8/255)",
    "aloe_pgd": "ALOE L∞ PGD (ε = 1/255, ID + OOD)", "aoe_fgsm": "AOE FGSM on energy", "ood_features": "OOD attack: features", "ood_logits": "OOD attack: logits",
    "ood_adaptive": "OOD attack: adaptive"}
THREAT_SHORT: dict[str, str] = {
    "clean": "natural OOD", "start": "Alg.1 start", "noise": "uniform noise", "atom_pgd": "ATOM PGD", "aloe_pgd": "ALOE PGD", "aoe_fgsm": "AOE FGSM",
    "ood_features": "Alg.1 feat.", "ood_logits": "Alg.1 logits", "ood_adaptive": "Alg.1 adapt."}
"""Short threat names for figure labels."""


def model_specs(arch: str, dataset: str, *, seed: int, epochs: int, oe_epochs: int, aloe_epochs: int,
                atom_epochs: int, aoe_epochs: int, n_outliers: int, fine_tune: bool = True,
                fine_tune_lr: float = 1e-3) -> dict:
    """The :class:`~oodlib.store.ModelSpec` of every model a row needs, keyed like ``Row.model``.

    ``standard`` is the shared plain classifier (``epochs`` epochs); ``outlier_exposure`` is Outlier Exposure
    trained from scratch; AOE fine-tunes the plain classifier, as its paper does, and ``oe_finetune`` is the same
    fine-tuning without the FGSM step (AOE's Outlier Exposure baseline). ALOE and ATOM fine-tune it for
    ``aloe_epochs`` / ``atom_epochs`` epochs at ``fine_tune_lr`` when ``fine_tune`` (a small-budget choice), or
    train from scratch with their recipes' defaults as their papers do. ALOE and AOE draw ``n_outliers`` auxiliary
    outliers; ATOM mines ``n_outliers`` per epoch from a pool of twice as many.
    """
    from ..store import ModelSpec  # only where models are asked for (the store trains)

    def defense(recipe: str, n_epochs: int, warm: bool, **options) -> ModelSpec:
        start = {"base_epochs": epochs, "lr": fine_tune_lr} if warm else {"base_epochs": 0}
        return ModelSpec.make(arch, dataset, epochs=n_epochs, seed=seed, recipe=recipe,
                              recipe_options={**start, **options})

    return {"standard": ModelSpec.make(arch, dataset, epochs=epochs, seed=seed),
            "outlier_exposure": ModelSpec.make(arch, dataset, epochs=oe_epochs, seed=seed, recipe="outlier_exposure"),
            "aloe": defense("aloe", aloe_epochs, fine_tune, n_outliers=n_outliers),
            "atom": defense("atom", atom_epochs, fine_tune, pool_size=2 * n_outliers, n_mined=n_outliers),
            "aoe": ModelSpec.make(arch, dataset, epochs=aoe_epochs, seed=seed, recipe="aoe",
                                  recipe_options={"base_epochs": epochs, "n_outliers": n_outliers}),
            "oe_finetune": ModelSpec.make(arch, dataset, epochs=aoe_epochs, seed=seed, recipe="aoe",
                                          recipe_options={"base_epochs": epochs, "n_outliers": n_outliers,
                                                          "eps": 0.0})}


@dataclass(frozen=True)
class ThreatSettings:
    """Budgets of the threat models. The seeds' L∞ budgets are their papers' (pixel units); ``ood_eps`` is the
    L2 radius of Algorithm 1 (the attack paper's ε = 10 on 32×32×3 CIFAR is ≈ 5 on 28×28 at the same RMS change
    per value), ``ood_steps`` its iterations, ``aoe_eps`` the FGSM step (not given by the AOE poster; default
    ATOM's 8/255), ``adaptive_weight`` the weight of the score term of :class:`AdaptiveTarget`, ``ood_routine``
    the preset of :func:`~oodlib.attack.ood_attack`."""

    atom_eps: float = 8 / 255
    atom_steps: int = 40
    atom_step_size: float = 1 / 255
    aloe_eps: float = 1 / 255
    aloe_steps: int = 10
    aoe_eps: float = 8 / 255
    ood_eps: float = 5.0
    ood_steps: int = 200
    adaptive_weight: float = 1.0
    ood_routine: str = "fast"
    seed: int = 0


@dataclass
class EvalData:
    """The images every row is evaluated on: ID test images ``x_in``; natural OOD images ``x_ood``, one per ID
    image — clean and under the small-ball attacks; uniform-noise images ``x_noise`` (the ``noise`` comparison
    column); the ID training set ``x_train``, ``y_train`` that detectors fit their statistics on; the start images
    of Algorithm 1 ``x_start``, one per ID image, paired by index (None: ``x_ood``); and ``reference`` =
    ``(x_train, x_id_test)``, ID training images and held-out ID images not among ``x_in``, for the ID-likeness
    check of the attacked images (:func:`oodlib.verdicts.ood_check`; None: not checked)."""

    x_in: Tensor
    x_ood: Tensor
    x_noise: Tensor
    x_train: Tensor
    y_train: Tensor
    x_start: Tensor | None = None
    reference: tuple[Tensor, Tensor] | None = None

    def __post_init__(self) -> None:
        if self.x_start is None:
            self.x_start = self.x_ood
        for name, x in (("x_ood", self.x_ood), ("x_start", self.x_start)):
            if len(x) != len(self.x_in):
                raise ValueError(f"{name} must hold one start image per ID image: {len(x)} vs {len(self.x_in)}")


@dataclass
class Outcome:
    """One cell: the detection metrics and what they were computed from. ``clean``: the AUROC of the same detector
    against the unattacked images this cell's images came from (:data:`THREAT_STARTS`; a column without an attack
    is its own clean companion); ``ood``: :func:`oodlib.verdicts.ood_check` of an attacked cell's images (None for
    the columns without an attack, or without :attr:`EvalData.reference`)."""

    auroc: float
    fpr95: float
    score_in: Tensor
    score_out: Tensor
    x_out: Tensor
    clean: float = float("nan")
    ood: verdicts.OODCheck | None = None


@dataclass
class Leaderboard:
    """Outcomes per row label and threat, the ID accuracy of each row's model, and the rows that could not be
    evaluated with the reason."""

    outcomes: dict[str, dict[str, Outcome]] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    detectors: dict[str, Detector] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def cell(self, row: str, threat: str) -> str:
        """``"AUROC / FPR95"`` of a column without an attack, ``"clean → attacked AUROC / FPR95"`` of an attack
        (clean: the same detector on the unattacked images the attack started from), 3 and 2 decimals."""
        o = self.outcomes[row][threat]
        if threat in CLEAN_THREATS:
            return f"{o.auroc:.3f} / {o.fpr95:.2f}"
        return f"{o.clean:.3f} → {o.auroc:.3f} / {o.fpr95:.2f}"

    def attack_row(self, row: str, threat: str) -> dict:
        """The evidence of one attacked cell as keyword arguments of :meth:`oodlib.report.Results.add_attack`:
        ``attacked`` and ``clean`` (:attr:`Outcome.clean`), ``clean_natural`` (the row's ``clean`` column, None if
        not evaluated), ``id_like`` (None if not checked) and ``clean_offered`` (the row's other columns without an
        attack). Raises ``ValueError`` for a column without an attack."""
        if threat in CLEAN_THREATS:
            raise ValueError(f"{threat!r} is a column without an attack")
        cells, o = self.outcomes[row], self.outcomes[row][threat]
        natural = cells.get("clean")
        offered = [cells[t].auroc for t in CLEAN_THREATS if t in cells and t != THREAT_STARTS[threat]]
        return {"attacked": o.auroc, "clean": o.clean, "clean_natural": None if natural is None else natural.auroc,
                "id_like": None if o.ood is None else o.ood.id_like, "clean_offered": offered}

    def table_rows(self, threats: Sequence[str], accuracy: bool = True) -> list[list]:
        """Rows for :func:`oodlib.report.markdown_table`: label, ID accuracy (unless ``accuracy`` is False), then
        one cell per threat."""
        return [[label, *([self.accuracy[label]] if accuracy else []), *(self.cell(label, t) for t in threats)]
                for label in self.outcomes]


class AdaptiveTarget(nn.Module):
    """The adaptive OOD attack's target map ``f(x) = [features(x), λ·score(x)]``: Algorithm 1 with this ``f``
    matches the penultimate features **and** the detector's own score of a paired ID image (Liang et al. attack
    whatever differentiable map a detector uses; Appendix D attacks Mahalanobis' score directly)."""

    def __init__(self, model: nn.Module, detector: Detector, weight: float) -> None:
        super().__init__()
        self.model, self.detector, self.weight = model, detector, weight

    def forward(self, x: Tensor) -> Tensor:
        z = self.model.features(x)
        return torch.cat([z, (self.weight * self.detector.score(x)[:, None]).to(z.dtype)], dim=1)


def adaptive_weight(model: nn.Module, detector: Detector, x_in: Tensor, scale: float = 1.0) -> float:
    """λ of :class:`AdaptiveTarget`: ``scale`` × (median L2 norm of the ID features) / (standard deviation of the
    ID scores), so that a one-standard-deviation score difference counts as much as a whole feature vector."""
    z = _batched(model.features, x_in)
    s = _scores(detector, x_in)
    return float(scale * z.norm(dim=1).median() / s.std().clamp_min(1e-6))


def _batched(f: Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 256) -> Tensor:
    """``f`` of many images, with autograd on (a score may differentiate internally), detached, on the CPU."""
    owner = owning_module(f)
    with torch.enable_grad():
        return batched(lambda batch: f(batch).detach(), x, batch_size,
                       module_device(owner) if owner is not None else None)


def _scores(detector: Detector, x: Tensor) -> Tensor:
    """In-scores of many images in eval mode (autograd on, so scores with input preprocessing work); every
    submodule's mode is restored afterwards."""
    with eval_mode(detector):
        return _batched(detector.score, x)


def _outcome(detector: Detector, x_in: Tensor, x_out: Tensor, score_in: Tensor | None = None) -> Outcome:
    s_in = _scores(detector, x_in) if score_in is None else score_in
    s_out = _scores(detector, x_out)
    return Outcome(auroc=metrics.auroc(s_in, s_out), fpr95=metrics.fpr_at_95_tpr(s_in, s_out, "A"),
                   score_in=s_in, score_out=s_out, x_out=x_out)


def load_detector(row: Row, model: nn.Module, data: EvalData, options: Mapping | None = None) -> Detector:
    """The row's detector on ``model``, its module imported on demand, fitted on the ID training data, in eval
    mode.

    Raises
    ------
    ModuleNotFoundError
        The module that registers the detector does not exist (yet).
    """
    if row.detector not in DETECTORS:
        importlib.import_module(row.module)
    detector = make_detector(row.detector, model, **dict(options or {})).fit(data.x_train, data.y_train)
    return detector.eval()  # a new module is in train mode, which restoring its mode would push into the model


def algorithm1(f: Callable[[Tensor], Tensor], data: EvalData, settings: ThreatSettings) -> Tensor:
    """Algorithm 1 from the start images ``data.x_start`` (by default the natural OOD images) toward the codes
    ``f(data.x_in)`` of the paired ID images (routine ``settings.ood_routine``)."""
    targets = _batched(f, data.x_in)
    return ood_attack(f, None, data.x_start, z_in=targets, eps=settings.ood_eps, steps=settings.ood_steps,
                      routine=settings.ood_routine, seed=settings.seed).x


def evaluate_row(detector: Detector, model: nn.Module, data: EvalData, settings: ThreatSettings,
                 threats: Sequence[str], shared: dict | None = None) -> dict[str, Outcome]:
    """All ``threats`` against one detector. ``shared`` caches the attacks that depend only on the model
    (Algorithm 1 on its features or logits), keyed by ``(id(model), threat)``, across rows on one model."""
    shared = {} if shared is None else shared
    unknown = set(threats) - set(THREATS)
    if unknown:
        raise ValueError(f"unknown threats {sorted(unknown)}; valid choices: {', '.join(THREATS)}")
    score_in = _scores(detector, data.x_in)
    out: dict[str, Outcome] = {}
    for threat in threats:
        if threat == "clean":
            out[threat] = _outcome(detector, data.x_in, data.x_ood, score_in)
        elif threat == "start":
            out[threat] = _outcome(detector, data.x_in, data.x_start, score_in)
        elif threat == "noise":
            out[threat] = _outcome(detector, data.x_in, data.x_noise, score_in)
        elif threat == "atom_pgd":
            x = atom_threat(detector, data.x_ood, eps=settings.atom_eps, steps=settings.atom_steps,
                            step_size=settings.atom_step_size, seed=settings.seed).x
            out[threat] = _outcome(detector, data.x_in, x, score_in)
        elif threat == "aloe_pgd":
            attacked_in, attacked_out = aloe_threat(detector, data.x_in, data.x_ood, eps=settings.aloe_eps,
                                                    steps=settings.aloe_steps, seed=settings.seed)
            out[threat] = _outcome(detector, attacked_in.x, attacked_out.x)
        elif threat == "aoe_fgsm":
            out[threat] = _outcome(detector, data.x_in, aoe_threat(model, data.x_ood, eps=settings.aoe_eps),
                                   score_in)
        elif threat in ("ood_features", "ood_logits"):
            key = (id(model), threat)
            if key not in shared:
                shared[key] = algorithm1(model.features if threat == "ood_features" else model, data, settings)
            out[threat] = _outcome(detector, data.x_in, shared[key], score_in)
        else:  # ood_adaptive
            weight = adaptive_weight(model, detector, data.x_in, settings.adaptive_weight)
            x = algorithm1(AdaptiveTarget(model, detector, weight), data, settings)
            out[threat] = _outcome(detector, data.x_in, x, score_in)
    _add_evidence(out, detector, data, score_in)
    return out


def _add_evidence(out: dict[str, Outcome], detector: Detector, data: EvalData, score_in: Tensor) -> None:
    """Fill each outcome's clean companion (:data:`THREAT_STARTS`; computed here when its column was not asked
    for) and, for the attacks, the ID-likeness check of the attacked images when ``data.reference`` is given."""
    unattacked = {"clean": data.x_ood, "start": data.x_start}
    clean: dict[str, float] = {}
    for threat, outcome in out.items():
        source = THREAT_STARTS.get(threat)
        if source is None:
            outcome.clean = outcome.auroc
            continue
        if source not in clean:
            clean[source] = out[source].auroc if source in out else \
                _outcome(detector, data.x_in, unattacked[source], score_in).auroc
        outcome.clean = clean[source]
        if data.reference is not None:
            outcome.ood = verdicts.ood_check(outcome.x_out, *data.reference)


def run(rows: Sequence[str | Row], models: Mapping[str, nn.Module], accuracies: Mapping[str, float],
        data: EvalData, settings: ThreatSettings, threats: Sequence[str] = THREATS,
        detector_options: Mapping[str, Mapping] | None = None) -> Leaderboard:
    """Evaluate each row (a label of :data:`ROWS`, or a :class:`Row`) under each threat.

    ``models`` and ``accuracies`` map a row's model key (``Row.model``) to the trained classifier and its ID test
    accuracy; ``detector_options`` maps a row label to its detector's constructor options. A row whose detector
    module does not exist yet, or whose model is not given, is listed in ``Leaderboard.missing``.
    """
    unknown = [r for r in rows if not isinstance(r, Row) and r not in ROWS]
    if unknown:
        raise ValueError(f"unknown leaderboard rows {unknown}; valid choices: {', '.join(ROWS)}")
    board, shared = Leaderboard(), {}
    for row in (r if isinstance(r, Row) else ROWS[r] for r in rows):
        if row.model not in models:
            board.missing[row.label] = f"no model {row.model!r} given"
            continue
        try:
            detector = load_detector(row, models[row.model], data, (detector_options or {}).get(row.label))
        except ModuleNotFoundError as err:
            if err.name != row.module:
                raise
            board.missing[row.label] = f"detector module {row.module} not available yet"
            continue
        board.outcomes[row.label] = evaluate_row(detector, models[row.model], data, settings, threats, shared)
        board.accuracy[row.label] = accuracies[row.model]
        board.detectors[row.label] = detector
    return board
