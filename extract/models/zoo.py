"""Models from the zoos researchers use, by source: ``torchvision:NAME``, ``timm:NAME``,
``hf:PATH`` (a local Hugging Face ``from_pretrained`` folder, read offline) and
``robustbench:NAME[@DATASET/THREAT]`` (:mod:`.robustbench`).

Each source's package is imported only when a user names it. The class count is passed as
``num_classes`` (torchvision, timm); a Hugging Face folder's config says its own
(``num_labels``), and a mismatch is reported by the classifier check. Where the source knows
the model's input normalisation (timm's ``pretrained_cfg``, a Hugging Face image processor
config), :func:`known_normalization` returns it for ``normalize="auto"``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from pathlib import Path

from torch import nn

from . import robustbench
from .wrap import ModelError

SOURCES = ("torchvision", "timm", "hf", "robustbench")
#: the weight files of a Hugging Face folder, in the order they are looked for
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def import_source(name: str, spec: str):
    """Import a model source's package, or a one-line error saying which one and why."""
    try:
        return importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - broken installs raise more than ImportError
        first = " ".join(str(e).split())[:160]
        raise ModelError(f"{spec!r} needs the package {name.split('.')[0]!r}, which does not "
                         f"import here ({type(e).__name__}: {first}); install it in this "
                         "environment, built for the installed torch") from None


def is_zoo(arch: str) -> bool:
    """Whether ``arch`` names a model of a source (not a ``module:factory``)."""
    source, sep, name = arch.partition(":")
    if not sep or source not in SOURCES:
        return False
    if source in ("hf", "robustbench"):
        return True
    # torchvision.models:resnet18 and timm:create_model stay factories
    try:
        module = importlib.import_module(source)
    except Exception:  # noqa: BLE001 - reported by build_zoo with the package's name
        return True
    return not hasattr(module, name)


def build_zoo(arch: str, n_classes: int, kwargs: dict) -> nn.Module:
    """The untrained network ``arch`` names, with ``n_classes`` outputs where it takes them."""
    source, _, name = arch.partition(":")
    try:
        if source == "torchvision":
            models = import_source("torchvision.models", arch)
            return models.get_model(name, **{"num_classes": n_classes, **kwargs})
        if source == "timm":
            timm = import_source("timm", arch)
            return timm.create_model(name, pretrained=False,
                                     **{"num_classes": n_classes, **kwargs})
        if source == "robustbench":
            return robustbench.build(arch)
        return _hf_model(arch, Path(name), kwargs)
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - the package's own errors: report, do not crash
        raise ModelError(f"{arch!r} could not be built: {type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]}") from None


def _hf_model(arch: str, folder: Path, kwargs: dict) -> nn.Module:
    if not (folder / "config.json").is_file():
        raise ModelError(f"{arch!r}: {str(folder)!r} is not a Hugging Face model folder (no "
                         "config.json); expected a folder written by save_pretrained")
    transformers = import_source("transformers", arch)
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True, **kwargs)
    net = transformers.AutoModelForImageClassification.from_config(config)
    net.ncprobe_folder = str(folder)
    return net


@contextlib.contextmanager
def quiet(transformers):
    """transformers' own progress bars off while ncprobe loads a model (ncprobe reports its
    own progress), restored after."""
    bars = transformers.utils.logging
    was = bars.is_progress_bar_enabled()
    bars.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            bars.enable_progress_bar()


def hf_weights(folder) -> Path | None:
    """The weight file of a Hugging Face folder (one with a ``config.json``), or None."""
    if not (Path(folder) / "config.json").is_file():
        return None
    for name in HF_WEIGHTS:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def hf_state_dict(folder) -> dict:
    """The state dict of a Hugging Face folder's model, by the module names it has in
    memory: ``from_pretrained`` (offline) applies the key conversions that transformers
    keeps between the file's names and the modules' (they differ in transformers 5)."""
    transformers = import_source("transformers", f"hf:{folder}")
    try:
        with quiet(transformers):
            net = transformers.AutoModelForImageClassification.from_pretrained(
                folder, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - transformers' own errors: report, do not crash
        raise ModelError(f"Hugging Face folder {str(folder)!r} could not be loaded: "
                         f"{type(e).__name__}: {' '.join(str(e).split())[:200]}") from None
    return {k: v.detach() for k, v in net.state_dict().items()}


def known_normalization(net: nn.Module) -> tuple[tuple, tuple, str] | None:
    """``(mean, std, source)`` the model's source records for its inputs, or None: timm's
    ``pretrained_cfg`` mean/std, a Hugging Face folder's ``preprocessor_config.json``
    ``image_mean``/``image_std``."""
    cfg = getattr(net, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("mean") and cfg.get("std"):
        return tuple(cfg["mean"]), tuple(cfg["std"]), "timm pretrained_cfg"
    folder = getattr(net, "ncprobe_folder", None)
    processor = Path(folder) / "preprocessor_config.json" if folder else None
    if processor is not None and processor.is_file():
        spec = json.loads(processor.read_text())
        if spec.get("image_mean") and spec.get("image_std"):
            return tuple(spec["image_mean"]), tuple(spec["image_std"]), \
                "Hugging Face preprocessor_config.json"
    return None
