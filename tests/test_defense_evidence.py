"""The clean companions and ID-likeness evidence of the defence chapters (issue 14): the start-image and
reference-set helpers of ``oodlib.experiments``, the leaderboard's per-threat clean AUROC and ID-likeness check,
and the results rows of ``oodlib.defense_study``."""

import pandas as pd
import pytest
import torch

from oodlib import data, defense_study, experiments, metrics, verdicts
from oodlib.defenses import leaderboard
from oodlib.models import SmallCNN
from oodlib.report import Results


def _tiny(seed=0):
    torch.manual_seed(seed)
    return SmallCNN(in_channels=1, image_size=8, num_classes=3, width=4, latent_dim=8).eval()


def _images(n, seed, size=8, scale=1.0):
    return scale * torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def _set(n, seed):
    return data.ImageSet(_images(n, seed), torch.arange(n) % 3, ("a", "b", "c"), "toy")


# ------------------------------------------------------------------------------------------------ experiments


def test_id_mean_is_the_per_channel_mean():
    x = torch.zeros(4, 3, 2, 2)
    x[:, 1] = 0.5
    x[:, 2] = 1.0
    assert experiments.id_mean(x).tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError):
        experiments.id_mean(torch.zeros(0, 1, 2, 2))


def test_start_images_match_the_training_mean_only_for_the_mean_matched_start():
    x_train = _images(50, 0, scale=0.2)  # mean about 0.1
    matched = experiments.start_images("noise_mean_matched", 20, x_train=x_train, seed=3)
    uniform = experiments.start_images("noise", 20, x_train=x_train, seed=3)
    assert matched.shape == uniform.shape == (20, 1, 8, 8)
    assert abs(float(matched.mean()) - float(x_train.mean())) < 0.02
    assert abs(float(uniform.mean()) - 0.5) < 0.05
    assert torch.equal(matched, data.start_batch("noise_mean_matched", 20, size=8, channels=1, seed=3,
                                                 id_mean=experiments.id_mean(x_train)))
    assert torch.equal(experiments.start_images("spiral", 2, x_train=x_train),
                       data.start_batch("spiral", 2, size=8, channels=1))


def test_held_out_images_are_not_the_attack_targets():
    test = _set(30, 1)
    targets = test.subset(10, seed=4).x
    rest = experiments.held_out(test, 10, 100, seed=4)
    assert len(rest) == 20
    distances = torch.cdist(rest.flatten(1), targets.flatten(1))
    assert bool((distances > 0).all())
    assert len(experiments.held_out(test, 10, 5, seed=4)) == 5
    with pytest.raises(ValueError):
        experiments.held_out(test, 30, 5, seed=4)
    x_train, x_id_test = experiments.reference_sets(_set(40, 2), test, 10, n_train=15, n_test=7, seed=4)
    assert x_train.shape == (15, 1, 8, 8) and torch.equal(x_id_test, rest[:7])


def test_runs_evidence_judges_each_run_on_its_own_start_images():
    from oodlib.detectors import make_detector

    model = _tiny()
    detector = make_detector("msp", model)
    x_in, x_a, x_b = _images(6, 5), _images(6, 6), _images(6, 7, scale=0.1)
    runs = experiments.attack_detector(detector, "logits", x_in, {"a": x_a, "b": x_b},
                                       {"a": ("a", 0.5), "b": ("b", 0.5)}, steps=2, routine="authors")
    evidence = experiments.runs_evidence(detector, x_in, runs, x_natural=x_b, reference=(x_in, _images(4, 8)))
    for name, x0 in (("a", x_a), ("b", x_b)):
        assert evidence[name].clean == experiments.detector_auroc(detector, x_in, x0)
        assert evidence[name].attacked == experiments.detector_auroc(detector, x_in, runs[name].result.x)
        assert evidence[name].clean_natural == experiments.detector_auroc(detector, x_in, x_b)
    assert evidence["a"].clean != evidence["b"].clean


# ------------------------------------------------------------------------------------------------ leaderboard


@pytest.fixture(scope="module")
def board_with_starts():
    model = _tiny(1)
    x_in = _images(6, 7)
    evaluation = leaderboard.EvalData(x_in=x_in, x_ood=_images(6, 8), x_noise=_images(5, 9),
                                      x_train=_images(30, 6), y_train=torch.arange(30) % 3,
                                      x_start=_images(6, 10, scale=0.2), reference=(_images(30, 6), _images(5, 11)))
    settings = leaderboard.ThreatSettings(atom_steps=2, aloe_steps=2, ood_eps=0.5, ood_steps=2)
    return evaluation, leaderboard.run(["MSP"], {"standard": model}, {"standard": 0.5}, evaluation, settings)


def test_each_attack_carries_the_clean_auroc_of_its_own_start_images(board_with_starts):
    evaluation, board = board_with_starts
    cells = board.outcomes["MSP"]
    assert cells["start"].auroc == metrics.auroc(cells["start"].score_in, cells["start"].score_out)
    assert cells["start"].auroc != cells["clean"].auroc  # the two start sets differ
    for threat in ("atom_pgd", "aloe_pgd", "aoe_fgsm"):
        assert cells[threat].clean == cells["clean"].auroc
    for threat in ("ood_features", "ood_logits", "ood_adaptive"):
        assert cells[threat].clean == cells["start"].auroc
        assert isinstance(cells[threat].ood, verdicts.OODCheck)
    for threat in leaderboard.CLEAN_THREATS:
        assert cells[threat].clean == cells[threat].auroc and cells[threat].ood is None
    text = board.cell("MSP", "ood_features")
    assert text.startswith(f"{cells['start'].auroc:.3f} → {cells['ood_features'].auroc:.3f}")


