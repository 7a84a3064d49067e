"""Random-noise baselines: the paper's control for "is it the attack or any perturbation?"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import Attack, AttackSpecError, eps_param, seed_param, untargeted
from .pgd import UNIT_BOX, clip_to_box

NOISE_KINDS = ("gaussian", "gaussian-sigma", "sign")


def noise(x: torch.Tensor, kind: str, eps: float, generator=None, box=UNIT_BOX) -> torch.Tensor:
    """Perturb ``x`` with random noise, clipped to ``box`` (the dataset's valid range).

    kind ``gaussian``: a Gaussian direction scaled to l_2 norm ``eps`` per sample;
    ``gaussian-sigma``: i.i.d. N(0, eps^2) per pixel; ``sign``: uniform random signs of size
    ``eps`` per pixel (an l_inf perturbation of exactly ``eps`` before clamping).
    Noise is drawn on the CPU from ``generator`` so a seed gives the same noise on any device.
    """
    if kind == "sign":
        d = torch.randint(0, 2, x.shape, generator=generator, dtype=torch.float32) * 2 - 1
        d = d * eps
    else:
        d = torch.randn(x.shape, generator=generator)
        if kind == "gaussian":
            d = d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
        d = d * eps
    return clip_to_box(x + d.to(x.device, x.dtype), box)


@dataclass(frozen=True)
class Noise(Attack):
    """Random noise of size ``eps`` (``kind=``: see :func:`noise`), clipped to the box."""

    eps: float = 0.0
    noise_kind: str = "gaussian"

    kind: ClassVar[str] = "noise"
    params: ClassVar[frozenset] = frozenset({"kind", "eps", "name", "seed"})

    @property
    def measure_norm(self) -> str:  # type: ignore[override]
        return "linf" if self.noise_kind == "sign" else "l2"

    @classmethod
    def from_params(cls, params, text):
        eps, eps_text = eps_param(params, text)
        seed = seed_param(params)
        kind = params.get("kind", "gaussian")
        if kind not in NOISE_KINDS:
            raise AttackSpecError(f"unknown noise kind {kind!r}; expected "
                                  f"{', '.join(NOISE_KINDS)}")
        return cls(name=params.get("name", f"noise-{kind}-{eps_text}"), seed=seed, eps=eps,
                   noise_kind=kind)

    def draw(self, x, y, n_classes, generator, box=UNIT_BOX):
        return {"noised": noise(x, self.noise_kind, self.eps, generator, box)}

    def perturb(self, model, x, y, n_classes, rand, box=UNIT_BOX):
        return rand["noised"].to(x.device, x.dtype), untargeted(y)
