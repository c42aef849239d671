"""oodlib.report: the profile banner and the scorecard's collection of results files."""

import json

import numpy as np
import pytest

from oodlib.report import collect_results, profile_banner


def test_profile_banner_lists_the_parameters_but_not_the_profile():
    text = profile_banner("smoke", {"profile": "smoke", "eps": 5.0, "dataset": "mnist5k"}, "Smaller models.").data
    assert "Built with the **smoke** profile." in text
    assert "Parameters: `eps=5.0`, `dataset='mnist5k'`." in text and "`profile=" not in text
    assert text.rstrip().endswith(":::") and "Smaller models." in text


def test_profile_banner_of_a_chapter_without_parameters_says_so():
    text = profile_banner("default", {"profile": "default"}).data
    assert "This chapter has no parameters." in text and "Parameters: ." not in text


def _write(folder, stem, rows):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps({"notebook": stem, "rows": rows}))


def test_collect_results_reads_the_runner_s_results_folder(tmp_path, monkeypatch):
    row = {"item": "x", "metric": "AUROC", "measured": 0.5, "paper": 0.5, "note": ""}
    _write(tmp_path / "elsewhere" / "smoke", "b_chapter", [row])
    _write(tmp_path / "elsewhere" / "smoke", "a_chapter", [dict(row, item="y")])
    _write(tmp_path / "elsewhere" / "smoke", "scorecard", [row])
    monkeypatch.setenv("OODLIB_RESULTS", str(tmp_path / "elsewhere"))
    rows = collect_results("smoke", exclude=("scorecard",))
    assert [(r["chapter"], r["item"]) for r in rows] == [("a_chapter", "y"), ("b_chapter", "x")]
    assert collect_results("smoke", results_dir=tmp_path / "nowhere") == []


def test_add_attack_carries_the_clean_companions_and_the_verdict():
    from oodlib import verdicts
    from oodlib.report import Results

    results = Results()
    row = results.add_attack("x", attacked=0.52, clean=0.97, clean_natural=0.9, paper=0.5, id_like=False)
    assert (row.clean, row.clean_natural, row.id_like, row.verdict) == (0.97, 0.9, False, verdicts.REPRODUCED)
    assert results.add_attack("y", attacked=0.5, clean=0.97, paper=0.5, id_like=True).verdict == \
        verdicts.NOT_REPRODUCED
    assert results.add_attack("z", attacked=0.5, clean=0.1, paper=0.5).verdict == verdicts.NOT_TESTABLE
    assert results.add_attack("w", attacked=0.5, clean=0.1, paper=0.5, clean_offered=[0.9]).verdict == \
        verdicts.NOT_REPRODUCED
    unjudged = results.add_attack("v", attacked=0.5, clean=0.0)  # no paper value: reported, not judged
    assert unjudged.verdict is None and unjudged.clean == 0.0
    compared = results.add_attack("u", attacked=0.5, clean=0.9, paper=0.5, judge=False)  # judged elsewhere
    assert compared.verdict is None and compared.paper == 0.5
    assert "verdict" in results.table("c", "tbl-x").data


def test_add_mape_claim_stores_the_fraction_below_the_threshold_and_its_verdict():
    from oodlib import verdicts
    from oodlib.report import Results

    row = Results().add_mape_claim("m", [1e-4, 2e-3, 5e-4, 1e-2])
    assert row.measured == 0.5 and row.paper is None and row.verdict == verdicts.REPRODUCED
    assert "most MAPE values" in row.note
    assert Results().add_mape_claim("m", [1e-2, 2e-3, 5e-4]).verdict == verdicts.NOT_REPRODUCED


def test_verdict_summary_counts_each_label_per_chapter_in_book_order():
    from oodlib import verdicts
    from oodlib.report import in_book_order, verdict_summary

    rows = [{"chapter": "appendix_c_odin", "verdict": verdicts.NOT_TESTABLE, "item": "Table 2: T=1000"},
            {"chapter": "section3_1_imagenet", "verdict": verdicts.REPRODUCED, "item": "Table 1: CT"},
            {"chapter": "section3_1_imagenet", "verdict": verdicts.NOT_REPRODUCED, "item": "MAPE claim"},
            {"chapter": "section3_1_imagenet", "verdict": None, "item": "a comparison"}]
    assert [r["chapter"] for r in in_book_order(rows)][0] == "section3_1_imagenet"
    summary = verdict_summary(rows)
    assert list(summary["chapter"]) == ["Section 3.1", "Appendix C", "all"]
    assert list(summary["judged"]) == [2, 1, 3]
    assert summary.iloc[-1][verdicts.NOT_TESTABLE] == 1 and summary.iloc[0][verdicts.REPRODUCED] == 1
    assert list(summary["reproduced claims"]) == ["Table 1: CT", "—", ""]


