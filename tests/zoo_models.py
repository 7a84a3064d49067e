"""The structures of the model families researchers bring, written out as their packages
define them (scaled down to digits' 1 x 8 x 8 inputs), for the zoo tests.

torchvision, timm and lightning do not import beside the CPU torch wheel these tests run on,
so their shapes are reproduced here: what matters to ncprobe is the module tree, the forward's
data flow (in-place ops, class tokens, heads inside containers, non-tensor outputs), the
factory signatures and the checkpoint layouts.
"""

from __future__ import annotations

import enum
import types
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                         nn.BatchNorm2d(c_out))
                           if stride != 1 or c_in != c_out else None)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet(nn.Module):
    """torchvision.models.ResNet's tree: conv1, bn1, relu, maxpool, layer1..4, avgpool, fc."""

    def __init__(self, num_classes=1000, width=8, in_chans=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 1, 1)
        self.layer1 = nn.Sequential(BasicBlock(width, width))
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, 2))
        self.layer3 = nn.Sequential(BasicBlock(2 * width, 2 * width))
        self.layer4 = nn.Sequential(BasicBlock(2 * width, 4 * width, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(*, weights=None, progress=True, **kwargs):
    """torchvision's factory signature: the class count only through ``**kwargs``."""
    return ResNet(**kwargs)


class DenseNet(nn.Module):
    """torchvision.models.DenseNet's data flow: ``F.relu(features, inplace=True)`` after the
    ``features`` child and before pooling, so a hook's reference to ``features``' output is
    changed in place afterwards."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(1, 8, 3, 1, 1, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(8))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        self.features.add_module("denseblock1", nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1)))
        self.features.add_module("transition1", nn.Sequential(nn.Conv2d(8, 12, 1),
                                                              nn.AvgPool2d(2)))
        self.features.add_module("denseblock2", nn.Sequential(nn.Conv2d(12, 12, 3, 1, 1)))
        self.features.add_module("norm5", nn.BatchNorm2d(12))
        self.classifier = nn.Linear(12, num_classes)

    def forward(self, x):
        features = self.features(x)
        out = F.relu(features, inplace=True)
        out = F.adaptive_avg_pool2d(out, (1, 1))
        return self.classifier(torch.flatten(out, 1))


def densenet121(*, weights=None, progress=True, **kwargs):
    return DenseNet(**kwargs)


class MobileNetLike(nn.Module):
    """MobileNetV3 / EfficientNet / ConvNeXt heads: the final nn.Linear inside a Sequential
    ``classifier`` after another Linear, an activation and dropout."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.BatchNorm2d(8),
                                      nn.Hardswish(), nn.Conv2d(8, 16, 3, 2, 1),
                                      nn.BatchNorm2d(16), nn.Hardswish())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(16, 24), nn.Hardswish(inplace=True),
                                        nn.Dropout(0.2, inplace=True),
                                        nn.Linear(24, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def mobilenet_v3_small(*, weights=None, progress=True, **kwargs):
    return MobileNetLike(**kwargs)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(
            2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)
        return self.proj(a.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim, in_chans=1, patch_size=4):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """timm.models.VisionTransformer's tree and flow: patch_embed, cls_token, pos_embed,
    pos_drop, blocks (a Sequential), a top-level ``norm``, the class token to ``head``."""

    def __init__(self, num_classes=1000, embed_dim=16, depth=3, num_heads=2, img_size=8,
                 in_chans=1, patch_size=4):
        super().__init__()
        self.patch_embed = PatchEmbed(embed_dim, in_chans, patch_size)
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        tokens = (img_size // patch_size) ** 2 + 1
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, embed_dim) * 0.02)
        self.pos_drop = nn.Dropout(0.0)
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)
        self.fc_norm = nn.Identity()
        self.head_drop = nn.Dropout(0.0)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(self.pos_drop(x)))
        return self.head(self.head_drop(self.fc_norm(x[:, 0])))


