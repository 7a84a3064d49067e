"""The hubs' caches laid out as each package lays them out, and image folders to match, so
that pretrained models load with no network (``HF_HUB_OFFLINE=1``).

* torchvision: ``TORCH_HOME/hub/checkpoints/<file name of the weights' URL>``;
* Hugging Face (transformers, timm): ``HF_HUB_CACHE/models--ORG--NAME/snapshots/REV/`` with
  ``refs/main`` holding ``REV``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

#: Imagenette's ten classes, as ImageNet WordNet ids (sorted, as a class-folder loader reads)
IMAGENETTE = ("n01440764", "n02102040", "n02979186", "n03000684", "n03028079", "n03394916",
              "n03417042", "n03425413", "n03445777", "n03888605")
REVISION = "0123456789abcdef0123456789abcdef01234567"


def offline_hub(mp, root: Path) -> dict:
    """Point every cache at ``root`` and go offline, for this process (``mp``: a pytest
    MonkeyPatch) and for the commands it starts; returns the cache folders."""
    import huggingface_hub.constants as constants

    hf, torch_home = root / "hf" / "hub", root / "torch"
    hf.mkdir(parents=True, exist_ok=True)
    (torch_home / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
    for key, value in {"HF_HUB_OFFLINE": "1", "HF_HOME": str(root / "hf"),
                       "HF_HUB_CACHE": str(hf), "TORCH_HOME": str(torch_home)}.items():
        mp.setenv(key, value)
    # huggingface_hub read the environment when it was imported
    mp.setattr(constants, "HF_HUB_CACHE", str(hf))
    mp.setattr(constants, "HF_HUB_OFFLINE", True)
    return {"hf": hf, "torch": torch_home / "hub" / "checkpoints"}


def hf_snapshot(hf_cache: Path, repo: str, revision: str = REVISION) -> Path:
    """The snapshot folder of ``repo`` at ``revision``, made the ``main`` ref."""
    folder = hf_cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(revision)
    snap = folder / "snapshots" / revision
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def tiny_vit(num_labels=1000, id2label=None, seed=0):
    """A real transformers ViT for 16 x 16 RGB images with ``num_labels`` outputs."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.ViTConfig(image_size=16, patch_size=8, hidden_size=8,
                                 num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=16, num_labels=num_labels,
                                 **({"id2label": id2label} if id2label else {}))
    return transformers.ViTForImageClassification(cfg).eval()


#: a processor config as ViT-style models ship it: shorter side 20, centre crop 16
PROCESSOR = {"do_resize": True, "size": {"shortest_edge": 20}, "do_center_crop": True,
             "crop_size": {"height": 16, "width": 16}, "resample": 3,
             "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25],
             "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True}


def save_hf_model(hf_cache, repo, net, processor=PROCESSOR) -> Path:
    """``net`` saved into the hub cache as ``repo`` (with its processor config)."""
    snap = hf_snapshot(hf_cache, repo)
    net.save_pretrained(snap)
    (snap / "preprocessor_config.json").write_text(json.dumps(processor))
    return snap


def image_folder(root: Path, classes, per_class=3, seed=0) -> Path:
    """``root/<class>/<i>.png``: RGB images of assorted sizes (none already 16 x 16)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = rng.integers(18, 40, size=2)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                root / c / f"{i}.png")
    return root
