"""The real torchvision and timm, from caches prepared as they lay them out, offline.

They do not import beside the CPU torch of `make test` (tests/zoo_models.py stands in for them
there), so these run in their own environment: `make test-hubs` (torch 2.14.1, torchvision
0.29.1, timm). Each store is checked against the model's own logits through the package's own
preprocessing (torchvision's ``weights.transforms()``, timm's ``create_transform``), W h + b
and the map of ten ImageNet WordNet-id folders to the 1000 outputs.
"""

import hashlib

import numpy as np
import pytest
import torch
import xarray as xr

from ncprobe.data.datasets.imagenet import imagenet1k_wnids
from ncprobe.extract.cli import main as extract
from tests import hub_caches as hc


def _import(name):
    try:
        return __import__(name)
    except Exception as e:  # noqa: BLE001 - a mismatched build raises RuntimeError
        pytest.skip(f"{name} does not import here ({type(e).__name__}); run make test-hubs")


pytestmark = pytest.mark.torch


def _store(tmp_path, args):
    store = tmp_path / "acts.zarr"
    assert extract([*args, "--attack", "clean", "--out", str(store), "--no-progress"]) == 0
    return xr.open_datatree(store, engine="zarr")


def _check(acts, own):
    """Stored logits are the model's own at the wnids' outputs (through the package's own
    preprocessing) and W h + b exact; returns the largest relative logits difference."""
    wnids = imagenet1k_wnids()
    index = [wnids.index(c) for c in hc.IMAGENETTE]
    assert acts.attrs["class_map"]["index"] == index
    out = acts["train/outputs"]
    stored = out["logits"].sel(condition="clean").values[0]
    order = out["sample"].values
    diff = np.abs(stored - own[order][:, index]).max() / np.abs(own).max()
    layer = acts["classifier"].attrs["layer"]
    h = acts[f"train/layers/{layer}"]["features"].values[0].astype(np.float64)
    w = acts["classifier"]["weight"].values[0].astype(np.float64)
    b = acts["classifier"]["bias"].values[0].astype(np.float64)
    logits = out["logits"].values[0].astype(np.float64)
    err = np.abs(h @ w.T + b - logits).max() / np.abs(logits).max()
    assert err < 1e-5, err
    return diff


def _own(net, transform, folder):
    from PIL import Image

    files = sorted(p for c in hc.IMAGENETTE for p in (folder / c).iterdir())
    x = torch.stack([transform(Image.open(p).convert("RGB")) for p in files])
    with torch.no_grad():
        return net.eval()(x).numpy()


def test_real_torchvision_resnet18_from_torch_home(tmp_path, monkeypatch):
    _import("torchvision")
    from torchvision import models

    caches = hc.offline_hub(monkeypatch, tmp_path / "caches")
    torch.manual_seed(0)
    net = models.resnet18(num_classes=1000)
    weights = models.ResNet18_Weights.IMAGENET1K_V1
    file = caches["torch"] / weights.url.rsplit("/", 1)[1]
    torch.save(net.state_dict(), file)
    folder = hc.image_folder(tmp_path / "nette", hc.IMAGENETTE, per_class=2)
    acts = _store(tmp_path, ["--arch", "torchvision:resnet18", "--pretrained", "--dataset",
                             "imagefolder", "--data-root", str(folder)])
    pre = acts.attrs["model"]["preprocess"]
    assert (pre["resize"], pre["crop"], pre["interpolation"]) == (256, 224, "bilinear")
    assert acts.attrs["model"]["pretrained"]["sha256"] == hashlib.sha256(
        file.read_bytes()).hexdigest()
    diff = _check(acts, _own(net, weights.transforms(), folder))
    assert diff < 1e-5, diff  # the same pixels: Pillow resizes in both
    print(f"torchvision resnet18: logits vs weights.transforms() pipeline, max rel diff "
          f"{diff:.2g}")


def test_real_timm_tag_from_the_hub_cache(tmp_path, monkeypatch):
    timm = _import("timm")
    from safetensors.torch import save_file

    caches = hc.offline_hub(monkeypatch, tmp_path / "caches")
    torch.manual_seed(0)
    net = timm.create_model("test_resnet.r160_in1k", pretrained=False)
    snap = hc.hf_snapshot(caches["hf"], "timm/test_resnet.r160_in1k")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()},
              snap / "model.safetensors")
    folder = hc.image_folder(tmp_path / "nette", hc.IMAGENETTE, per_class=2)
    acts = _store(tmp_path, ["--arch", "timm:test_resnet.r160_in1k", "--pretrained",
                             "--dataset", "imagefolder", "--data-root", str(folder)])
    weights = acts.attrs["model"]["pretrained"]
    assert weights["revision"] == hc.REVISION and weights["hf_hub_id"] == \
        "timm/test_resnet.r160_in1k"
    pre = acts.attrs["model"]["preprocess"]
    assert (pre["resize"], pre["crop"]) == (168, 160)  # floor(160 / 0.95), the crop
    cfg = timm.data.resolve_data_config({}, model=net)
    diff = _check(acts, _own(net, timm.data.create_transform(**cfg), folder))
    assert diff < 1e-5, diff
    print(f"timm test_resnet.r160_in1k: logits vs create_transform pipeline, max rel diff "
          f"{diff:.2g}")


def test_real_timm_unknown_tag_and_uncached_weights(tmp_path, monkeypatch, capsys):
    _import("timm")
    hc.offline_hub(monkeypatch, tmp_path / "caches")
    folder = hc.image_folder(tmp_path / "nette", hc.IMAGENETTE, per_class=1)
    common = ["--dataset", "imagefolder", "--data-root", str(folder), "--out",
              str(tmp_path / "x.zarr"), "--pretrained"]
    assert extract(["--arch", "timm:test_resnet.nosuchtag", *common]) == 2
    assert "Invalid pretrained tag (nosuchtag)" in capsys.readouterr().err
    assert extract(["--arch", "timm:test_vit.r160_in1k", *common]) == 2
    err = capsys.readouterr().err
    assert "not in the cache folder" in err and "hf download timm/test_vit.r160_in1k" in err
    assert not (tmp_path / "x.zarr").exists()
