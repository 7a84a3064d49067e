"""Projected gradient descent (Madry et al. 2018) in l_inf and l_2, in the input box
(the dataset's valid range: [0, 1] pixel space for images, unbounded for ``synthetic``).

One PGD serves training (PGD-AT, TRADES) and extraction. The objective is a per-sample loss to
*maximise*; summing it (rather than averaging) makes each sample's gradient independent of the
batch it is in, so results do not depend on the batch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NORMS = ("linf", "l2")
#: the valid input range of images; None (unbounded data) clips nothing
UNIT_BOX = (0.0, 1.0)


def default_step_size(eps: float, steps: int) -> float:
    """The step of a PGD attack that names none: 2.5 eps / steps (Madry et al.), so that
    ``steps`` steps can cross the eps-ball from any start."""
    return 2.5 * eps / steps


def clip_to_box(x: torch.Tensor, box) -> torch.Tensor:
    """``x`` clamped to ``box`` = (low, high), or unchanged when ``box`` is None."""
    return x if box is None else x.clamp(*box)


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project perturbations onto the eps-ball of ``norm``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    scale = (eps / _flat_norm(delta)).clamp(max=1.0)
    return delta * scale


def random_start(x: torch.Tensor, eps: float, norm: str, generator=None) -> torch.Tensor:
    """A uniform random point of the eps-ball around each sample (before clipping to the box).

    Drawn on the CPU from ``generator`` so that a seed gives the same start on any device.
    """
    shape = x.shape
    if norm == "linf":
        delta = (torch.rand(shape, generator=generator) * 2 - 1) * eps
    else:
        d = torch.randn(shape, generator=generator)
        n = x[0].numel()
        r = torch.rand((shape[0],) + (1,) * (len(shape) - 1), generator=generator) ** (1.0 / n)
        delta = d / _flat_norm(d) * r * eps
    return delta.to(x.device, x.dtype)


def ce_objective(y: torch.Tensor, targeted: bool = False):
    """Per-sample objective to maximise: CE to the label, or minus CE to the target."""
    sign = -1.0 if targeted else 1.0

    def objective(logits):
        return sign * F.cross_entropy(logits, y, reduction="none")

    return objective


def pgd(model, x, objective, *, eps: float, step_size: float, steps: int, norm: str = "linf",
        start: torch.Tensor | None = None, restarts: int = 1, generator=None,
        box=UNIT_BOX):
    """Maximise ``objective(model(x_adv))`` over the eps-ball of ``norm`` around ``x``.

    Parameters
    ----------
    model : callable
        Maps images in [0, 1] to logits; its train/eval mode is the caller's business.
    x : Tensor (n, ...)
        Clean inputs in [0, 1].
    objective : callable
        logits (n, C) -> per-sample loss (n,) to maximise.
    start : Tensor or list of Tensor, optional
        Initial perturbation of the first restart (or one per restart), e.g. drawn once for a
        whole block of samples so results do not depend on the batch size, or shared with an
        oracle; otherwise random starts from ``generator``, which must then be given (zero
        start when ``restarts == 0``).
    restarts : int
        Random restarts; per sample the one with the highest final objective is kept.

    box : (low, high) or None
        The valid input range (the dataset's): (0, 1) for images, None for unbounded data.

    Returns
    -------
    Tensor like ``x``: adversarial inputs, inside the eps-ball and the box.
    """
    best = x.clone()
    best_val = torch.full((x.shape[0],), -torch.inf, device=x.device)
    starts = start if isinstance(start, (list, tuple)) else [start]
    for r in range(max(restarts, 1)):
        if r < len(starts) and starts[r] is not None:
            delta = starts[r].to(x.device, x.dtype)
        elif restarts == 0:
            delta = torch.zeros_like(x)
        elif generator is None:
            # an unseeded draw would make the result irreproducible
            raise ValueError("pgd: random starts need a seeded generator (or pass start=)")
        else:
            delta = random_start(x, eps, norm, generator)
        x_adv = clip_to_box(x + delta, box).detach()
        for _ in range(steps):
            x_adv.requires_grad_(True)
            loss = objective(model(x_adv)).sum()
            (grad,) = torch.autograd.grad(loss, x_adv)
            with torch.no_grad():
                if norm == "linf":
                    x_adv = x_adv + step_size * grad.sign()
                else:
                    x_adv = x_adv + step_size * grad / _flat_norm(grad)
                x_adv = clip_to_box(x + project(x_adv - x, eps, norm), box)
            x_adv = x_adv.detach()
        if max(restarts, 1) == 1:
            return x_adv
        with torch.no_grad():
            val = objective(model(x_adv))
            better = val > best_val
            best[better] = x_adv[better]
            best_val = torch.where(better, val, best_val)
    return best


def perturbation_norm(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    """Measured ||x_adv - x|| per sample in ``norm`` (l_inf or l_2)."""
    d = (x_adv - x).flatten(1)
    return d.abs().amax(dim=1) if norm == "linf" else d.norm(dim=1)
