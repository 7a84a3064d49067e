"""Fixtures for the bad-input table of docs/bad-inputs.md: every row runs as a test."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import zarr

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md"
ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*`(nc-[a-z]+)`\s*\|\s*`([^`]*)`\s*\|\s*`([^`]*)`\s*\|\s*$")


def rows() -> list[tuple[int, str, str, str]]:
    """(number, command, arguments, exact stderr line) of every table row."""
    out = []
    for line in DOC.read_text().splitlines():
        m = ROW.match(line)
        if m:
            out.append((int(m[1]), m[2], m[3], m[4]))
    return out


def make_hub_fixtures(tmp: Path, mp) -> None:
    """Offline hub caches holding one 1000-class Hugging Face model (``tiny-org/vit-1k``) and
    nothing else; the stand-in torchvision (its weights not cached); image folders ``nette``
    (ten ImageNet WordNet ids) and ``pets`` (cat, dog, fish) with a map ``pets.txt`` that
    leaves out fish and one ``twice.txt`` that maps cat and dog to one output."""
    import sys

    import transformers  # noqa: F401 - before the stand-in: it looks for torchvision once

    from tests import hub_caches as hc
    from tests import zoo_models

    caches = hc.offline_hub(mp, tmp / "caches")
    hc.save_hf_model(caches["hf"], "tiny-org/vit-1k", hc.tiny_vit())
    tv = zoo_models.fake_torchvision()
    mp.setitem(sys.modules, "torchvision", tv)
    mp.setitem(sys.modules, "torchvision.models", tv.models)
    hc.image_folder(tmp / "nette", hc.IMAGENETTE, per_class=1)
    hc.image_folder(tmp / "pets", ("cat", "dog", "fish"), per_class=1)
    (tmp / "pets.txt").write_text("cat 281\ndog 7\n")
    (tmp / "twice.txt").write_text("cat 281\ndog 281\nfish 1\n")


def make_fixtures(tmp: Path) -> dict:
    """Every path a row refers to, created under ``tmp``."""
    from ncprobe.data.store.from_arrays import write_activation_store
    from ncprobe.extract.extraction import ExtractConfig, extract_store
    from ncprobe.extract.training import TrainConfig, train

    train(TrainConfig(epochs=1, schedule="constant", lr=0.05), tmp / "run", progress=False)
    ckpt = tmp / "run" / "checkpoints" / "epoch-0001.pt"
    store = tmp / "acts.zarr"
    extract_store(ExtractConfig(checkpoints=[str(ckpt)], attacks=["clean", "fgsm:eps=0.1"],
                                limit=40), store, progress=False)
    from ncprobe.analyze.run import analyze_store

    with warnings.catch_warnings():  # 40 samples: some predicted classes have one sample
        warnings.simplefilter("ignore")
        analyze_store(store, tmp / "metrics.zarr", progress=False)
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 4)

    def small(name, x=None, labels=y, n_classes=3):
        x = rng.standard_normal((labels.size, 4)) if x is None else x
        write_activation_store(tmp / name, {"train": {"a": x[None, None]}}, {"train": labels},
                               n_classes=n_classes)
        return tmp / name

    nan = rng.standard_normal((12, 4))
    nan[2, 1] = np.nan
    small("nan.zarr", x=nan)
    small("one_class.zarr", labels=np.zeros(12, int), n_classes=1)
    small("bad_labels.zarr", labels=np.array([0, 1, 2, 5] * 3))
    small("future.zarr")
    zarr.open_group(str(tmp / "future.zarr"), mode="r+",
                    use_consolidated=False).attrs["schema"] = "ncprobe-activations/2"
    import shutil
    import sys

    # RobustBench's interface, written out (the real package does not import here)
    fake = str(Path(__file__).resolve().parent / "fake_packages")
    if fake not in sys.path:
        sys.path.insert(0, fake)
    (tmp / "rbmodels").mkdir()

    shutil.copytree(tmp / "metrics.zarr", tmp / "old_metrics.zarr")  # before nc3 was squared
    zarr.open_group(str(tmp / "old_metrics.zarr"), mode="r+",
                    use_consolidated=False).attrs["schema"] = "ncprobe-metrics/1"
    small("partial.zarr")
    zarr.open_group(str(tmp / "partial.zarr"), mode="r+",
                    use_consolidated=False).attrs["complete"] = False
    (tmp / "partial.zarr" / "train/layers/a/features/c/0/0/0/0").unlink()
    import torch

    from ncprobe.extract.models import build_model

    state = torch.load(ckpt, weights_only=True)
    torch.save({"state_dict": state, "ema": state}, tmp / "two_states.pt")
    torch.save(build_model("mlp", (1, 8, 8), 10, (0.3,), (0.4,)).net, tmp / "whole.pt")
    from tests import zoo_models

    torch.save(zoo_models.Unreadable().state_dict(), tmp / "unreadable.pt")
    torch.save(zoo_models.DictOutput().state_dict(), tmp / "dict_output.pt")
    # a Lightning file whose network sits under model.backbone. while the factory's keys
    # start at its own children: no single leading prefix fits
    small = {f"model.backbone.{k}": v for k, v in zoo_models.LogitsAndFeatures().state_dict(
    ).items()}
    torch.save({"epoch": 1, "global_step": 10, "pytorch-lightning_version": "2.4.0",
                "state_dict": small, "optimizer_states": [], "lr_schedulers": [],
                "hyper_parameters": {}}, tmp / "lightning.ckpt")
    (tmp / "empty").mkdir()
    (tmp / "notastore").mkdir()
    (tmp / "notastore" / "thesis.tex").write_text("keep me")
    return {"tmp": str(tmp), "ckpt": str(ckpt), "store": str(store),
            "metrics": str(tmp / "metrics.zarr")}