class LogitsAndFeatures(nn.Module):
    """A forward that returns ``(logits, features)``, as many research codebases do."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        h = self.body(x)
        return self.fc(h), h


class DictOutput(LogitsAndFeatures):
    """A forward that returns a mapping; the logits are under ``scores``."""

    def forward(self, x):
        h = self.body(x)
        return {"features": h, "scores": self.fc(h)}


class Unreadable(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        return str(self.fc(x.flatten(1)).shape)


class LitClassifier(nn.Module):
    """A LightningModule's tree: the network under ``model``, the loss beside it (a
    LightningModule is an nn.Module; its Trainer machinery plays no part in forward)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.model = ResNet(num_classes=num_classes)
        self.criterion = nn.CrossEntropyLoss(weight=torch.ones(num_classes))

    def forward(self, x):
        return self.model(x)


class WideResNetRB(nn.Module):
    """A RobustBench-style model: normalisation inside as ``mu``/``sigma`` buffers, blocks
    ``block1..3``, the head named ``logits`` (the name of one of ncprobe's outputs)."""

    def __init__(self, num_classes=10, in_chans=1):
        super().__init__()
        self.register_buffer("mu", torch.full((1, in_chans, 1, 1), 0.3))
        self.register_buffer("sigma", torch.full((1, in_chans, 1, 1), 0.4))
        self.conv1 = nn.Conv2d(in_chans, 8, 3, 1, 1, bias=False)
        self.block1 = nn.Sequential(BasicBlock(8, 8))
        self.block2 = nn.Sequential(BasicBlock(8, 16, 2))
        self.block3 = nn.Sequential(BasicBlock(16, 16, 2))
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.logits = nn.Linear(16, num_classes)

    def forward(self, x):
        out = self.conv1((x - self.mu) / self.sigma)
        out = self.relu(self.bn1(self.block3(self.block2(self.block1(out)))))
        return self.logits(F.adaptive_avg_pool2d(out, 1).flatten(1))


def fixed_1000(pretrained: bool = False) -> nn.Module:
    """A factory that takes no class count (1000 outputs, as an ImageNet model)."""
    return ResNet(num_classes=1000)


#: the stand-ins' pretrained ImageNet preprocessing, scaled down: shorter side 20, crop 16
HUB_RESIZE, HUB_CROP = 20, 16
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class _Interpolation(enum.Enum):
    BILINEAR = "bilinear"


@dataclass(frozen=True)
class _Preset:
    """torchvision.transforms._presets.ImageClassification's attributes."""

    crop_size: list
    resize_size: list
    mean: list
    std: list
    interpolation: _Interpolation = _Interpolation.BILINEAR


@dataclass(frozen=True)
class _Weights:
    url: str
    transforms: object
    meta: dict


class ResNet18_Weights(enum.Enum):  # noqa: N801 - torchvision's name
    """torchvision's weights enum: members hold url, transforms and meta; DEFAULT aliases
    the newest; ``get_state_dict`` reads torch.hub's cache (TORCH_HOME) as torchvision does."""

    IMAGENET1K_V1 = _Weights(
        "https://download.pytorch.org/models/resnet18-f37072fd.pth",
        partial(_Preset, [HUB_CROP], [HUB_RESIZE], list(IMAGENET_MEAN), list(IMAGENET_STD)),
        {"categories": ["tench", "goldfish", "great white shark"]
         + [f"category {i}" for i in range(3, 1000)]})
    DEFAULT = IMAGENET1K_V1

    @property
    def url(self):
        return self.value.url

    @property
    def transforms(self):
        return self.value.transforms

    @property
    def meta(self):
        return self.value.meta

    def get_state_dict(self, *args, **kwargs):
        return torch.hub.load_state_dict_from_url(self.url, *args, **kwargs)


def fake_torchvision() -> types.ModuleType:
    """``torchvision`` and ``torchvision.models`` with ``get_model(name, **config)``
    (torchvision's signature; keyword arguments reach the model's constructor) and, for
    ``resnet18``, pretrained weights (``get_model_weights``, ``weights=``)."""
    tv = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    builders = {"resnet18": resnet18, "densenet121": densenet121,
                "mobilenet_v3_small": mobilenet_v3_small}

    def get_model_weights(name):
        if name.lower() != "resnet18":
            raise ValueError(f"Unknown model {name}")
        return ResNet18_Weights

    def get_model(name, weights=None, progress=True, **config):
        if weights is None:
            return builders[name.lower()](**config)
        weights = ResNet18_Weights[weights] if isinstance(weights, str) else weights
        net = ResNet(num_classes=len(weights.meta["categories"]), in_chans=3)
        net.load_state_dict(weights.get_state_dict(progress=progress, check_hash=True))
        return net

    models.get_model = get_model
    models.get_model_weights = get_model_weights
    models.__dict__.update(builders)
    tv.models = models
    return tv


