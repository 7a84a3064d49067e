"""Target rules of targeted attacks."""

from __future__ import annotations

import torch

from ncprobe.data.errors import NcprobeError

TARGET_RULES = ("next", "random", "least-likely")


def choose_targets(rule: str | int, y: torch.Tensor, n_classes: int, clean_logits=None,
                   generator=None) -> torch.Tensor:
    """Target class per sample.

    ``next``: (y + 1) mod C (Su et al.); ``random``: uniform over the classes other than y;
    ``least-likely``: argmin of the clean logits; an int: that fixed class.
    """
    if isinstance(rule, int):
        return torch.full_like(y, rule)
    if rule == "next":
        return (y + 1) % n_classes
    if rule == "random":
        shift = torch.randint(1, n_classes, y.shape, generator=generator).to(y.device)
        return (y + shift) % n_classes
    if rule == "least-likely":
        return clean_logits.argmin(dim=1)
    raise NcprobeError(f"unknown target rule {rule!r}; expected {', '.join(TARGET_RULES)} or a "
                     "class index")
