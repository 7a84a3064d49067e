"""In-house attacks, one module per concept: PGD (and FGSM as one step of it), noise, targets."""

from .noise import noise
from .pgd import ce_objective, perturbation_norm, pgd, project, random_start
from .spec import (
    AttackSpec,
    AttackSpecError,
    draw_randomness,
    parse_attack,
    run_condition,
    slice_randomness,
)
from .targets import choose_targets

__all__ = ["AttackSpec", "AttackSpecError", "ce_objective", "choose_targets",
           "draw_randomness", "noise", "parse_attack", "perturbation_norm", "pgd", "project",
           "random_start", "run_condition", "slice_randomness"]
