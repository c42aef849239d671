"""Static checks of the chapters' code (issue 12): notebooks stay thin and adapt nothing by hand.

Chapters attack a detector's named targets (``Detector.target``) and read in-scores; they build no adapter
(``lambda``, ``functools.partial``, ``nn.Sequential``) and negate no score by hand."""

import ast
import re

import pytest

from oodlib import runner

NOTEBOOKS = runner.book_notebooks()
SCORE_NAME = re.compile(r"(score|nll|log_px|likelihood)", re.IGNORECASE)


def _tree(notebook) -> ast.Module:
    import jupytext

    nb = jupytext.read(notebook)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code" and not c.source.lstrip().startswith("%"))
    return ast.parse(code)


def _name(node: ast.AST) -> str:
    return ast.unparse(node)


def adapters_and_negations(tree: ast.Module) -> list[str]:
    """Each lambda, functools.partial, nn.Sequential and unary minus applied to a score-like expression."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Lambda):
            found.append(f"lambda: {_name(node)[:60]}")
        elif isinstance(node, ast.Call) and _name(node.func).split(".")[-1] in ("partial", "Sequential"):
            found.append(f"{_name(node.func)}(...)")
        elif isinstance(node, ast.ImportFrom) and node.module == "functools" and any(a.name == "partial"
                                                                                       for a in node.names):
            found.append("from functools import partial")
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and SCORE_NAME.search(_name(node.operand)):
            found.append(f"negated score: {_name(node)[:60]}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("neg", "neg_")
              and SCORE_NAME.search(_name(node.func.value))):
            found.append(f"negated score: {_name(node)[:60]}")
    return found


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_builds_no_adapter_and_negates_no_score(notebook):
    assert adapters_and_negations(_tree(notebook)) == []


def test_the_check_finds_what_it_forbids():
    tree = ast.parse("f = lambda x: -det.score(x)\ng = functools.partial(h, a=1)\nm = nn.Sequential(d)\n"
                     "s = -scores\nt = nll.neg()\nu = -eps")
    found = adapters_and_negations(tree)
    assert len(found) == 6 and not any("eps" in f for f in found)


# ------------------------------------------------------------------------------- the number policy in the prose
GLUED_TEXT = re.compile(r"\{glue:text\}`([A-Za-z0-9_]+)(?::([^`]*))?`(%?)")


def formatted_mape_references(text: str) -> list[str]:
    """Each ``{glue:text}`` reference to a key that names a MAPE (:func:`oodlib.report.names_mape`) and that
    formats it again (a format spec, or a "%" typed after it): ``glue_value`` glues such a key as its percentage
    text (oodlib.report's number policy), so the prose cites it bare."""
    from oodlib.report import names_mape

    return [m.group(0) for m in GLUED_TEXT.finditer(text) if names_mape(m.group(1)) and (m.group(2) or m.group(3))]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_prose_cites_a_mape_as_the_glued_percentage(notebook):
    assert formatted_mape_references(notebook.read_text()) == []


def test_the_mape_check_finds_what_it_forbids():
    text = "{glue:text}`mape_main:.2e` {glue:text}`mape_pct`% {glue:text}`mape_main` {glue:text}`n_mape:d` " \
           "{glue:text}`auroc:.3f`"
    assert formatted_mape_references(text) == ["{glue:text}`mape_main:.2e`", "{glue:text}`mape_pct`%"]
