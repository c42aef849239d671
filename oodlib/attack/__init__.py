"""Attacks: Algorithm 1 of Liang et al. (the OOD attack on an encoder, :mod:`oodlib.attack.ood`) and, beside
it, the small-ball threat models of the robust-detector papers (:mod:`oodlib.attack.pgd`)."""

from .ood import ROUTINES, AttackResult, frozen, normalise_gradient, ood_attack, owning_module, project, random_start
from .pgd import aloe_threat, aoe_threat, atom_threat, fgsm, pgd_linf

__all__ = ["ROUTINES", "AttackResult", "aloe_threat", "aoe_threat", "atom_threat", "fgsm", "frozen",
           "normalise_gradient", "ood_attack", "owning_module", "pgd_linf", "project", "random_start"]
