"""Attacks: Algorithm 1 of Liang et al. (the OOD attack on an encoder, :mod:`oodlib.attack.ood`) and, beside
it, the small-ball threat models of the robust-detector papers (:mod:`oodlib.attack.pgd`).

Every attack takes what it differentiates as a detector with the name of one of its attack targets
(``ood_attack(detector, x_in, x_ood, target="features", ...)``), an ``nn.Module`` or a bound method of one, and
puts that module in eval mode with frozen parameters for the attack (:func:`~oodlib.attack.ood.attack_target`).
:data:`ATTACKS` names every attack, so that the contract suite can enumerate them.
"""

from typing import Callable

from .ood import (REPRODUCTION_ROUTINE, ROUTINE_DESCRIPTIONS, ROUTINES, AttackResult, attack_target, frozen, normalise_gradient,
                  ood_attack, owning_module, project, random_start)
from .pgd import aloe_threat, aoe_threat, atom_threat, fgsm, pgd_linf

ATTACKS: dict[str, Callable] = {"ood_attack": ood_attack, "pgd_linf": pgd_linf, "fgsm": fgsm,
                                "atom_threat": atom_threat, "aloe_threat": aloe_threat, "aoe_threat": aoe_threat}
"""Every attack by name: Algorithm 1 (``ood_attack``, Section 2.1) and the robust-detector papers' threats."""

__all__ = ["ATTACKS", "REPRODUCTION_ROUTINE", "ROUTINES", "ROUTINE_DESCRIPTIONS", "AttackResult", "aloe_threat", "aoe_threat", "atom_threat",
           "attack_target", "fgsm", "frozen", "normalise_gradient", "ood_attack", "owning_module", "pgd_linf",
           "project", "random_start"]
