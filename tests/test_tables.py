"""Tidy tables, the paper's reference values and the chapters' use of them (issue 12, item 5)."""

import ast
import math
from pathlib import Path

import pandas as pd
import pytest

from oodlib import defense_study, report
from oodlib.report import Results, paper_claim, paper_value

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.py"))


def test_paper_value_reads_the_data_file():
    assert paper_value("appendix_g", "table6_cifar10") == 0.576
    claim = paper_claim("appendix_e", "table5_auroc")
    assert (claim.source, claim.value) == ("Table 5", 0.5)
    assert "AUROC" in claim.convention


def test_unknown_claim_names_the_known_ones():
    with pytest.raises(KeyError, match="table6_svhn"):
        paper_value("appendix_g", "table6_imagenet")


def test_every_paper_value_is_finite_and_sourced():
    values = report.paper_values()
    assert len(values) >= 20
    for (chapter, claim), row in values.items():
        assert math.isfinite(row.value), (chapter, claim)
        assert row.source and row.quantity and row.convention, (chapter, claim)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_paper_number_typed_into_a_chapter(path):
    """`results.add(..., paper=<number>)` and dicts of paper numbers belong in `oodlib/paper_values.csv`."""
    tree = ast.parse(path.read_text())
    typed = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.keyword) and node.arg == "paper"
             and isinstance(node.value, ast.Constant) and isinstance(node.value.value, (int, float))]
    typed += [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Assign)
              for target in node.targets if isinstance(target, ast.Name) and target.id.lower().startswith("paper")
              and _numbers(node.value)]
    assert not typed, f"{path.name}: paper values typed in at lines {typed}"


def _numbers(node: ast.AST) -> bool:
    """Whether ``node`` holds a float literal (the paper's numbers; image sizes are integer products)."""
    return any(isinstance(n, ast.Constant) and isinstance(n.value, float) for n in ast.walk(node))


def _tidy() -> pd.DataFrame:
    return pd.DataFrame([{"ID set": "mnist5k", "model": "OE", "AUROC": 0.25, "paper": 0.5},
                         {"ID set": "digits", "model": "OE", "AUROC": 0.75, "paper": None}]).set_index(["ID set"])


def test_add_table_fills_item_templates_from_index_and_columns():
    results = Results()
    rows = results.add_table(_tidy(), item="Table 5: {ID set}, {model}", metric="AUROC", measured="AUROC",
                             paper="paper")
    assert [(r.item, r.measured, r.paper) for r in rows] == [("Table 5: mnist5k, OE", 0.25, 0.5),
                                                             ("Table 5: digits, OE", 0.75, None)]
    assert results.rows == rows


def test_add_table_refuses_an_unknown_column():
    with pytest.raises(KeyError):
        Results().add_table(_tidy(), item="{dataset}", metric="AUROC", measured="AUROC")


def test_table_renders_chosen_columns_and_marks_missing_values():
    text = report.table(_tidy(), columns=["ID set", "paper"], caption="c", name="tbl-x").data
    assert "  - paper" in text and "AUROC" not in text.split(":name:")[1]
    assert text.count("—") == 1 and "0.500" in text and "digits" in text


def test_defense_study_refuses_mismatched_datasets():
    from oodlib.store import ModelSpec

    spec = ModelSpec.make("small_cnn", "digits", epochs=1, seed=0)
    with pytest.raises(ValueError, match="different datasets"):
        defense_study.prepare({"digits": spec}, {"mnist5k": spec}, "defended", n_samples=2, n_ood=2,
                              start="noise", eps_paper=10.0, eps_paper_large=20.0, paper_image_values=3072)


def test_add_table_puts_several_metrics_of_a_row_side_by_side():
    results = Results()
    results.add_table(_tidy(), item="{ID set}", metric=["AUROC", "paper AUROC"], measured=["AUROC", "paper"])
    assert [(r.item, r.metric, r.measured) for r in results.rows] == [
        ("mnist5k", "AUROC", 0.25), ("mnist5k", "paper AUROC", 0.5),
        ("digits", "AUROC", 0.75), ("digits", "paper AUROC", None)]
    with pytest.raises(ValueError, match="2 metrics for 1"):
        results.add_table(_tidy(), item="{ID set}", metric=["a", "b"], measured=["AUROC"])


class _Run:
    def __init__(self, mape):
        import torch

        self.mape = torch.tensor(mape)


def test_sweep_table_has_one_row_per_budget_and_the_chapter_columns():
    from oodlib import sweeps

    sweep = sweeps.Sweep({1.0: _Run([1e-4, 1e-2, 1e-1]), 4.0: _Run([1e-5, 1e-5, 1e-2])}, n_values=16)
    frame = sweep.table(**{"AUROC attacked": [0.9, 0.6]})
    assert list(frame.index) == [1.0, 4.0] and frame.index.name == sweeps.EPS
    assert frame[sweeps.RMS].tolist() == [0.25, 1.0]
    assert frame["fraction MAPE < 0.1%"].tolist() == pytest.approx([1 / 3, 2 / 3])
    assert frame["median MAPE"].tolist() == pytest.approx([1e-2, 1e-5])
    assert frame["AUROC attacked"].tolist() == [0.9, 0.6]
    with pytest.raises(ValueError, match="1 values for 2 budgets"):
        sweep.table(**{"AUROC attacked": [0.9]})


@pytest.mark.parametrize("budgets", [[], [1.0, 1.0], [1.0, -2.0]])
def test_eps_sweep_refuses_empty_repeated_or_negative_budgets(budgets):
    import torch

    from oodlib import sweeps

    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError):
        sweeps.eps_sweep(torch.nn.Flatten(), x, x, budgets, steps=1)


def test_glow_study_names_the_missing_chapter_parameters():
    from oodlib import glow_study

    with pytest.raises(KeyError, match="flow_depth"):
        glow_study.prepare({name: 1 for name in glow_study.CHAPTER_PARAMETERS if name != "flow_depth"})


def test_the_paper_values_file_is_a_chapter_input():
    """Editing a reference value must re-execute the chapters (the runner's input hash covers it)."""
    from oodlib import runner

    assert report.PAPER_VALUES_FILE in runner.library_files()


def test_chapter_banner_states_every_declared_parameter():
    from oodlib import params

    chapter = "appendix_e_outlier_exposure"
    namespace = params.declared_parameters(params.REPO_ROOT / "notebooks" / f"{chapter}.py")
    text = report.chapter_banner(chapter, {**namespace, "steps": 7}).data
    assert "`steps=7`" in text and "`eps_paper_large=20.0`" in text and "`seed=0`" in text
    assert "`profile=" not in text
    namespace.pop("n_ood")
    with pytest.raises(KeyError, match="n_ood"):
        report.chapter_banner(chapter, namespace)


def test_a_tidy_tables_configuration_is_printed_as_given_and_its_measurements_with_digits():
    frame = pd.DataFrame({"ε (L2)": [1.0, 5.0518148], "median MAPE": [0.000143, 0.5], "RMS": [0.1, 0.25]})
    text = report.table(frame.set_index("ε (L2)"), caption="c", name="tbl-x", digits=4).data
    assert "* - 1\n" in text and "* - 5.05\n" in text and "1.0000" not in text
    assert "  - 0.0143%" in text and "  - 0.1000" in text
