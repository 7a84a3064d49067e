"""What every attack condition is: a named, frozen object that parses its own parameters,
draws its own random numbers and perturbs a batch (the shape of torchattacks' attacks).

A condition string ``KIND[:key=value,...]`` names a registered :class:`Attack` subclass
(:mod:`ncprobe.extract.attacks.registry`); its resolved settings are stored in the store's root
attributes as :meth:`Attack.as_dict` gives them (docs/store.md).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar

import torch

from ncprobe.data.errors import NcprobeError

from .pgd import NORMS, UNIT_BOX, perturbation_norm

#: the record every stored condition has (``ncprobe-activations/1``), in this order; an attack
#: fills in the fields it has
RECORD = {"name": None, "attack": None, "norm": None, "eps": 0.0, "steps": 0,
          "step_size": 0.0, "targeted": False, "target_rule": None, "restarts": 0, "seed": 0,
          "noise_kind": None, "random_start": False, "version": None, "sub_attacks": ()}


class AttackSpecError(NcprobeError):
    """An attack string that cannot be used; the message lists what is accepted."""


def number(key: str, text: str, kind=float):
    """``text`` as a float (fractions such as 8/255 allowed) or an int, or a one-line error."""
    try:
        return float(Fraction(text)) if kind is float else int(text)
    except (ValueError, ZeroDivisionError):
        raise AttackSpecError(f"attack parameter {key}={text!r} is not a valid "
                              f"{'number' if kind is float else 'integer'}") from None


def eps_param(params: dict, text: str) -> tuple[float, str]:
    """The required ``eps`` (>= 0) and the text it was written as (for default names)."""
    eps_text = params.get("eps")
    if eps_text is None:
        raise AttackSpecError(f"attack {text!r} needs eps=...")
    eps = number("eps", eps_text)
    if eps < 0:
        raise AttackSpecError(f"eps must be >= 0, got {eps_text} in {text!r}")
    return eps, eps_text


def seed_param(params: dict) -> int:
    """The optional ``seed`` (default 0)."""
    return number("seed", params.get("seed", "0"), int)


def norm_param(params: dict) -> str:
    """The optional ``norm`` (default linf), one of :data:`~.pgd.NORMS`."""
    norm = params.get("norm", "linf")
    if norm not in NORMS:
        raise AttackSpecError(f"unknown norm {norm!r}; expected {', '.join(NORMS)}")
    return norm


def untargeted(y: torch.Tensor) -> torch.Tensor:
    return torch.full_like(y, -1)


@dataclass(frozen=True)
class Attack(ABC):
    """One condition. Subclasses set ``kind`` and ``params`` (the keys their string takes)
    and implement :meth:`from_params` and :meth:`perturb`; :meth:`draw` when they need
    random numbers.

    ``seed`` (default 0) is mixed into every block's seed, so two conditions that differ only
    by it draw different numbers.
    """

    name: str
    seed: int = 0

    kind: ClassVar[str] = ""
    params: ClassVar[frozenset] = frozenset({"name"})
    #: the norm in which the perturbation is measured and stored
    measure_norm: ClassVar[str] = "linf"

    @classmethod
    def from_params(cls, params: dict, text: str) -> Attack:
        """The attack from its ``key=value`` strings (already checked against ``params``)."""
        return cls(name=params.get("name", cls.kind))

    @property
    def targeted(self) -> bool:
        return False

    def as_dict(self) -> dict:
        """The stored record: :data:`RECORD`'s fields, this attack's values filled in."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        record = {k: own.get(k, v) for k, v in RECORD.items()}
        record.update({"attack": self.kind, "targeted": self.targeted})
        return {**record, **{k: v for k, v in own.items() if k not in record}}

    def draw(self, x: torch.Tensor, y: torch.Tensor, n_classes: int,
             generator: torch.Generator, box=UNIT_BOX) -> dict:
        """Every random number the attack needs for a block of samples, drawn at once on the
        CPU from ``generator`` (so results depend neither on the batch size nor on where an
        interrupted run resumes). Tensors with one row per sample, or lists of them."""
        return {}

    @abstractmethod
    def perturb(self, model, x, y, n_classes: int, rand: dict, box=UNIT_BOX):
        """``(x_adv, target)`` for a batch; ``rand`` holds its rows of :meth:`draw`."""

    def run(self, model, x, y, n_classes: int, rand: dict | None = None, box=UNIT_BOX):
        """Perturb a batch; the model must already be in eval mode.

        Returns
        -------
        x_adv : Tensor like x; target : (n,) int64, -1 when untargeted; norm : (n,) the
        measured perturbation norm in ``measure_norm``.
        """
        if rand is None:
            rand = self.draw(x.cpu(), y.cpu(), n_classes, torch.Generator(), box)
        x_adv, target = self.perturb(model, x, y, n_classes, rand, box)
        return x_adv, target, perturbation_norm(x_adv, x, self.measure_norm)


@dataclass(frozen=True)
class Clean(Attack):
    """No perturbation: the inputs as they are."""

    kind: ClassVar[str] = "clean"

    def perturb(self, model, x, y, n_classes, rand, box=UNIT_BOX):
        return x, untargeted(y)

    def run(self, model, x, y, n_classes, rand=None, box=UNIT_BOX):
        return x, untargeted(y), torch.zeros(len(x), device=x.device)  # nothing to measure
