"""What a notebook reports: results rows (the paper's number beside ours), numbered tables, glued values and
figures, and the banner that states the page's profile and parameters.

Rows are written by :meth:`Results.save` to the file the runner names in ``$OODLIB_ROWS``; the runner adds the
provenance (profile, effective parameters, run time) and writes ``results/<profile>/<notebook>.json``.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from . import metrics, verdicts

if TYPE_CHECKING:
    import pandas as pd
    from IPython.display import Markdown

ROWS_ENV = "OODLIB_ROWS"
PAPER_VALUES_FILE = Path(__file__).with_name("paper_values.csv")
"""The paper's reference values, one claim a row: ``chapter, claim, source, quantity, value, convention``."""


@dataclass
class Row:
    """One number the chapter compares with the paper. ``item`` names the paper's own numbering
    ("Table 1: ResNet-18, CT start"); ``paper`` is None where the paper gives no number.

    A row that judges one of the paper's claims (:meth:`Results.add_attack`, :meth:`Results.add_mape_claim`) also
    carries its evidence and the verdict of :mod:`oodlib.verdicts`: ``clean`` (the detector's clean AUROC against
    the same, unattacked start images), ``clean_natural`` (its clean AUROC against the natural-image OOD set),
    ``id_like`` (the attacked images became in-distribution-like, :func:`oodlib.verdicts.ood_check`),
    ``verdict`` (:data:`~oodlib.verdicts.REPRODUCED`, :data:`~oodlib.verdicts.NOT_REPRODUCED` or
    :data:`~oodlib.verdicts.NOT_TESTABLE`) and ``reason``."""

    item: str
    metric: str
    measured: float | None
    paper: float | None = None
    note: str = ""
    clean: float | None = None
    clean_natural: float | None = None
    id_like: bool | None = None
    verdict: str | None = None
    reason: str = ""


def as_float(value: Any) -> float | None:
    """A plain Python float (NumPy/torch scalars converted), None for None; NaN stays NaN."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    return float(value)


def as_number(value: Any) -> int | float | None:
    """Like :func:`as_float`, but an integer (Python, NumPy or a torch integer scalar) stays an ``int``, so that
    a count or a power is saved and printed as one."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    return float(value)