#: the stand-in timm's pretrained tags (its default first) and their data config
TIMM_TAGS = ("a1_in1k", "a2_in1k")
TIMM_DATA = {"input_size": (3, HUB_CROP, HUB_CROP), "interpolation": "bicubic",
             "crop_pct": HUB_CROP / HUB_RESIZE, "crop_mode": "center",
             "mean": IMAGENET_MEAN, "std": IMAGENET_STD}


def fake_timm() -> types.ModuleType:
    """``timm`` with ``create_model(model_name, pretrained=False, ..., **kwargs)``; its models
    carry ``pretrained_cfg`` (mean, std). ``resnet18[.TAG]`` has pretrained ImageNet weights,
    read as timm reads them: ``model.safetensors`` of the hub repo ``timm/resnet18.TAG``
    through huggingface_hub's cache; ``timm.data.resolve_data_config`` gives their
    preprocessing."""
    timm = types.ModuleType("timm")
    data = types.ModuleType("timm.data")

    def create_model(model_name, pretrained=False, pretrained_cfg=None,
                     pretrained_cfg_overlay=None, checkpoint_path="", **kwargs):
        arch, _, tag = model_name.partition(".")
        if pretrained:
            if arch != "resnet18" or (tag and tag not in TIMM_TAGS):
                raise RuntimeError(f"Invalid pretrained tag ({tag}) for {arch}.")
            from huggingface_hub import hf_hub_download
            from safetensors.torch import load_file

            tag = tag or TIMM_TAGS[0]
            hub_id = f"timm/{arch}.{tag}"
            net = ResNet(num_classes=1000, in_chans=3)
            net.load_state_dict(load_file(hf_hub_download(hub_id, "model.safetensors")))
            net.pretrained_cfg = {**TIMM_DATA, "hf_hub_id": hub_id, "architecture": arch,
                                  "tag": tag, "num_classes": 1000}
            net.num_classes = 1000
            return net
        family = VisionTransformer if model_name.startswith("vit") else ResNet
        net = family(**kwargs)
        chans = kwargs.get("in_chans", 1)
        net.pretrained_cfg = {"mean": (0.25,) * chans, "std": (0.5,) * chans,
                              "architecture": model_name}
        return net

    def resolve_data_config(args=None, model=None):
        return {k: model.pretrained_cfg[k] for k in TIMM_DATA}

    timm.create_model = create_model
    data.resolve_data_config = resolve_data_config
    timm.data = data
    return timm


#: stand-in packages for docs/your-model.md's recipes, written into the folder they run in
STAND_INS = {
    "torchvision/__init__.py": "from . import models  # noqa: F401\n",
    "torchvision/models.py": (
        "from tests.zoo_models import ResNet, fake_torchvision\n\n"
        "_models = fake_torchvision().models\n"
        "get_model_weights = _models.get_model_weights\n\n\n"
        "def resnet18(*, weights=None, progress=True, **kwargs):\n"
        "    return ResNet(in_chans=3, **kwargs)\n\n\n"
        "def get_model(name, weights=None, progress=True, **config):\n"
        "    if weights is not None:\n"
        "        return _models.get_model(name, weights=weights, progress=progress)\n"
        "    return {'resnet18': resnet18}[name](**config)\n"),
    "timm.py": (
        "from tests.zoo_models import fake_timm\n\n"
        "_timm = fake_timm()\n"
        "data = _timm.data\n\n\n"
        "def create_model(model_name, pretrained=False, **kwargs):\n"
        "    if not pretrained:\n"
        "        kwargs.setdefault('in_chans', 3)\n"
        "    return _timm.create_model(model_name, pretrained, **kwargs)\n"),
    "robustbench/__init__.py": "",
    "robustbench/model_zoo/__init__.py": "",
    "robustbench/model_zoo/architectures/__init__.py": "",
    "robustbench/model_zoo/architectures/dm_wide_resnet.py": (
        "from tests.zoo_models import WideResNetRB\n\n\n"
        "def DMWideResNet(num_classes=10, depth=28, width=10, **kwargs):  # noqa: N802\n"
        "    return WideResNetRB(num_classes=num_classes, in_chans=3)\n"),
}
