"""Robust OOD detectors from the source papers beyond Liang et al., each in its own module with its training
recipe (registered with :func:`oodlib.training.register_recipe`) and, where it has its own score, its detector
(registered with :func:`oodlib.detectors.register_detector`):

- :mod:`~oodlib.defenses.aloe` — ALOE (Chen et al., arXiv 2003.09711): recipe ``"aloe"``; score: MSP.
- :mod:`~oodlib.defenses.atom` — ATOM (Chen et al., ECML-PKDD 2021): recipe ``"atom"``; detector ``"atom"``.
- :mod:`~oodlib.defenses.aoe` — AOE (Botschen et al., CVPR 2025 workshop): recipe ``"aoe"``; score: Energy.
- :mod:`~oodlib.defenses.bal` — BAL (Pei et al., ECCV 2022): detector ``"bal"`` (a conditional GAN over a frozen
  classifier's penultimate features, fitted by ``BAL.fit``).

:mod:`~oodlib.defenses.leaderboard` puts every detector under every threat model (the seeds' small-ball attacks
of :mod:`oodlib.attack.pgd` and Algorithm 1 of Liang et al.).

Importing this package registers the recipes and detectors; none of its modules imports :mod:`oodlib.store` at
module level (the store imports the detectors).
"""

from . import aloe, aoe, atom, bal
from .atom import ATOM, extended_logits, ood_probability
from .bal import BAL

__all__ = ["ATOM", "BAL", "aloe", "aoe", "atom", "bal", "extended_logits", "ood_probability"]