class Results:
    """The rows of one chapter."""

    def __init__(self) -> None:
        self.rows: list[Row] = []

    def add(self, item: str, metric: str, measured: Any, paper: Any = None, note: str = "") -> Row:
        row = Row(item, metric, as_number(measured), as_number(paper), note)
        self.rows.append(row)
        return row

    def add_attack(self, item: str, *, attacked: Any, clean: Any, clean_natural: Any = None, paper: Any = None,
                   id_like: bool | None = None, clean_offered: Sequence[Any] = (), note: str = "",
                   metric: str = "AUROC under attack", judge: bool = True) -> Row:
        """A row for an AUROC under attack, with its clean companions (issue: clean beside attacked, everywhere).

        ``attacked`` and ``clean`` are the detector's AUROC (ID positive, in-scores) of the ID images against the
        same start images after and before the attack (same detector, model and images); ``clean_natural`` its
        clean AUROC against the natural-image OOD set. Where ``paper`` is given, the row carries the verdict of
        :func:`oodlib.verdicts.auroc_verdict` (``clean_offered``: the clean AUROCs of the other starts this
        chapter offers; ``id_like``: :attr:`oodlib.verdicts.OODCheck.id_like` of the attacked images, None when
        not measured). ``judge=False`` stores the paper's value for comparison but no verdict: for a page that
        sets a claim beside others (the leaderboard) while the claim's own chapter judges it, so that the scorecard
        counts each claim once.

        Raises
        ------
        ValueError
            If ``paper`` is given and ``attacked`` or ``clean`` is not a finite number.
        """
        row = self.add(item, metric, attacked, paper, note)
        row.clean, row.clean_natural = as_float(clean), as_float(clean_natural)
        row.id_like = None if id_like is None else bool(id_like)
        if row.paper is not None and judge:
            verdict = verdicts.auroc_verdict(row.paper, row.clean, row.measured, id_like=bool(id_like),
                                    clean_offered=[as_float(c) for c in clean_offered])
            row.verdict, row.reason = verdict.label, verdict.reason
        return row

    def add_mape_claim(self, item: str, mape_values: Any, note: str = "") -> Row:
        """A row for Section 3.1's "most MAPE values are less than 0.1%": the fraction of pairs below 0.1%
        (measured; the paper prints no number, so ``paper`` stays None and the note quotes the claim and the rule's
        :data:`oodlib.verdicts.MAPE_MAJORITY`) and the verdict of :func:`oodlib.verdicts.mape_verdict`.

        Raises
        ------
        ValueError
            If ``mape_values`` is empty or holds a non-finite value.
        """
        verdict = verdicts.mape_verdict(mape_values)
        values = metrics.as_float64_array(mape_values, "mape_values")
        fraction = metrics.mape_fraction_below(values, verdicts.MAPE_THRESHOLD)
        claim = (f"paper: 'most MAPE values are less than 0.1%' (the rule: at least {verdicts.MAPE_MAJORITY:.0%} "
                 "of the pairs)")
        row = self.add(item, f"fraction of pairs with MAPE < {verdicts.MAPE_THRESHOLD:.1%}", fraction, None,
                       "; ".join(filter(None, (claim, note))))
        row.verdict, row.reason = verdict.label, verdict.reason
        return row

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the rows as JSON to ``path``, ``$OODLIB_ROWS`` (set by the runner), or
        ``results/interactive/rows.json`` when run by hand."""
        target = Path(path or os.environ.get(ROWS_ENV) or Path("results") / "interactive" / "rows.json")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps([_jsonable(_row_record(r)) for r in self.rows], indent=2))
        return target

    def add_table(self, df: "pd.DataFrame", *, item: str, metric: str | Sequence[str], measured: str | Sequence[str],
                  paper: str | None = None, note: str | None = None) -> list[Row]:
        """Rows from the tidy table ``df`` (index levels count as columns): for each of its rows, one results row
        per ``(metric, measured)`` pair (a single name, or two sequences of equal length: the row's metrics side
        by side). ``item`` and ``metric`` are templates filled with the row's columns (``"Table 5: {ID set} vs
        OOD"``, format specs allowed); ``measured``, ``paper`` and ``note`` name columns. A missing paper value
        (None or NaN) is stored as None.

        Raises
        ------
        KeyError
            If a template or a named column refers to a column ``df`` does not have.
        ValueError
            If ``metric`` and ``measured`` differ in length.
        """
        metrics = [metric] if isinstance(metric, str) else list(metric)
        columns = [measured] if isinstance(measured, str) else list(measured)
        if len(metrics) != len(columns):
            raise ValueError(f"{len(metrics)} metrics for {len(columns)} measured columns")
        added = []
        for r in _records(df):
            for m, column in zip(metrics, columns):
                added.append(self.add(item.format_map(r), m.format_map(r), r[column],
                                      paper=r[paper] if paper is not None else None,
                                      note=r[note] if note is not None else ""))
        return added

    def table(self, caption: str, name: str, digits: int = 3) -> "Markdown":
        """The rows as a numbered MyST table (paper beside measured; with the clean AUROCs and the verdict when a
        row judges a claim)."""
        def value(r: Row, v: Any) -> str:
            return format_measurement(v, r.metric, digits)

        if not any(r.verdict or r.clean is not None for r in self.rows):
            body = [[r.item, r.metric, value(r, r.paper), value(r, r.measured), r.note] for r in self.rows]
            return markdown_table(["item", "metric", "paper", "measured", "note"], body, caption=caption, name=name,
                                  long_text=True)
        body = [[r.item, r.metric, value(r, r.paper), format_number(r.clean, digits),
                 format_number(r.clean_natural, digits), value(r, r.measured), r.verdict or "—", r.note]
                for r in self.rows]
        return markdown_table(["item", "metric", "paper", "clean (starts)", "clean (natural OOD)", "measured",
                               "verdict", "note"], body, caption=caption, name=name, long_text=True)


JUDGING_FIELDS = ("clean", "clean_natural", "id_like", "verdict", "reason")
"""The fields of a :class:`Row` that only a row judging a claim fills; a row that judges nothing is saved
without them (its record is the same as before these fields existed)."""


def _row_record(row: Row) -> dict:
    record = asdict(row)
    if all(record[f] in (None, "") for f in JUDGING_FIELDS):
        for f in JUDGING_FIELDS:
            del record[f]
    return record


def _jsonable(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


# ------------------------------------------------------------------------------------------ number formats
# One policy for every number a page shows, in tables, glued prose and figures:
# * a count (an integer) is printed as an integer;
# * a MAPE (Section 3's mean absolute percentage error, stored as a fraction) is printed as a percentage with
#   three significant digits (trailing zeros kept), as the paper states it ("less than 0.1%"): 0.000143 ->
#   "0.0143%", 0.014 -> "1.40%";
# * any other number with three decimals (AUROCs as in the paper's tables), in scientific notation only below
#   the last decimal, from 10^5 on a whole number with thousands separators; a configuration (the index of a tidy
#   table: a budget ε, a temperature) with three significant digits (:.3g);
# * a missing value is "—", a NaN "n/a".
# Tables (markdown_table, table, Results.table) apply it by column header or metric, glue_value by key, and
# oodlib.plots writes MAPE in figures with format_percent.
PERCENT_DIGITS = 3
"""Significant digits of a percentage (:func:`format_percent`)."""


def names_mape(label: str) -> bool:
    """Whether a table header, results metric or glue key names a MAPE value: one of its words is "MAPE" (any
    case; words split at anything but letters and digits) and none is "fraction" or "n" (a share or a count of
    pairs). ``"median MAPE of z"``, ``"mape_main"`` → True; ``"fraction MAPE < 0.1%"``, ``"n_mape"`` → False."""
    words = set(re.findall(r"[a-z0-9]+", label.lower()))
    return "mape" in words and not words & {"fraction", "n"}


def format_percent(fraction: float, keep_zeros: bool = True) -> str:
    """A fraction as a percentage with :data:`PERCENT_DIGITS` significant digits, trailing zeros kept so that
    neighbouring values read alike: 0.000143 → ``"0.0143%"``, 0.014 → ``"1.40%"``, 0.5 → ``"50.0%"``; from 100%
    on as a whole number (10.6 → ``"1060%"``). ``keep_zeros=False`` drops trailing zeros, for axis ticks
    (``"1%"``, ``"10%"``)."""
    percent = 100 * float(fraction)
    if abs(percent) >= 10 ** PERCENT_DIGITS / 10:
        return f"{percent:.0f}%"
    text = f"{percent:#.{PERCENT_DIGITS}g}" if keep_zeros else f"{percent:.{PERCENT_DIGITS}g}"
    return f"{text.rstrip('.')}%"


def format_parameter(value: Any) -> Any:
    """A setting as the book prints it: a float with three significant digits (``1.0`` → "1", ``5.0518`` → "5.05",
    ``0.001`` → "0.001"), from 1000 on as a whole number; anything else unchanged."""
    if not isinstance(value, float) or math.isnan(value):
        return value
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def format_number(value: Any, digits: int = 3, percent: bool = False) -> str:
    """A value as the book prints it (the policy above): None → "—", NaN → "n/a", a string unchanged, an integer
    as an integer, a float with ``digits`` decimals (scientific below ``10**-digits``), a number from 10^5 on as a
    whole number with thousands separators (``-1,187,840``), or with ``percent`` as :func:`format_percent`."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{value:,}" if abs(value) >= 1e5 else str(value)  # a count is printed as one
    value = float(value)
    if math.isnan(value):
        return "n/a"
    if percent:
        return format_percent(value)
    if abs(value) >= 1e5:
        return f"{value:,.0f}"
    if value != 0 and abs(value) < 10 ** -digits:
        return f"{value:.2e}"
    return f"{value:.{digits}f}"


