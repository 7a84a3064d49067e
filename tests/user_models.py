"""A user model for the ``--arch package.module:factory`` tests."""

from torch import nn


def tiny(n_classes: int = 10) -> nn.Module:
    """Plain nn.Sequential: capture points default to its children, the classifier to the
    last nn.Linear."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, n_classes))


def small(num_classes: int = 10, width: int = 32) -> nn.Module:
    """torchvision-style: the class count is ``num_classes``; ``width`` via --arch-kwargs."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(),
                         nn.Linear(width, num_classes))


def broken(n_classes: int = 10) -> nn.Module:
    raise RuntimeError("no weights here")


class _Heads(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
        self.head = nn.Linear(32, num_classes)
        self.calibration = nn.Linear(num_classes, num_classes)  # the last nn.Linear

    def forward(self, x):
        return self.calibration(self.head(self.body(x)))


def heads(num_classes: int = 10) -> nn.Module:
    """A model whose classifier (``head``) is not its last nn.Linear."""
    return _Heads(num_classes)


class _Scaled(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc(2.0 * self.body(x))  # the classifier's input is no module's output


def scaled(num_classes: int = 10) -> nn.Module:
    return _Scaled(num_classes)
