"""The encoder-chapter pipeline (oodlib.experiments): attack per start image, Table 1's MSP AUROCs, and the
figure/table glue of Section 1, Section 3.1 and Appendix B."""

import math

import pytest
import torch

from oodlib import experiments
from oodlib.models import SmallCNN
from oodlib.report import Results
from oodlib.store import ModelSpec


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SmallCNN(in_channels=1, image_size=12, num_classes=3, width=4, latent_dim=8).eval()


@pytest.fixture(scope="module")
def x_in():
    return torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def runs(model, x_in):
    return experiments.attack_from_starts(model, x_in, ["ct", "noise"], [2.0, 3.0], steps=8, seed=0)


def test_scale_eps_keeps_the_rms_per_value():
    eps = experiments.scale_eps(10.0, 784, paper_values=3 * 32 * 32)
    assert experiments.rms_per_value(eps, 784) == pytest.approx(experiments.rms_per_value(10.0, 3 * 32 * 32))


def test_attack_from_starts_pairs_every_sample(runs, x_in):
    assert list(runs) == ["ct", "noise"]
    ct, noise = runs["ct"], runs["noise"]
    assert ct.x_attacked.shape == x_in.shape and ct.mape.shape == (6,)
    assert torch.equal(ct.x_start[0], ct.x_start[5])  # one CT image for every pair
    assert not torch.equal(noise.x_start[0], noise.x_start[1])  # independent noise per pair
    assert ((noise.x_attacked - noise.x_start).flatten(1).norm(dim=1) <= 3.0 + 1e-4).all()
    assert ct.fraction_below == float((ct.mape < 1e-3).double().mean())


def test_attack_from_starts_needs_one_eps_per_start(model, x_in):
    with pytest.raises(ValueError, match="one ε per start image"):
        experiments.attack_from_starts(model, x_in, ["ct", "noise"], [2.0], steps=2)


def test_msp_table_with_natural_set(model, x_in, runs):
    table = experiments.msp_table(model, x_in, runs, x_natural=torch.rand(5, 1, 12, 12))
    assert set(table) == {"ct", "noise", "natural images"}
    from oodlib import metrics
    from oodlib.detectors import make_detector

    msp = make_detector("msp", model)
    for start in ("ct", "noise"):
        assert table[start]["clean"] == metrics.auroc(msp.score_batched(x_in), msp.score_batched(runs[start].x_start))
        assert table[start]["attacked"] == metrics.auroc(msp.score_batched(x_in),
                                                         msp.score_batched(runs[start].x_attacked))
    assert math.isnan(table["natural images"]["attacked"])


def test_start_and_model_labels():
    assert experiments.start_label("ct") == "CT"
    assert experiments.start_label("camera") == "camera"
    assert experiments.model_label("ResNet-18", "resnet18", "imagenet_val", "resnet18", "imagenet_val") == "ResNet-18"
    assert experiments.model_label("ResNet-18", "small_cnn", "mnist5k", "resnet18", "imagenet_val") == (
        "ResNet-18 (stand-in: small_cnn on mnist5k)")


def test_example_indices_show_distinct_classes_first():
    y = torch.tensor([2, 2, 0, 1, 0, 1])
    assert experiments.example_indices(y, 3) == [2, 3, 0]
    assert experiments.example_indices(y, 5) == [2, 3, 0, 1, 4]
    assert experiments.example_indices(torch.tensor([1, 1, 1]), 2) == [0, 1]
    with pytest.raises(ValueError):
        experiments.example_indices(y, -1)


