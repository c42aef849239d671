"""oodlib.report: the profile banner and the scorecard's collection of results files."""

import json

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
