"""Pretrained models by name, through each hub package's own loader and cache.

``torchvision:NAME`` with weights ``DEFAULT`` or an enum member (``IMAGENET1K_V2``), cached
under ``TORCH_HOME``; ``timm:NAME[.TAG]`` through the Hugging Face cache; ``hf:ORG/NAME`` (a
hub id) with ``transformers``. ncprobe downloads nothing itself: with ``HF_HUB_OFFLINE=1``
(which ncprobe also applies to torchvision's cache) only cached weights are read, and weights
that are neither cached nor reachable are one line naming the model, the cache folder and how
to fill it. Each :class:`HubModel` says what the weights were (source, tag, revision, file and
its sha256), how their inputs are prepared (:class:`Preprocess`) and, where the package knows
them, its output labels. docs/your-model.md has a recipe per source.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

from torch import nn

from .checkpoints import sha256
from .models import ModelError
from .models.zoo import import_source, quiet

#: values of ``HF_HUB_OFFLINE`` that mean "read the caches only"
_TRUE = ("1", "true", "yes", "on")
#: Pillow resampling codes, as Hugging Face image processor configs write them
_PIL_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks for the caches only (for every source)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


@dataclass(frozen=True)
class Preprocess:
    """How the weights' inputs are made from an image: the shorter side resized to ``resize``
    (or to exactly ``resize = (height, width)``) with ``interpolation``, then centre-cropped
    to ``crop`` (None: no crop); ``source`` says where this was read."""

    resize: int | tuple[int, int]
    crop: int | None
    interpolation: str
    source: str

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the prepared image."""
        if self.crop:
            return self.crop, self.crop
        return (self.resize, self.resize) if isinstance(self.resize, int) else tuple(self.resize)

    def loader_options(self) -> dict:
        """The image-folder loader's options that reproduce it."""
        return {"size": self.resize, "crop": self.crop, "interpolation": self.interpolation}

    def as_dict(self) -> dict:
        out = asdict(self)
        if isinstance(self.resize, tuple):
            out["resize"] = list(self.resize)
        return out


@dataclass
class HubModel:
    """A pretrained network and what its source says about it."""

    net: nn.Module
    n_outputs: int
    labels: list | None
    preprocess: Preprocess | None
    #: (mean, std, where they were read), for ``normalize="auto"``
    normalization: tuple | None
    #: the weights' identity, recorded in the store
    weights: dict


def is_hub(arch: str | None, pretrained: str | None) -> bool:
    """Whether ``arch`` (with ``pretrained``) names pretrained weights from a hub: any zoo
    source with ``pretrained``, and an ``hf:`` id that is not a local folder."""
    if not arch:
        return False
    source, sep, name = arch.partition(":")
    if pretrained is not None:
        return bool(sep) and source in ("torchvision", "timm", "hf")
    return source == "hf" and bool(sep) and not Path(name).exists() and "/" in name


def load(arch: str, tag: str | None) -> HubModel:
    """The pretrained model ``arch`` names, with weights ``tag`` (None: the source's
    default), from its package's cache or download."""
    source, _, name = arch.partition(":")
    if source == "torchvision":
        return _torchvision(arch, name, tag)
    if source == "timm":
        return _timm(arch, name, tag)
    if source == "hf":
        return _hf(arch, name, tag)
    raise ModelError(f"`pretrained` is for torchvision:NAME, timm:NAME and hf:ORG/NAME, not "
                     f"{arch!r}; pass its weights with `checkpoint`")


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"


def _uncached(arch, what, folder, fill, cause=None) -> ModelError:
    why = "offline (HF_HUB_OFFLINE=1)" if offline() else f"the download failed ({cause})"
    return ModelError(f"{arch!r}: {what} not in the cache folder {str(folder)!r} and {why}; "
                      f"fill it on a machine with network ({fill}) and copy it here, or unset "
                      "HF_HUB_OFFLINE to let the package download it")


# torchvision ------------------------------------------------------------------------------

