"""One ε sweep for every chapter: Algorithm 1 run once per L2 budget ε, summarised as a tidy table.

Section 2.1 ("The budget ε"), Section 4 (CCU's adaptive attack) and the defense chapters ask the same question —
how does the match (MAPE, Section 3) and the detector's verdict change with ε? — and show the same table: one row
per ε with its root-mean-square change per input value, the attack's median MAPE and the fraction of MAPE below
0.1% (the paper's headline threshold), to which a chapter adds its detector's columns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
from torch import Tensor

from . import _checks, experiments, metrics
from .attack import REPRODUCTION_ROUTINE, AttackResult, ood_attack

EPS = "ε (L2)"
"""Name of the index of :meth:`Sweep.table`."""

RMS = "RMS change per pixel"
"""Column of :meth:`Sweep.table`: ε / √(values per image), :func:`oodlib.experiments.rms_per_value`."""


@dataclass
class Sweep:
    """The attacks of one sweep: ``runs[ε]`` is Algorithm 1's result at budget ε (ε in L2 pixel units, images with
    ``n_values`` values each)."""

    runs: dict[float, AttackResult]
    n_values: int

    def table(self, **columns: Sequence[float]) -> pd.DataFrame:
        """One row per ε (index :data:`EPS`), columns :data:`RMS`, ``median MAPE``, ``fraction MAPE < 0.1%`` and
        then each of ``columns`` (name → one value per ε, in sweep order; pass names with spaces as
        ``**{"CCU AUROC": values}``).

        Raises
        ------
        ValueError
            If a column has not one value per ε.
        """
        for name, values in columns.items():
            if len(values) != len(self.runs):
                raise ValueError(f"column {name!r} has {len(values)} values for {len(self.runs)} budgets")
        rows = [{EPS: e, RMS: experiments.rms_per_value(e, self.n_values), "median MAPE": float(run.mape.median()),
                 "fraction MAPE < 0.1%": metrics.mape_fraction_below(run.mape)} for e, run in self.runs.items()]
        frame = pd.DataFrame(rows).set_index(EPS)
        for name, values in columns.items():
            frame[name] = [float(v) for v in values]
        return frame


def eps_sweep(f: Callable[[Tensor], Tensor], x_in: Tensor, x_start: Tensor, budgets: Sequence[float], *,
              steps: int, seed: int = 0, **attack_options) -> Sweep:
    """Algorithm 1 (:func:`oodlib.attack.ood_attack`) on ``f`` from ``x_start`` (N, C, H, W) towards the codes of
    ``x_in`` (N, C, H, W), once per L2 budget ε of ``budgets`` (Section 2.1; pixel units in [0, 1]), each with the
    same ``steps``, ``seed`` and ``attack_options``. ``f`` is what ``ood_attack`` takes: a module, a bound method of
    one, or a detector with ``target=`` one of its ``targets`` in ``attack_options``. The routine is
    :data:`oodlib.attack.REPRODUCTION_ROUTINE` unless ``attack_options`` names another.

    Raises
    ------
    ValueError
        If ``budgets`` is empty or holds a value twice, or a budget is not positive.
    """
    if not budgets or len(set(budgets)) != len(budgets):
        raise ValueError(f"budgets must be nonempty and distinct, got {list(budgets)}")
    for e in budgets:
        _checks.number(e, "budget", positive=True)
    attack_options.setdefault("routine", REPRODUCTION_ROUTINE)
    runs = {e: ood_attack(f, x_in, x_start, eps=e, steps=steps, seed=seed, **attack_options) for e in budgets}
    return Sweep(runs, x_in[0].numel())