def test_panel_inputs_and_image_rows_select_the_samples(x_in, runs):
    panel = experiments.panel_inputs(x_in, runs["noise"], [4, 1])
    assert set(panel) == {"x_in", "x_start", "x_attacked", "z_in", "z_start", "z_attacked", "mapes"}
    assert torch.equal(panel["x_attacked"][0], runs["noise"].x_attacked[4])
    assert torch.equal(panel["mapes"], runs["noise"].mape[[4, 1]])
    rows = experiments.image_rows(x_in, {"A": runs["ct"], "B": runs["noise"]}, [0, 2])
    assert list(rows) == ["ID", "start", "A", "B"]
    assert torch.equal(rows["start"], runs["ct"].x_start[[0, 2]])
    rows = experiments.image_rows(x_in, {"CT": runs["ct"], "noise": runs["noise"]}, [0, 2], shared_start=False)
    assert list(rows) == ["ID", "CT\nstart", "CT\nattacked", "noise\nstart", "noise\nattacked"]
    assert torch.equal(rows["noise\nstart"], runs["noise"].x_start[[0, 2]])
    with pytest.raises(ValueError):
        experiments.image_rows(x_in, {}, [0])


def test_mape_panels_and_summary(runs):
    panels = experiments.mape_panels(runs)
    assert list(panels) == ["CT start, ε = 2", "noise start, ε = 3"]
    rows = experiments.mape_summary(runs)
    assert len(rows) == 2 and len(rows[0]) == len(experiments.MAPE_SUMMARY_HEADER)
    label, eps, rms, median, below_01, below_1, travelled = rows[1]
    assert (label, eps) == ("noise", "3")
    assert rms == pytest.approx(3.0 / 12)
    assert median == pytest.approx(float(runs["noise"].mape.median()))
    assert below_01 == runs["noise"].fraction_below
    assert below_1 == float((runs["noise"].mape < 1e-2).double().mean())
    assert 0.0 < travelled <= 3.0 + 1e-4


def test_auroc_rows_and_results_rows_mark_the_missing_start():
    table = {"ct": {"clean": 0.8, "attacked": 0.55}, "natural images": {"clean": 0.9, "attacked": float("nan")}}
    paper = {"xray": 0.643, "ct": 0.633, "noise": 0.5}
    rows = experiments.auroc_rows(table, paper)
    assert rows[0][1] == "not reproduced"
    assert rows[-1] == ["natural-image OOD set", 0.9, "not attacked", "—"]
    results = Results()
    experiments.add_auroc_rows(results, "Table 1: ResNet-18", table, paper, missing_note="no x-ray")
    by_item = {(r.item, r.metric): r for r in results.rows}
    assert by_item[("Table 1: ResNet-18, chest x-ray start", "MSP AUROC (attacked)")].measured is None
    assert by_item[("Table 1: ResNet-18, CT start", "MSP AUROC (attacked)")].paper == 0.633
    assert by_item[("Table 1: ResNet-18, natural-image OOD set", "MSP AUROC (clean)")].measured == 0.9
    assert ("Table 1: ResNet-18, noise start", "MSP AUROC (attacked)") in by_item  # noise missing from table


def test_attack_configs_allow_one_start_at_two_budgets(model, x_in):
    runs = experiments.attack_configs(model, x_in, {"small": ("noise", 0.5), "large": ("noise", 4.0)}, steps=4)
    assert [r.eps for r in runs.values()] == [0.5, 4.0]
    assert torch.equal(runs["small"].x_start, runs["large"].x_start)  # same seed, same noise
    assert ((runs["small"].x_attacked - runs["small"].x_start).flatten(1).norm(dim=1) <= 0.5 + 1e-4).all()


