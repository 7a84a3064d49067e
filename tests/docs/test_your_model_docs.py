"""docs/your-model.md: every recipe runs as written, in a folder holding its files."""

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from ncprobe.analyze.cli import main as analyze

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "your-model.md").read_text()


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", DOC, re.S)


def _dedent(block):
    lines = block.splitlines()
    pad = min(len(ln) - len(ln.lstrip()) for ln in lines if ln.strip())
    return "\n".join(ln[pad:] for ln in lines) + "\n"


def _zoo_inputs(folder):
    """The files recipes 7-12 read, written as their packages write them, and stand-ins for
    torchvision, timm and robustbench (which do not import beside the CPU torch wheel)."""
    from tests import zoo_models as zm

    for rel, text in zm.STAND_INS.items():
        (folder / "stand-ins" / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / "stand-ins" / rel).write_text(text)
    torch.manual_seed(0)
    tv = zm.ResNet(num_classes=10, in_chans=3).state_dict()
    torch.save(tv, folder / "tv.pt")
    torch.save({"epoch": 9, "global_step": 90, "pytorch-lightning_version": "2.4.0",
                "state_dict": {f"model.{k}": v for k, v in tv.items()},
                "optimizer_states": [], "lr_schedulers": [], "hparams_name": "kwargs",
                "hyper_parameters": {"lr": 0.1}}, folder / "last.ckpt")
    vit = zm.VisionTransformer(num_classes=10, img_size=32, in_chans=3).state_dict()
    torch.save({"epoch": 3, "arch": "vit_tiny_patch16_224", "state_dict": vit,
                "state_dict_ema": vit, "version": 2, "metric": 11.0,
                "args": argparse.Namespace(model="vit_tiny_patch16_224", lr=5e-4)},
               folder / "last.pth.tar")
    rb = zm.WideResNetRB(num_classes=10, in_chans=3).state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in rb.items()}},
               folder / "Standard.pt")
    # recipe 12: the RobustBench stand-in's zoo beside the stand-in architectures above, and
    # an entry's weights in RobustBench's folder layout
    import importlib.util
    import shutil

    fake = ROOT / "tests" / "fake_packages" / "robustbench"
    for rel in ("model_zoo/enums.py", "model_zoo/models.py", "model_zoo/architectures/nets.py"):
        shutil.copy(fake / rel, folder / "stand-ins" / "robustbench" / rel)
    spec = importlib.util.spec_from_file_location("nets", fake / "model_zoo/architectures/nets.py")
    nets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nets)
    weights = folder / "models" / "cifar10" / "Linf" / "Carmon2019Unlabeled.pt"
    weights.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v
                               for k, v in nets.WideResNet().state_dict().items()}}, weights)
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16,
                                    num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=32, num_labels=10)
    transformers.ViTForImageClassification(config).save_pretrained(folder / "my-vit")
    transformers.ViTImageProcessor(image_mean=[0.5], image_std=[0.5]).save_pretrained(
        folder / "my-vit")
    _hub_inputs(folder)


def _hub_inputs(folder):
    """Recipes 13-16: the hubs' caches under ``folder/caches`` holding the stand-ins' weights
    where each package looks for them (environment: :func:`hub_environment`), Imagenette-like
    folders of WordNet ids and a pets folder with its class map."""
    from safetensors.torch import save_file

    from tests import hub_caches as hc
    from tests import zoo_models as zm

    hf, checkpoints = folder / "caches" / "hf" / "hub", folder / "caches" / "torch" / "hub"
    (checkpoints / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    net = zm.ResNet(num_classes=1000, in_chans=3)
    torch.save(net.state_dict(), checkpoints / "checkpoints" / "resnet18-f37072fd.pth")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()},
              hc.hf_snapshot(hf, "timm/resnet18.a1_in1k") / "model.safetensors")
    hc.save_hf_model(hf, "google/vit-base-patch16-224", hc.tiny_vit())
    for split in ("train", "val"):
        hc.image_folder(folder / "imagenette2" / split, hc.IMAGENETTE, per_class=2)
        hc.image_folder(folder / "pets" / split, ("cat", "dog"), per_class=3)
    (folder / "pets.txt").write_text("cat 281\ndog 207\n")


