"""Every chapter executes with the smoke profile, and the smoke book builds with warnings as errors.

This is what `make test` adds to the unit tests: the runner executes the stale notebooks of the smoke profile (in
parallel, two jobs), each chapter is one test item, then Jupyter Book renders the executed notebooks with `-W`.
"""

import dataclasses
import json
import math
import re

import pytest

from oodlib import report, runner, verdicts

NOTEBOOKS = runner.book_notebooks()
# pages that gather or list rather than measure: the parameter table and the scorecard
CHAPTERS_WITHOUT_MEASUREMENTS = {"appendix_a_parameters", "reproduction_scorecard"}


@pytest.mark.notebook
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_executes_with_the_smoke_profile(smoke_book, notebook):
    outcome = smoke_book[notebook.stem]
    assert outcome.status in ("executed", "cached"), f"{notebook.name} failed:\n{outcome.error}"
    record = json.loads(outcome.results.read_text())
    assert record["profile"] == "smoke" and record["parameters"]["profile"] == "smoke"
    if notebook.stem not in CHAPTERS_WITHOUT_MEASUREMENTS:
        assert record["rows"], f"{notebook.name} recorded no results row"
    for row in record["rows"]:
        fields = {field.name for field in dataclasses.fields(report.Row)}
        assert set(row) in (fields, fields - set(report.JUDGING_FIELDS)), f"{notebook.name}: {sorted(row)}"
        if row.get("verdict") == verdicts.REPRODUCED and row["clean"] is not None:  # an AUROC-under-attack claim
            assert row["clean"] >= verdicts.CLEAN_AUROC_MIN and not row["id_like"], f"{notebook.name}: {row}"
        if row["measured"] is not None:
            assert math.isfinite(row["measured"]), f"{notebook.name}: {row['item']} measured {row['measured']}"
        if row["paper"] is not None:  # a paper value is never left without a measurement or the reason for none
            assert row["measured"] is not None or row["note"], f"{notebook.name}: {row['item']} unmeasured"


def stray_outputs(executed: dict) -> list[str]:
    """The outputs of an executed notebook that a reader should not see: anything but a glued value or figure
    (myst-nb's ``scrapbook`` metadata), a displayed Markdown block (banner, tables) or an image — bare reprs
    (``Row(...)``, ``0.1715``, ``'none'``), printed text and warnings."""
    stray = []
    for index, cell in enumerate(executed["cells"]):
        for output in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            data = output.get("data", {})
            if output["output_type"] in ("display_data", "execute_result") and (
                    "scrapbook" in output.get("metadata", {}) or "text/markdown" in data or "image/png" in data):
                continue
            text = "".join(output.get("text", "")) or "".join(data.get("text/plain", "")) or output.get("ename", "")
            stray.append(f"cell {index}: {output['output_type']}: {text[:80]!r}")
    return stray


def test_stray_outputs_are_found():
    executed = {"cells": [{"cell_type": "code", "outputs": [
        {"output_type": "execute_result", "data": {"text/plain": "0.17149999999999999"}, "metadata": {}},
        {"output_type": "display_data", "data": {"text/markdown": "note"}, "metadata": {}},
        {"output_type": "display_data", "data": {"image/png": ""}, "metadata": {"scrapbook": {"name": "fig"}}},
        {"output_type": "stream", "name": "stderr", "text": "UserWarning: ..."}]}]}
    assert [s.split(":")[1].strip() for s in stray_outputs(executed)] == ["execute_result", "stream"]


@pytest.mark.notebook
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_shows_no_stray_output(smoke_book, notebook):
    outcome = smoke_book[notebook.stem]
    assert outcome.status in ("executed", "cached"), f"{notebook.name} failed"
    assert stray_outputs(json.loads(outcome.output.read_text())) == []


@pytest.mark.book
def test_smoke_book_builds_with_warnings_as_errors(smoke_html):
    html = smoke_html
    assert (html / "index.html").exists()
    for notebook in NOTEBOOKS:
        page = (html / "notebooks" / f"{notebook.stem}.html").read_text()
        assert "<Figure size" not in page, f"{notebook.stem}: a glued figure rendered as text"
        assert "Built with the <strong>smoke</strong> profile" in page
        external = re.findall(r'<(?:script|img|iframe)[^>]+src="(https?://[^"]+)"|<link[^>]+href="(https?://[^"]+)"',
                              page)
        assert not external, f"{notebook.stem} loads from the network: {external}"