def test_run_study_on_a_tiny_cached_model(tmp_path, monkeypatch):
    monkeypatch.setenv("OODLIB_CACHE", str(tmp_path))
    spec = ModelSpec.make("small_cnn", "digits", epochs=1, seed=0, classes=[0, 1, 2],
                          options={"width": 4, "latent_dim": 8})
    study = experiments.run_study(spec, {"CT": ("ct", 1.0), "noise": ("noise", 2.0)}, n_samples=10, steps=3,
                                  n_natural=6, seed=0, device="cpu")
    assert study.test.x.shape == (10, 1, 8, 8) and set(study.test.y.tolist()) <= {0, 1, 2}
    from oodlib.store import model_info

    assert study.accuracy == model_info(spec)["test_accuracy"]
    assert list(study.runs) == ["CT", "noise"] and study.runs["CT"].z_in.shape == (10, 8)
    assert set(study.msp) == {"CT", "noise", "natural images"}
    rows = experiments.study_rows(study)
    assert [r[0] for r in rows] == ["CT", "noise", "natural-image OOD set"]
    assert all(len(r) == len(experiments.STUDY_HEADER) for r in rows)
    assert rows[1][1] == "2" and rows[1][-1] == study.msp["noise"]["attacked"]
    assert rows[2][-1] == "not attacked"
    results = Results()
    experiments.add_run_rows(results, "Figure 8: X", study.runs, note="n")
    assert [(r.item, r.metric) for r in results.rows[:2]] == [
        ("Figure 8: X, CT start, ε = 1", "fraction of MAPE < 0.1%"), ("Figure 8: X, CT start, ε = 1", "median MAPE")]
    assert results.rows[3].measured == pytest.approx(float(study.runs["noise"].mape.median()))


def test_attack_detector_matches_the_feature_and_scores_every_set(model, x_in):
    from oodlib import metrics, plots
    from oodlib.attack import ood_attack
    from oodlib.detectors import make_detector

    detector = make_detector("msp", model)
    starts = {"noise": torch.rand_like(x_in), "crop": torch.rand_like(x_in).mul(0.5)}
    configs = {"noise": ("noise", 2.0), "crop": ("crop", 2.0), "noise, ε ×2": ("noise", 4.0)}
    runs = experiments.attack_detector(detector, "logits", x_in, starts, configs, steps=6, seed=0)
    assert list(runs) == list(configs)
    big = runs["noise, ε ×2"]
    assert big.start == "noise" and big.eps == 4.0 and big.x_start is starts["noise"]
    # the same attack as a direct call with the authors' routine: the helper adds scoring, nothing else
    direct = ood_attack(model, x_in, starts["noise"], eps=4.0, steps=6, seed=0, routine="authors")
    assert torch.equal(big.result.x, direct.x)
    assert torch.equal(big.score_attacked, detector.score_batched(direct.x))
    assert torch.equal(big.score_start, detector.score_batched(starts["noise"]))
    assert big.auroc_start == metrics.auroc(detector.score_batched(x_in), detector.score_batched(starts["noise"]))
    row = experiments.detector_attack_row(big)
    assert len(row) == len(experiments.DETECTOR_ATTACK_HEADER)
    assert row[1] == big.summary["auroc"] and row[-1] == float(direct.mape.median())
    figures = plots.detector_attack_figures(runs, x_in, [0, 1], main="noise", crop="crop", large="noise, ε ×2",
                                            xlabel="MSP")
    assert set(figures) == {"hist_main", "hist_crop", "images"}
    labels = [" ".join(t.get_text().split()) for ax in figures["images"].axes for t in ax.texts]
    assert labels == ["ID $x_{in}$", "noise start", "attacked (noise)", "attacked (ε ×2)", "crop start",
                      "attacked (crop)"]


def test_attack_evidence_gives_clean_attacked_natural_aurocs_and_the_ood_check():
    from oodlib import experiments

    def score(x):  # in-score: darker is more in-distribution
        return -x.mean(dim=(1, 2, 3))

    g = torch.Generator().manual_seed(0)
    x_in = torch.rand(20, 1, 4, 4, generator=g) * 0.2
    x_start = 0.8 + torch.rand(10, 1, 4, 4, generator=g) * 0.2
    x_attacked = torch.rand(10, 1, 4, 4, generator=g) * 0.2
    reference = (torch.rand(30, 1, 4, 4, generator=g) * 0.2, torch.rand(20, 1, 4, 4, generator=g) * 0.2)
    evidence = experiments.attack_evidence(score, x_in, x_start, x_attacked, x_natural=x_start.flip(0),
                                           reference=reference)
    assert evidence.clean == 1.0 and evidence.clean_natural == 1.0
    assert 0.2 < evidence.attacked < 0.8
    assert evidence.ood.id_like  # attacked images drawn like the ID set
    row = evidence.as_row()
    assert row == {"clean": 1.0, "attacked": evidence.attacked, "clean_natural": 1.0, "id_like": True}
    assert experiments.attack_evidence(score, x_in, x_start, x_start).ood is None
    with pytest.raises(ValueError, match="differ in shape"):
        experiments.attack_evidence(score, x_in, x_start, x_attacked[:5])