def test_counts_are_printed_as_integers_and_measurements_with_fixed_digits():
    from oodlib.report import format_number

    assert format_number(3) == "3" and format_number(np.int64(12)) == "12"
    assert format_number(3.0) == "3.000" and format_number(0.5, 2) == "0.50" and format_number(None) == "—"
    assert format_number(1.5e-5) == "1.50e-05" and format_number(float("nan")) == "n/a"
    assert format_number(-1187840.0) == "-1,187,840" == format_number(-1187840)
    assert format_number(4531.976) == "4531.976"


def test_a_mape_is_printed_as_a_percentage_everywhere():
    from oodlib.report import format_number, format_percent, markdown_table, names_mape

    assert format_percent(0.000143) == "0.0143%" and format_percent(0.5) == "50.0%" and format_percent(1e-3) == "0.100%"
    assert format_percent(0.014) == "1.40%" and format_percent(10.6) == "1060%" and format_percent(0.1, False) == "10%"
    assert format_number(0.000143, percent=True) == "0.0143%" and format_number(None, percent=True) == "—"
    assert [names_mape(s) for s in ("median MAPE of z", "mape_main", "MAPE", "fraction MAPE < 0.1%", "n_mape",
                                    "mape_fraction_0", "AUROC", "mapes")] == [True] * 3 + [False] * 5
    text = markdown_table(["start", "median MAPE", "AUROC"], [["ct", 0.000143, 0.5]], caption="c", name="t").data
    assert "  - 0.0143%" in text and "  - 0.500" in text
    text = markdown_table(["layer", "conv1"], [["x", 0.25]], caption="c", name="t", percent=["conv1"]).data
    assert "  - 25.0%" in text
    assert ":class: long-text" not in text
    assert ":class: long-text" in markdown_table(["item", "note"], [["a", "b"]], caption="c", name="t",
                                                 long_text=True).data
    with pytest.raises(ValueError, match="conv9"):
        markdown_table(["layer", "conv1"], [["x", 0.25]], caption="c", name="t", percent=["conv9"])


def test_results_keep_integers_and_show_mape_rows_as_percentages(tmp_path):
    from oodlib.report import Results

    results = Results()
    results.add("Appendix H.2: first p", "power p", np.int64(2), paper=6)
    results.add("Section 2.1: N = 5", "median MAPE", 0.000143)
    saved = json.loads(results.save(tmp_path / "rows.json").read_text())
    assert saved[0]["measured"] == 2 and isinstance(saved[0]["measured"], int) and saved[0]["paper"] == 6
    text = results.table("c", "t").data
    assert "  - 2\n" in text and "  - 0.0143%" in text and "0.000143" not in text
    from oodlib.report import format_measurement

    assert format_measurement(0.000143, "median MAPE of z") == "0.0143%" and format_measurement(0.5, "AUROC") == "0.500"


def test_a_glued_mape_is_its_percentage_text(monkeypatch):
    import myst_nb

    from oodlib import report

    glued = {}
    monkeypatch.setattr(myst_nb, "glue", lambda key, value, display: glued.__setitem__(key, value))
    assert report.glue_value("mape_main", np.float32(0.5)) == 0.5
    report.glue_value("n_mape", 24)
    report.glue_value("auroc", 0.25)
    assert glued == {"mape_main": "50.0%", "n_mape": 24, "auroc": 0.25}


def test_a_row_that_judges_nothing_is_saved_without_the_judging_fields(tmp_path):
    from oodlib.report import Results

    results = Results()
    results.add("plain", "metric", 1.0)
    results.add_attack("judged", attacked=0.5, clean=0.9, paper=0.5)
    saved = json.loads(results.save(tmp_path / "rows.json").read_text())
    assert set(saved[0]) == {"item", "metric", "measured", "paper", "note"}
    assert saved[1]["verdict"] == "reproduced" and saved[1]["clean"] == 0.9


def test_chapter_labels_follow_the_papers_numbering():
    from oodlib.report import chapter_label

    assert chapter_label("section3_1_imagenet") == "Section 3.1"
    assert chapter_label("section2_2_null_space") == "Section 2.2"
    assert chapter_label("section1_introduction") == "Section 1"
    assert chapter_label("appendix_c_odin") == "Appendix C"
    assert chapter_label("beyond_defenses") == "defenses"