def format_measurement(value: Any, metric: str, digits: int = 3) -> str:
    """A results row's value (measured or the paper's) as the book prints it: :func:`format_number`, as a
    percentage when ``metric`` names a MAPE (:func:`names_mape`)."""
    return format_number(value, digits, percent=names_mape(metric))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, caption: str, name: str,
                   digits: int = 3, percent: Sequence[str] | None = None, long_text: bool = False) -> "Markdown":
    """A MyST ``list-table`` with ``:name:`` — numbered as a *Table* and cross-referencable with
    ``{numref}`name```. Numbers follow :func:`format_number` with ``digits`` decimals; the columns named in
    ``percent`` (default: those whose header names a MAPE, :func:`names_mape`) as percentages. ``long_text``
    marks a table whose first and last columns hold running text (an item and a note): there a long word may break
    (CSS class ``long-text``, ``book/_static/oodlib.css``) rather than widen the table beyond the page.

    Raises
    ------
    ValueError
        If ``percent`` names a column that ``header`` does not have.
    """
    from IPython.display import Markdown

    percent = [h for h in header if names_mape(h)] if percent is None else list(percent)
    if unknown := [c for c in percent if c not in header]:
        raise ValueError(f"percent names columns the table does not have: {unknown}")
    as_percent = [h in percent for h in header]
    lines = [f"```{{list-table}} {caption}", ":header-rows: 1", f":name: {name}",
             *([":class: long-text"] if long_text else []), ""]
    for i, row in enumerate([list(header), *[list(r) for r in rows]]):
        cells = [c if isinstance(c, str) else format_number(c, digits, percent=j < len(header) and as_percent[j])
                 for j, c in enumerate(row)]
        lines.append(f"* - {cells[0] if cells[0] != '' else ' '}")
        lines += [f"  - {c if c != '' else ' '}" for c in cells[1:]]
    lines.append("```")
    return Markdown("\n".join(lines))


