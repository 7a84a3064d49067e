"""AutoAttack (Croce and Hein 2020) through the optional ``pyautoattack`` package."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import Attack, AttackSpecError, eps_param, norm_param, seed_param, untargeted
from .pgd import UNIT_BOX

VERSIONS = ("standard", "plus", "rand", "custom")
SUB_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")


@dataclass(frozen=True)
class AutoAttack(Attack):
    """The parameter-free ensemble; ``version=custom`` with ``attacks=apgd-ce+apgd-t``."""

    norm: str = "linf"
    eps: float = 0.0
    version: str = "standard"
    sub_attacks: tuple = ()

    kind: ClassVar[str] = "autoattack"
    params: ClassVar[frozenset] = frozenset({"norm", "eps", "version", "attacks", "name",
                                             "seed"})

    @property
    def measure_norm(self) -> str:  # type: ignore[override]
        return self.norm

    @classmethod
    def from_params(cls, params, text):
        eps, eps_text = eps_param(params, text)
        seed, norm = seed_param(params), norm_param(params)
        version = params.get("version", "standard")
        if version not in VERSIONS:
            raise AttackSpecError(f"unknown autoattack version {version!r}; expected "
                                  f"{', '.join(VERSIONS)}")
        subs = tuple(a for a in params.get("attacks", "").split("+") if a)
        bad = [a for a in subs if a not in SUB_ATTACKS]
        if bad or (version == "custom") != bool(subs):
            raise AttackSpecError(f"autoattack attacks= must list {'+'.join(SUB_ATTACKS)} "
                                  "members (e.g. attacks=apgd-ce+apgd-t), with version=custom "
                                  "and only then")
        return cls(name=params.get("name", f"autoattack-{norm}-{eps_text}"), seed=seed,
                   norm=norm, eps=eps, version=version, sub_attacks=subs)

    def draw(self, x, y, n_classes, generator, box=UNIT_BOX):
        # AutoAttack seeds torch's global generator itself: give it one seed per block
        return {"seed": torch.randint(0, 2**31 - 1, (1,), generator=generator)}

    def perturb(self, model, x, y, n_classes, rand, box=UNIT_BOX):
        if box != UNIT_BOX:
            raise AttackSpecError(f"autoattack works in the [0, 1] pixel box; this dataset's "
                                  f"valid range is {box}")
        try:
            from pyautoattack import AutoAttack as Runner
        except ImportError:
            raise AttackSpecError("attack 'autoattack' needs the optional package "
                                  "pyautoattack: pip install 'ncprobe[autoattack]'") from None
        runner = Runner(model, norm={"linf": "Linf", "l2": "L2"}[self.norm], eps=self.eps,
                        version=self.version, attacks=list(self.sub_attacks) or None,
                        device=x.device, seed=int(rand["seed"]))
        x_adv, _ = runner.run_standard_evaluation(x, y, batch_size=len(x))
        return x_adv.to(x.device, x.dtype), untargeted(y)
