"""Small networks shaped like those of RobustBench's zoo (the same module names and the same
kind of forward pass), sized for CPU tests."""

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if cin == cout and stride == 1 else \
            nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x):
        o = self.relu1(self.bn1(x))
        y = self.conv2(self.relu2(self.bn2(self.conv1(o))))
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    """RobustBench's WideResNet: conv1, block1-3, bn1, relu, 8x8 average pooling, ``fc``."""

    def __init__(self, num_classes=10, width=8):
        super().__init__()
        self.nChannels = 4 * width
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.block1 = BasicBlock(width, width, 1)
        self.block2 = BasicBlock(width, 2 * width, 2)
        self.block3 = BasicBlock(2 * width, 4 * width, 2)
        self.bn1 = nn.BatchNorm2d(4 * width)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8)
        return self.fc(out.view(-1, self.nChannels))


class DMWideResNet(nn.Module):
    """Like DeepMind's WideResNet in RobustBench: mean and std held by the model and applied
    in ``forward``, functional pooling, the classifier named ``logits``."""

    def __init__(self, num_classes=10, width=8, mean=(0.4914, 0.4822, 0.4465),
                 std=(0.2471, 0.2435, 0.2616)):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        self.init_conv = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.layer = nn.Sequential(BasicBlock(width, width, 1), BasicBlock(width, 2 * width, 2))
        self.batchnorm = nn.BatchNorm2d(2 * width)
        self.relu = nn.SiLU()
        self.logits = nn.Linear(2 * width, num_classes)
        self.num_channels = 2 * width

    def forward(self, x):
        out = (x - self.mean) / self.std
        out = self.relu(self.batchnorm(self.layer(self.init_conv(out))))
        out = F.avg_pool2d(out, 16)
        return self.logits(out.view(-1, self.num_channels))


class PreActResNet(nn.Module):
    """RobustBench's PreActResNet-18 layout: conv1, layer1-4, bn, 4x4 pooling, ``linear``."""

    def __init__(self, num_classes=10, width=8):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.layer1 = BasicBlock(width, width, 1)
        self.layer2 = BasicBlock(width, width, 2)
        self.layer3 = BasicBlock(width, 2 * width, 2)
        self.layer4 = BasicBlock(2 * width, 2 * width, 1)
        self.bn = nn.BatchNorm2d(2 * width)
        self.linear = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        out = F.relu(self.bn(out))
        out = F.avg_pool2d(out, 8)
        return self.linear(out.view(out.size(0), -1))


class ImageNormalizer(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.as_tensor(std).view(1, 3, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


def normalize_model(model, mean, std):
    """RobustBench's wrapper of its timm-backed entries: Sequential(normalize, model)."""
    return nn.Sequential(OrderedDict([("normalize", ImageNormalizer(mean, std)),
                                      ("model", model)]))


class TimmLike(nn.Module):
    """A timm-style network: stem, stages, a ``head`` with ``global_pool`` and ``fc``."""

    def __init__(self, num_classes=10, width=8):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, 2, 1)
        self.stages = nn.Sequential(BasicBlock(width, 2 * width, 2))
        self.head = nn.Sequential(OrderedDict([("global_pool", nn.AdaptiveAvgPool2d(1)),
                                               ("flatten", nn.Flatten()),
                                               ("fc", nn.Linear(2 * width, num_classes))]))

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


class Ensemble(nn.Module):
    def __init__(self):
        super().__init__()
        self.models = nn.ModuleList([WideResNet(), WideResNet()])

    def forward(self, x):
        return sum(torch.softmax(m(x), 1) for m in self.models) / len(self.models)
