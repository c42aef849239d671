"""Attacks: Algorithm 1 of Liang et al. (the OOD attack on an encoder, :mod:`oodlib.attack.ood`) and, beside
it, the small-ball threat models of the robust-detector papers (:mod:`oodlib.attack.pgd`)."""

from .ood import AttackResult, frozen, normalise_gradient, ood_attack, owning_module, project, random_start

__all__ = ["AttackResult", "frozen", "normalise_gradient", "ood_attack", "owning_module", "project", "random_start"]