def _records(df: "pd.DataFrame") -> list[dict[str, Any]]:
    """The rows of ``df`` as dicts, its named index levels first; NaN becomes None."""
    flat = df.reset_index() if any(n is not None for n in df.index.names) else df
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in flat.to_dict("records")]


def table(df: "pd.DataFrame", *, caption: str, name: str, columns: Sequence[str] | None = None,
          digits: int = 3, percent: Sequence[str] | None = None, long_text: bool = False) -> "Markdown":
    """A tidy table (one row per configuration; named index levels shown as the first columns) as a numbered
    MyST table (:func:`markdown_table`), with ``columns`` in that order (default: all). Missing values (None, NaN)
    are shown as "—"; ``percent`` and ``long_text`` as in :func:`markdown_table`. The configuration (the named
    index levels: a budget ε, a temperature) is printed by :func:`format_parameter` ("1", "5.05"), the measurements
    with ``digits`` decimals.

    Raises
    ------
    KeyError
        If ``columns`` names a column ``df`` does not have.
    """
    records = _records(df)
    levels = {n for n in df.index.names if n is not None}
    records = [{k: format_parameter(v) if k in levels else v for k, v in r.items()} for r in records]
    header = list(columns) if columns is not None else list(records[0]) if records else list(df.columns)
    return markdown_table(header, [[r[c] for c in header] for r in records], caption=caption, name=name,
                          digits=digits, percent=percent, long_text=long_text)


def glue_value(key: str, value: Any) -> Any:
    """Glue a value for ``{glue:text}`` use, without displaying it, and return it (NumPy/torch scalars as Python
    floats). A non-integer number under a key that names a MAPE (:func:`names_mape`: ``"mape_main"``) is glued as
    its percentage text (:func:`format_percent`, the book's number policy), so the prose cites it without a
    format spec: ``{glue:text}`mape_main```."""
    from myst_nb import glue

    if isinstance(value, (np.generic, np.ndarray)) or hasattr(value, "item"):
        value = as_float(value)
    shown = value
    if names_mape(key) and isinstance(value, float):
        shown = format_number(value, percent=True)
    glue(key, shown, display=False)
    return value


