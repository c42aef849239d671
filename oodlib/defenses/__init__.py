"""Robust OOD detectors from the source papers beyond Liang et al. Their training recipes are in
:mod:`oodlib.recipes` (``"aloe"``, ``"atom"``, ``"aoe"``); the detectors with their own score live here
(registered with :func:`oodlib.detectors.register_detector`):

- ALOE (Chen et al., arXiv 2003.09711): recipe :mod:`oodlib.recipes.aloe`; score: MSP.
- :mod:`~oodlib.defenses.atom` — ATOM (Chen et al., ECML-PKDD 2021): recipe :mod:`oodlib.recipes.atom`; detector
  ``"atom"``.
- AOE (Botschen et al., CVPR 2025 workshop): recipe :mod:`oodlib.recipes.aoe`; score: Energy.
- :mod:`~oodlib.defenses.bal` — BAL (Pei et al., ECCV 2022): detector ``"bal"`` (a conditional GAN over a frozen
  classifier's penultimate features, fitted by ``BAL.fit``).

:mod:`~oodlib.defenses.leaderboard` puts every detector under every threat model (the seeds' small-ball attacks
of :mod:`oodlib.attack.pgd` and Algorithm 1 of Liang et al.).

Importing this package registers the detectors. Like :mod:`oodlib.detectors`, its detector modules depend on the
models, the losses and the utilities only — never on the store, the training loop or the recipes.
"""

from . import atom, bal
from .atom import ATOM, extended_logits, ood_probability
from .bal import BAL

__all__ = ["ATOM", "BAL", "atom", "bal", "extended_logits", "ood_probability"]
