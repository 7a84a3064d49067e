"""Attack conditions as objects, one module per attack, found by name in a registry.

``clean`` and the noise control (:mod:`.noise`), PGD and FGSM (:mod:`.gradient`, on the PGD
algorithm of :mod:`.pgd` that training shares) and AutoAttack (:mod:`.autoattack`). Adding
one: subclass :class:`Attack` in a module and ``register_attack(MyAttack)``.
"""

from .autoattack import AutoAttack
from .base import Attack, AttackSpecError, Clean
from .gradient import FGSM, PGD
from .noise import Noise, noise
from .pgd import ce_objective, perturbation_norm, pgd, project, random_start
from .registry import (
    ATTACKS,
    parse_attack,
    register_attack,
    slice_randomness,
    unregister_attack,
)
from .targets import choose_targets

for _attack in (Clean, PGD, FGSM, Noise, AutoAttack):
    register_attack(_attack)

__all__ = ["ATTACKS", "Attack", "AttackSpecError", "AutoAttack", "Clean", "FGSM", "Noise",
           "PGD", "ce_objective", "choose_targets", "noise", "parse_attack",
           "perturbation_norm", "pgd", "project", "random_start", "register_attack",
           "slice_randomness", "unregister_attack"]