def hub_environment(folder) -> dict:
    """The hubs' caches of :func:`_hub_inputs`, offline."""
    return {"HF_HUB_OFFLINE": "1", "HF_HOME": str(folder / "caches" / "hf"),
            "TORCH_HOME": str(folder / "caches" / "torch")}


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.filterwarnings("ignore:empty classes:UserWarning",
                            "ignore:classes with a single sample:UserWarning")
def test_every_recipe_runs_as_written(tmp_path):
    from ncprobe.data.datasets import write_cifar_binary
    from tests.torch.test_foreign_models import RefPreActResNet18

    python = [_dedent(b) for b in _blocks("python")]
    (tmp_path / "mymodels.py").write_text(python[0])
    (tmp_path / "save.py").write_text(python[1])
    (tmp_path / "api.py").write_text(python[2])
    run = {"cwd": tmp_path, "capture_output": True, "text": True, "timeout": 600}
    assert subprocess.run([sys.executable, "save.py"], **run).returncode == 0
    # recipe 4's inputs: a checkpoint of the standard definition and CIFAR-shaped batches
    torch.save(RefPreActResNet18().state_dict(), tmp_path / "preact.pt")
    write_cifar_binary(tmp_path / "cifar", "cifar10", n_train=10, n_test=60)
    _zoo_inputs(tmp_path)
    commands = [_dedent(b).replace("\\\n", " ") for b in _blocks("bash")]
    assert len(commands) == 15
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "nc-extract"
        # the stand-ins import tests.*; transformers must not see a torchvision stand-in
        path = [str(ROOT)] + ([] if "hf:" in command else [str(tmp_path / "stand-ins")])
        done = subprocess.run([sys.executable, "-m", "ncprobe.extract.cli", *argv[1:],
                               "--no-progress"], **run,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(path),
                                   **hub_environment(tmp_path)})
        assert done.returncode == 0, (command, done.stderr[-2000:])
        out = tmp_path / argv[argv.index("--out") + 1]
        tree = xr.open_datatree(out, engine="zarr")
        assert tree.attrs["complete"] is True
        if "--normalize" in argv and argv[argv.index("--normalize") + 1] == "none":
            assert tree.attrs["model"]["normalization"]["mode"] == "none"
        # W h + b = logits at the layer feeding the classifier, for every condition (not for
        # Heads, whose calibration layer comes after its classifier)
        layer = tree["classifier"].attrs["layer"]
        h = tree[f"test/layers/{layer}"]["features"].values[0].astype(np.float64)
        w, b = tree["classifier"]["weight"].values[0], tree["classifier"]["bias"].values[0]
        if "--classifier" not in argv:
            np.testing.assert_allclose(h @ w.T + b, tree["test/outputs"]["logits"].values[0],
                                       rtol=1e-4, atol=1e-4)
        # and the store goes through nc-analyze
        assert analyze([str(out), "--out", str(out.with_suffix(".metrics.zarr")),
                        "--no-progress"]) == 0
    heads = xr.open_datatree(tmp_path / "heads.zarr", engine="zarr")
    assert heads.attrs["model"]["classifier"] == "net.head"
    assert heads["classifier"].attrs["layer"] == "penultimate"
    timm = xr.open_datatree(tmp_path / "timm.zarr", engine="zarr")
    assert timm.attrs["layers"] == ["blocks.0", "blocks.1", "blocks.2", "penultimate"]
    assert timm.attrs["model"]["normalization"]["mean"] == [0.25] * 3
    for name, outputs in (("tv-in1k", 10), ("timm-in1k", 10), ("vit-in1k", 10), ("pets", 2)):
        tree = xr.open_datatree(tmp_path / f"{name}.zarr", engine="zarr")
        assert tree.attrs["model"]["pretrained"]["sha256"]
        assert len(tree.attrs["class_map"]["index"]) == outputs
        assert tree.attrs["class_map"]["outputs"] == 1000
    done = subprocess.run([sys.executable, "api.py"], **run)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "feature_2" in done.stdout
    assert xr.open_datatree(tmp_path / "api.zarr", engine="zarr").attrs["complete"] is True
