"""A user model for the ``--arch package.module:factory`` tests."""

from torch import nn


def tiny(n_classes: int = 10) -> nn.Module:
    """Plain nn.Sequential: capture points default to its children, the classifier to the
    last nn.Linear."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, n_classes))
