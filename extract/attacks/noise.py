"""Random-noise baselines: the paper's control for "is it the attack or any perturbation?"."""

from __future__ import annotations

import torch

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