# --- sec31: Section 3.1 under the issue-14 rule


def test_configs_run_the_named_routine_and_the_evidence_rows_carry_verdicts(model, x_in):
    configs = {"checker start": ("checker2", 2.0), "noise start": ("noise", 2.0),
               "matched start": ("noise_mean_matched", 2.0)}
    mean = experiments.id_mean(x_in)
    runs = experiments.attack_configs(model, x_in, configs, steps=4, routine="authors", id_mean=mean, seed=0)
    assert all(r.result.params["routine"] == "authors" for r in runs.values())
    assert torch.allclose(runs["matched start"].x_start.mean(), mean.mean(), atol=0.05)
    fast = experiments.attack_configs(model, x_in, configs, steps=4, routine="fast", id_mean=mean, seed=0)
    assert fast["noise start"].result.params["routine"] == "fast"
    reference = (x_in.flip(0), x_in)
    evidence = experiments.msp_evidence(model, x_in, runs, x_natural=x_in.flip(2), reference=reference)
    assert set(evidence) == set(configs) and all(ev.ood is not None for ev in evidence.values())
    results = Results()
    rows = experiments.add_evidence_rows(results, "Table 1: tiny", evidence, {"checker start": 0.5},
                                         notes={"noise start": "comparison"})
    assert rows["checker start"].verdict is not None and rows["noise start"].verdict is None
    assert rows["noise start"].note == "comparison" and rows["checker start"].item == "Table 1: tiny, checker start"
    # the other start's clean AUROC is offered: a verdict "not testable" needs every start below 0.8
    lone = experiments.add_evidence_rows(Results(), "t", {"only": evidence["checker start"]}, {"only": 0.5})
    assert (rows["checker start"].verdict == lone["only"].verdict) == (
        (evidence["checker start"].clean >= 0.8) or (evidence["noise start"].clean < 0.8))
    table = experiments.evidence_rows(runs, evidence, rows)
    assert len(table) == 3 and len(table[0]) == len(experiments.EVIDENCE_HEADER)
    assert table[0][-1] == rows["checker start"].verdict and table[1][-1] == "—" and table[1][-2] == "—"


def test_mape_variant_rows_read_routine_eps_and_n_from_each_run(model, x_in):
    x_start = experiments.start_images("noise", len(x_in), x_train=x_in, seed=1)
    runs = experiments.compare_variants(model.features, x_in, x_start,
                                        {"a": {"routine": "authors", "eps": 1.0, "steps": 3},
                                         "b": {"routine": "fast", "eps": 2.0, "steps": 5}}, seed=0)
    rows = experiments.mape_variant_rows(runs)
    assert [r[:5] for r in rows] == [["a", "authors", "1", "3", "6"], ["b", "fast", "2", "5", "6"]]
    assert rows[0][5] == pytest.approx(float(runs["a"].mape.median()))
    assert len(rows[0]) == len(experiments.MAPE_VARIANT_HEADER)


def test_clean_msp_study_reports_mean_pixel_msp_and_auroc(model, x_in):
    study = experiments.clean_msp_study(model, x_in, {"dark": x_in * 0.1, "same": x_in.clone()})
    assert list(study) == ["ID", "dark", "same"]
    assert study["dark"]["mean pixel"] == pytest.approx(0.1 * float(x_in.mean()), rel=1e-5)
    assert study["same"]["clean AUROC"] == pytest.approx(0.5)
    assert math.isnan(study["ID"]["clean AUROC"])
    assert study["ID"]["mean MSP"] == pytest.approx(study["same"]["mean MSP"])