def test_a_clean_companion_not_asked_for_is_computed(board_with_starts):
    evaluation, board = board_with_starts
    only = leaderboard.run(["MSP"], {"standard": _tiny(1)}, {"standard": 0.5}, evaluation,
                           leaderboard.ThreatSettings(ood_eps=0.5, ood_steps=2), threats=["ood_features"])
    cell = only.outcomes["MSP"]["ood_features"]
    assert list(only.outcomes["MSP"]) == ["ood_features"]
    assert cell.clean == board.outcomes["MSP"]["start"].auroc


def test_the_start_set_defaults_to_the_natural_images_and_must_pair_with_the_id_images():
    x = _images(4, 1)
    evaluation = leaderboard.EvalData(x, _images(4, 2), _images(4, 3), _images(4, 4), torch.zeros(4))
    assert evaluation.x_start is evaluation.x_ood and evaluation.reference is None
    with pytest.raises(ValueError, match="x_start must hold one start image per ID image"):
        leaderboard.EvalData(x, _images(4, 2), _images(4, 3), _images(4, 4), torch.zeros(4), x_start=_images(3, 5))


# ------------------------------------------------------------------------------------------------ defense study


def _attacks():
    base = {"ε": 1.0, "paper (Table 5)": None, "AUPR-In": 0.5, "AUPR-Out": 0.5, "FPR@95TPR (A)": 0.5,
            "median MAPE (logits)": 0.01, "note": "n"}
    rows = [("d", "noise_mean_matched", "noise_mean_matched", 0.95, 0.52, False, 0.5),
            ("d", defense_study.CROP, defense_study.CROP, 0.9, 0.6, False, None),
            ("d", defense_study.COMPARISON, "noise", 0.1, 0.5, False, None),
            ("d", "large", "noise_mean_matched", 0.95, 0.5, True, None),
            ("e", "noise_mean_matched", "noise_mean_matched", 0.5, 0.5, False, 0.5)]
    return pd.DataFrame([{**base, "ID set": d, "attack": a, "start": s, "clean (starts)": c, "AUROC, attacked": at,
                          "clean (natural OOD)": 0.9, "ID-like fraction": float(idl), "ID-like": idl,
                          "paper (Table 5)": p} for d, a, s, c, at, idl, p in rows])


class _Study:
    start, large, main = "noise_mean_matched", "large", "d"
    labels = {"noise_mean_matched": "main", defense_study.CROP: "crops", defense_study.COMPARISON: "noise",
              "large": "large"}


def test_add_attack_rows_judges_only_the_chapter_start_with_the_other_starts_offered():
    results = Results()
    rows = defense_study.add_attack_rows(results, _Study(), _attacks(), appendix="App", table="Table 5",
                                         feature="logits", paper_notes={})
    judged = {r.item: r for r in results.rows if r.clean is not None}
    assert judged["Table 5: d vs OOD"].verdict == verdicts.REPRODUCED
    # on "e" the clean detector misses the start and no other start of "e" is offered
    assert judged["Table 5: e vs OOD"].verdict == verdicts.NOT_TESTABLE
    assert judged["App (comparison): d, uniform noise (comparison) start"].verdict is None
    ablation = judged["App (ablation): d, large start"]
    assert ablation.id_like is True and ablation.paper is None
    assert set(rows["d"]) == {"main", "crops", "noise", "large"} and rows["d"]["main"].measured == 0.52
    study = _Study()
    study.datasets, study.eps_paper, study.eps_paper_large = ["d", "e"], 10.0, 20.0
    rows["e"]["large"] = rows["d"]["large"]
    assert defense_study.other_datasets(study, rows) == (
        "On e the claim is not testable here (clean 0.500 → attacked 0.500; at ε ×2: 0.500).")
    study.datasets = ["d"]
    assert defense_study.other_datasets(study, rows) == "This profile runs no second dataset."


def test_attack_row_gives_the_evidence_of_one_cell(board_with_starts):
    _, board = board_with_starts
    cells = board.outcomes["MSP"]
    row = board.attack_row("MSP", "ood_logits")
    assert row == {"attacked": cells["ood_logits"].auroc, "clean": cells["start"].auroc,
                   "clean_natural": cells["clean"].auroc, "id_like": cells["ood_logits"].ood.id_like,
                   "clean_offered": [cells["clean"].auroc, cells["noise"].auroc]}
    assert board.attack_row("MSP", "atom_pgd")["clean_offered"] == [cells["start"].auroc, cells["noise"].auroc]
    with pytest.raises(ValueError, match="without an attack"):
        board.attack_row("MSP", "noise")


def test_algorithm1_starts_from_the_start_images_within_the_ball(board_with_starts):
    evaluation, board = board_with_starts
    for threat in ("ood_features", "ood_logits", "ood_adaptive"):
        x = board.outcomes["MSP"][threat].x_out
        to_start = (x - evaluation.x_start).flatten(1).norm(dim=1)
        assert bool((to_start <= 0.5 + 1e-4).all())  # ε = 0.5 around the start images
        assert bool(((x - evaluation.x_ood).flatten(1).norm(dim=1) > 0.5 + 1e-4).any())
