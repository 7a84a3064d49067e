"""PGD and FGSM conditions (Madry et al. 2018; Goodfellow et al. 2015), untargeted or targeted,
on :func:`~ncprobe.extract.attacks.pgd.pgd`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import Attack, AttackSpecError, eps_param, norm_param, number, seed_param, untargeted
from .pgd import UNIT_BOX, ce_objective, default_step_size, pgd, random_start
from .targets import TARGET_RULES, choose_targets


def _target_rule(params: dict):
    target = params.get("target")
    if target is None:
        return None
    rule = int(target) if target.lstrip("-").isdigit() else target
    if isinstance(rule, str) and rule not in TARGET_RULES:
        raise AttackSpecError(f"unknown target rule {target!r}; expected "
                              f"{', '.join(TARGET_RULES)} or a class index")
    return rule


@dataclass(frozen=True)
class PGD(Attack):
    """Projected gradient ascent of the cross-entropy in an l_inf or l_2 ball, from a random
    start, with restarts; ``target=`` descends towards a target class instead."""

    norm: str = "linf"
    eps: float = 0.0
    steps: int = 20
    step_size: float = 0.0
    target_rule: str | int | None = None
    restarts: int = 1
    random_start: bool = True

    kind: ClassVar[str] = "pgd"
    params: ClassVar[frozenset] = frozenset({"norm", "eps", "steps", "step", "restarts",
                                             "target", "random_start", "name", "seed"})

    @property
    def measure_norm(self) -> str:  # type: ignore[override]
        return self.norm

    @property
    def targeted(self) -> bool:
        return self.target_rule is not None

    @classmethod
    def from_params(cls, params, text):
        eps, eps_text = eps_param(params, text)
        seed, norm = seed_param(params), norm_param(params)
        steps = number("steps", params.get("steps", "20"), int)
        if steps < 1:
            raise AttackSpecError(f"steps must be >= 1, got {steps} in {text!r}")
        step = number("step", params["step"]) if "step" in params \
            else default_step_size(eps, steps)
        if step <= 0 and eps > 0:
            raise AttackSpecError(f"step must be > 0, got {params.get('step')} in {text!r}")
        restarts = number("restarts", params.get("restarts", "1"), int)
        if restarts < 1:
            raise AttackSpecError(f"restarts must be >= 1, got {restarts} in {text!r}")
        rs = params.get("random_start", "true").lower()
        if rs not in ("true", "false", "1", "0"):
            raise AttackSpecError(f"random_start must be true or false, got {rs!r}")
        rule = _target_rule(params)
        target = params.get("target")
        name = f"{cls.kind}-{norm}-{eps_text}" + (f"-{target}" if target is not None else "")
        return cls(name=params.get("name", name), seed=seed, norm=norm, eps=eps, steps=steps,
                   step_size=step, target_rule=rule, restarts=restarts,
                   random_start=rs in ("true", "1"))

    def draw(self, x, y, n_classes, generator, box=UNIT_BOX):
        n = max(self.restarts, 1)
        if self.random_start:
            out = {"starts": [random_start(x, self.eps, self.norm, generator) for _ in range(n)]}
        else:  # every restart starts at x: random_start=false means no random draw at all
            out = {"starts": [torch.zeros_like(x)] * n}
        if self.target_rule == "random":
            out["targets"] = choose_targets("random", y, n_classes, generator=generator)
        return out

    def perturb(self, model, x, y, n_classes, rand, box=UNIT_BOX):
        if isinstance(self.target_rule, int) and not 0 <= self.target_rule < n_classes:
            raise AttackSpecError(f"target class {self.target_rule} outside "
                                  f"0..{n_classes - 1}")
        target, objective = untargeted(y), ce_objective(y)
        if self.targeted:
            if self.target_rule == "random":
                target = rand["targets"].to(y.device)
            else:
                clean_logits = None
                if self.target_rule == "least-likely":
                    with torch.no_grad():
                        clean_logits = model(x)
                target = choose_targets(self.target_rule, y, n_classes, clean_logits)
            objective = ce_objective(target, targeted=True)
        x_adv = pgd(model, x, objective, eps=self.eps, step_size=self.step_size,
                    steps=self.steps, norm=self.norm, start=rand["starts"],
                    restarts=self.restarts, box=box)
        return x_adv, target


@dataclass(frozen=True)
class FGSM(PGD):
    """One l_inf gradient-sign step of size eps from the clean input (no random start)."""

    steps: int = 1
    restarts: int = 0
    random_start: bool = False

    kind: ClassVar[str] = "fgsm"
    params: ClassVar[frozenset] = frozenset({"eps", "target", "name"})

    @classmethod
    def from_params(cls, params, text):
        eps, eps_text = eps_param(params, text)
        rule = _target_rule(params)
        target = params.get("target")
        name = f"fgsm-linf-{eps_text}" + (f"-{target}" if target is not None else "")
        return cls(name=params.get("name", name), eps=eps, step_size=eps, target_rule=rule)