def glue_values(**values: Any) -> None:
    """:func:`glue_value` for each keyword: ``glue_values(steps=steps, n_ood=n_ood)`` glues ``steps`` and
    ``n_ood`` (the keyword is the glue key)."""
    for key, value in values.items():
        glue_value(key, value)


def glue_figure(key: str, fig) -> None:
    """Glue a matplotlib figure for ``{glue:figure}`` and close it (so it is not shown twice)."""
    import matplotlib.pyplot as plt
    from myst_nb import glue

    glue(key, fig, display=False)
    plt.close(fig)


def profile_banner(profile: str, params: dict[str, Any], departures: str = "") -> "Markdown":
    """A note at the top of a page: which profile built it, with which parameters, and how it departs from the
    paper's setting."""
    from IPython.display import Markdown

    shown = ", ".join(f"`{k}={v!r}`" for k, v in params.items() if k != "profile")
    text = [f":::{{note}} Built with the **{profile}** profile.",
            f"Parameters: {shown}." if shown else "This chapter has no parameters."]
    if departures:
        text.append(departures)
    text.append(":::")
    return Markdown("\n\n".join(text))


def chapter_banner(chapter: str, namespace: dict[str, Any], departures: str = "") -> "Markdown":
    """:func:`profile_banner` with every parameter the chapter declares (its parameters cell, in declaration
    order), valued as in ``namespace`` (the chapter's ``globals()`` after ``check_chapter``): the banner cannot
    forget a parameter or repeat the parameters cell by hand.

    Raises
    ------
    KeyError
        If ``namespace`` lacks a declared parameter (``check_chapter`` has not run).
    """
    from .params import REPO_ROOT, chapter_schema

    path = Path.cwd() / f"{chapter}.py"
    path = path if path.exists() else REPO_ROOT / "notebooks" / f"{chapter}.py"
    return profile_banner(namespace["profile"], {name: namespace[name] for name in chapter_schema(path)},
                          departures)


def collect_results(profile: str, results_dir: str | os.PathLike | None = None, exclude: tuple[str, ...] = ()
                    ) -> list[dict[str, Any]]:
    """Every row of every chapter's results file ``<results>/<profile>/*.json`` (the reproduction scorecard),
    each with its chapter's name, in file-name order. ``<results>`` is ``results_dir``, else the folder the
    runner writes to (``$OODLIB_RESULTS``), else ``<repo>/results``."""
    from .params import REPO_ROOT

    root = Path(results_dir) if results_dir is not None else Path(os.environ.get("OODLIB_RESULTS",
                                                                               REPO_ROOT / "results"))
    folder = root / profile
    rows = []
    for path in sorted(folder.glob("*.json")):
        if path.stem in exclude:
            continue
        record = json.loads(path.read_text())
        rows += [{"chapter": record.get("notebook", path.stem), **row} for row in record.get("rows", [])]
    return rows


def relative_difference(measured: float | None, paper: float | None) -> float | None:
    """(measured − paper) / |paper|, None where either is missing or the paper's value is 0."""
    if measured is None or paper is None or paper == 0 or math.isnan(measured):
        return None
    return (measured - paper) / abs(paper)


@dataclass(frozen=True)
class PaperValue:
    """One number the paper (or a seed paper of an extension chapter) reports: ``source`` is its table, figure or
    section, ``quantity`` what it measures, ``convention`` the metric convention it is stated in."""

    chapter: str
    claim: str
    source: str
    quantity: str
    value: float
    convention: str


@functools.lru_cache(maxsize=1)
def paper_values() -> dict[tuple[str, str], PaperValue]:
    """Every reference value of :data:`PAPER_VALUES_FILE`, keyed by ``(chapter, claim)``; values are parsed with
    Python's ``float`` (exact round trip of the written decimal)."""
    with PAPER_VALUES_FILE.open(newline="", encoding="utf-8") as handle:
        records = [PaperValue(**{**r, "value": float(r["value"])}) for r in csv.DictReader(handle)]
    table = {(r.chapter, r.claim): r for r in records}
    if len(table) != len(records):
        raise ValueError(f"{PAPER_VALUES_FILE.name}: a (chapter, claim) pair appears twice")
    return table