def _torchvision(arch, name, tag) -> HubModel:
    import torch

    models = import_source("torchvision.models", arch)
    try:
        enum = models.get_model_weights(name)
    except (KeyError, ValueError) as e:
        raise ModelError(f"{arch!r}: torchvision has no model {name!r} with weights "
                         f"({_one_line(e)}); expected a name of torchvision.models.list_models()"
                         ) from None
    tag = tag or "DEFAULT"
    try:
        weights = enum[tag]
    except KeyError:
        raise ModelError(f"{arch!r}: unknown weights {tag!r}; {enum.__name__} has "
                         f"{', '.join(enum.__members__)}") from None
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    file = folder / os.path.basename(urlparse(weights.url).path)
    label = f"{enum.__name__}.{weights.name}"
    fill = (f"python -c \"import torchvision; torchvision.models.get_model('{name}', "
            f"weights='{label}')\"")
    if not file.is_file() and offline():
        raise _uncached(arch, f"weights {label} ({file.name}) are", folder, fill)
    try:
        net = models.get_model(name, weights=weights, progress=False)
    except Exception as e:  # noqa: BLE001 - urllib's, torch.hub's and the package's errors
        if not file.is_file():
            raise _uncached(arch, f"weights {label} ({file.name}) are", folder, fill,
                            _one_line(e)) from None
        raise ModelError(f"{arch!r} with weights {label} could not be built: "
                         f"{_one_line(e)}") from None
    t = weights.transforms()
    resize = list(t.resize_size)
    preprocess = Preprocess(resize[0] if len(resize) == 1 else tuple(resize),
                            int(list(t.crop_size)[0]), str(t.interpolation.value),
                            f"torchvision {label}.transforms()")
    categories = list(weights.meta.get("categories") or [])
    return HubModel(
        net, len(categories), categories or None, preprocess,
        (tuple(t.mean), tuple(t.std), f"torchvision {label}.transforms()"),
        {"source": "torchvision", "name": name, "weights": label, "url": weights.url,
         "file": str(file), "sha256": sha256(file), "version": _version("torchvision")})


# timm ---------------------------------------------------------------------------------------

def _timm(arch, name, tag) -> HubModel:
    timm = import_source("timm", arch)
    base, dot, own_tag = name.partition(".")
    if tag is not None and dot and tag != own_tag:
        raise ModelError(f"{arch!r} names the pretrained tag {own_tag!r} and `pretrained` "
                         f"{tag!r}; give one")
    full = f"{base}.{tag}" if tag is not None and not dot else name
    try:
        net = timm.create_model(full, pretrained=True)
    except (RuntimeError, KeyError) as e:  # timm: unknown model or invalid pretrained tag
        raise ModelError(f"{arch!r}: {_one_line(e)}; expected a name of "
                         "timm.list_pretrained()") from None
    except Exception as e:  # noqa: BLE001 - huggingface_hub's and torch.hub's errors
        hub_id = _timm_hub_id(timm, full)
        raise _uncached(arch, f"weights {hub_id or full} are", _hf_cache(),
                        f"hf download {hub_id or 'timm/' + full}", _one_line(e)) from None
    cfg = dict(getattr(net, "pretrained_cfg", None) or {})
    data = timm.data.resolve_data_config({}, model=net)
    hub_id = cfg.get("hf_hub_id")
    file = _hf_file(hub_id, ("model.safetensors", "pytorch_model.bin"), None) if hub_id else None
    return HubModel(
        net, int(cfg.get("num_classes") or net.num_classes), _timm_labels(timm, net),
        _timm_preprocess(arch, data),
        (tuple(data["mean"]), tuple(data["std"]), "timm pretrained_cfg"),
        {"source": "timm", "name": f"{cfg.get('architecture', base)}.{cfg.get('tag', '')}"
                                   .rstrip("."),
         "hf_hub_id": hub_id, **_file_identity(file), "version": _version("timm")})


def _timm_hub_id(timm, name):
    try:
        return timm.create_model(name, pretrained=False).pretrained_cfg.get("hf_hub_id")
    except Exception:  # noqa: BLE001 - only for the message
        return None


def _timm_preprocess(arch, data) -> Preprocess:
    """timm's eval transform: the shorter side to floor(size / crop_pct), then the centre
    crop (``crop_mode`` center), or the image squashed to that square first (squash)."""
    h, w = data["input_size"][-2:]
    mode = data.get("crop_mode", "center")
    if h != w or mode not in ("center", "squash"):
        raise ModelError(f"{arch!r}: timm's data config asks for a {h}x{w} input with crop mode "
                         f"{mode!r}; ncprobe prepares square centre crops (center, squash); "
                         "prepare the images yourself and pass them as a dataset")
    scale = math.floor(h / data.get("crop_pct", 1.0))
    return Preprocess(scale if mode == "center" else (scale, scale), h,
                      data.get("interpolation", "bilinear"), "timm data config")