def paper_values_frame() -> "pd.DataFrame":
    """:func:`paper_values` as a tidy table (columns ``chapter``, ``claim``, ``source``, ``quantity``, ``value``,
    ``convention``; one row per claim, in file order) for :func:`table`."""
    import pandas as pd

    return pd.DataFrame([asdict(v) for v in paper_values().values()])


def paper_claim(chapter: str, claim: str) -> PaperValue:
    """The row of :data:`PAPER_VALUES_FILE` for ``claim`` of ``chapter`` (e.g. ``("appendix_e", "table5_auroc")``).

    Raises
    ------
    KeyError
        If the file has no such row; the message lists the chapter's claims.
    """
    table = paper_values()
    if (chapter, claim) not in table:
        known = sorted(c for ch, c in table if ch == chapter)
        raise KeyError(f"no paper value {claim!r} for chapter {chapter!r}; known: {known}")
    return table[chapter, claim]


def paper_value(chapter: str, claim: str, missing_ok: bool = False) -> float | None:
    """The paper's number for ``claim`` of ``chapter`` (a float; its source and convention in
    :func:`paper_claim`). Raises ``KeyError`` for an unknown claim, or returns None for one if ``missing_ok``
    (a configuration the paper did not run)."""
    if missing_ok and (chapter, claim) not in paper_values():
        return None
    return paper_claim(chapter, claim).value


def in_book_order(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` of :func:`collect_results` sorted by their chapter's place in the book's table of contents (the
    paper's order: Sections 1–4, then Appendices A–J, then the extension chapters), keeping each chapter's own
    row order; a chapter not in the table of contents goes last."""
    from .runner import book_notebooks

    place = {path.stem: i for i, path in enumerate(book_notebooks())}
    return sorted(rows, key=lambda r: place.get(r["chapter"], len(place)))


def chapter_label(stem: str) -> str:
    """A chapter's short name as the paper numbers it: ``"section3_1_imagenet"`` → ``"Section 3.1"``,
    ``"appendix_c_odin"`` → ``"Appendix C"``; an extension chapter keeps its name (``"beyond_defenses"`` →
    ``"defenses"``)."""
    parts = stem.split("_")
    if parts[0] == "section" or parts[0].startswith("section"):
        numbers = [p for p in [parts[0][len("section"):], *parts[1:]] if p.isdigit()]
        return "Section " + ".".join(numbers)
    if parts[0] == "appendix" and len(parts) > 1:
        return f"Appendix {parts[1].upper()}"
    return "_".join(parts[1:]) if parts[0] == "beyond" else stem


def verdict_summary(rows: Sequence[dict[str, Any]]) -> "pd.DataFrame":
    """Per chapter (book order), how many of its claims were judged, how many of them are each verdict of
    :mod:`oodlib.verdicts`, and which claims were reproduced (their items, "; "-separated; "—" for none): columns
    ``chapter``, ``judged``, one per verdict label and ``reproduced claims``; a last row ``all``."""
    import pandas as pd

    labels = [verdicts.REPRODUCED, verdicts.NOT_REPRODUCED, verdicts.NOT_TESTABLE]
    judged = [r for r in in_book_order(rows) if r.get("verdict")]
    chapters = list(dict.fromkeys(r["chapter"] for r in judged))

    def reproduced(chapter: str | None) -> str:
        items = [r["item"] for r in judged if r["verdict"] == verdicts.REPRODUCED and chapter in (None, r["chapter"])]
        return "; ".join(items) or "—"

    records = [{"chapter": chapter_label(c), "judged": sum(r["chapter"] == c for r in judged),
                **{v: sum(r["chapter"] == c and r["verdict"] == v for r in judged) for v in labels},
                "reproduced claims": reproduced(c)} for c in chapters]
    records.append({"chapter": "all", "judged": len(judged), **{v: sum(r["verdict"] == v for r in judged)
                                                                for v in labels}, "reproduced claims": ""})
    return pd.DataFrame(records, columns=["chapter", "judged", *labels, "reproduced claims"])