def _timm_labels(timm, net):
    """The ImageNet WordNet ids of a timm model's outputs, where timm knows its subset."""
    try:
        subset = timm.data.infer_imagenet_subset(net)
        return list(timm.data.ImageNetInfo(subset).label_names()) if subset else None
    except Exception:  # noqa: BLE001 - older timm or a model of another dataset
        return None


# Hugging Face -------------------------------------------------------------------------------

def _hf_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hf_file(repo, names, revision):
    """The cached path of the first of ``names`` in ``repo``, or None."""
    from huggingface_hub import try_to_load_from_cache

    for n in names:
        path = try_to_load_from_cache(repo, n, revision=revision)
        if isinstance(path, str):
            return Path(path)
    return None


def _file_identity(file) -> dict:
    """The weight file, the snapshot revision of the hub cache it is in, and its sha256."""
    if file is None:
        return {"revision": None, "file": None, "sha256": None}
    revision = file.parent.name if file.parent.parent.name == "snapshots" else None
    return {"revision": revision, "file": str(file), "sha256": sha256(file)}


def _hf(arch, repo, revision) -> HubModel:
    transformers = import_source("transformers", arch)
    try:
        with quiet(transformers):
            net = transformers.AutoModelForImageClassification.from_pretrained(
                repo, revision=revision)
    except OSError as e:  # transformers' "couldn't connect ... nor find them in the cache"
        raise _uncached(arch, f"model {repo}{'@' + revision if revision else ''} is",
                        _hf_cache(), f"hf download {repo}", _one_line(e)) from None
    except Exception as e:  # noqa: BLE001 - transformers' own errors: report, do not crash
        raise ModelError(f"{arch!r} could not be loaded: {_one_line(e)}") from None
    file = _hf_file(repo, ("model.safetensors", "pytorch_model.bin"), revision)
    processor = _hf_file(repo, ("preprocessor_config.json",), revision)
    spec = json.loads(processor.read_text()) if processor else {}
    norm = ((tuple(spec["image_mean"]), tuple(spec["image_std"]),
             "Hugging Face preprocessor_config.json")
            if spec.get("image_mean") and spec.get("image_std") else None)
    return HubModel(net, int(net.config.num_labels), hf_labels(net), _hf_preprocess(arch, spec),
                    norm,
                    {"source": "hf", "name": repo, "requested_revision": revision,
                     **_file_identity(file), "version": _version("transformers")})


def hf_labels(net) -> list | None:
    """A Hugging Face model's output labels (``config.id2label``), or None where they are
    transformers' placeholders (``LABEL_0``, ...), which name no class."""
    id2label = getattr(getattr(net, "config", None), "id2label", None) or {}
    labels = [id2label[i] for i in sorted(id2label)]
    if not labels or all(str(v) == f"LABEL_{i}" for i, v in enumerate(labels)):
        return None
    return labels


def _hf_preprocess(arch, spec: dict) -> Preprocess | None:
    """A Hugging Face image processor config as resize and crop: ``size`` as
    ``shortest_edge`` or ``height``/``width``, ``crop_size`` when ``do_center_crop``
    (ConvNeXt's ``crop_pct``: the shorter side to shortest_edge / crop_pct, then the crop)."""
    if not spec or not spec.get("do_resize", True) or "size" not in spec:
        return None
    size, source = spec["size"], "Hugging Face preprocessor_config.json"
    interpolation = _PIL_FILTERS.get(spec.get("resample", 2), "bilinear")
    crop = spec.get("crop_size") if spec.get("do_center_crop") else None
    if isinstance(crop, dict):
        crop = crop.get("height") if crop.get("height") == crop.get("width") else None
    if isinstance(size, int):
        return Preprocess(size, crop, interpolation, source)
    if "shortest_edge" in size:
        edge = int(size["shortest_edge"])
        if spec.get("crop_pct") and edge < 384:
            return Preprocess(int(edge / spec["crop_pct"]), edge, interpolation, source)
        return Preprocess(edge, crop, interpolation, source)
    if "height" in size and "width" in size:
        return Preprocess((int(size["height"]), int(size["width"])), crop, interpolation,
                          source)
    raise ModelError(f"{arch!r}: preprocessor_config.json size {size!r} is not shortest_edge "
                     "or height and width; prepare the images yourself")


def _version(package) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
