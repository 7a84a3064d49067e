"""Pretrained models by name, from caches prepared as each package lays them out, offline.

The Hugging Face models are real ``transformers`` models read by ``from_pretrained`` from a hub
cache snapshot; torchvision's weights are read by ``torch.hub`` from ``TORCH_HOME`` and timm's
by ``huggingface_hub`` from the hub cache, through the stand-in packages of tests/zoo_models.py
(the real ones run in tests/torch/test_pretrained_real.py). Every store is checked against the
model's own logits, ``W h + b`` and the class map.
"""

import hashlib
import sys

import numpy as np
import pytest
import torch
import xarray as xr

from ncprobe.analyze.cli import main as analyze
from ncprobe.data.datasets import load_dataset
from ncprobe.data.datasets.imagenet import imagenet1k_wnids
from ncprobe.data.store.schema import OUTSIDE
from ncprobe.extract.cli import main as extract
from tests import hub_caches as hc
from tests import zoo_models as zm

pytestmark = pytest.mark.torch


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty hub caches under tmp_path, offline."""
    return hc.offline_hub(monkeypatch, tmp_path / "caches")


@pytest.fixture
def stand_ins(monkeypatch):
    """The stand-in torchvision and timm (without transformers, which looks for the real
    torchvision when it is imported)."""
    tv = zm.fake_torchvision()
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", tv.models)
    monkeypatch.setitem(sys.modules, "timm", zm.fake_timm())


@pytest.fixture
def nette(tmp_path):
    """Ten ImageNet classes by WordNet id, as Imagenette lays them out: train (three images
    each, of assorted sizes) and val (one each, read as the split test)."""
    hc.image_folder(tmp_path / "nette" / "val", hc.IMAGENETTE, per_class=1, seed=1)
    return hc.image_folder(tmp_path / "nette" / "train", hc.IMAGENETTE).parent


def _favour(forward, linear, x, index):
    """Raise the bias of the outputs ``index`` so that the random network ``forward``
    predicts about half the samples ``x`` as one of them and the others outside."""
    with torch.no_grad():
        logits = forward(x)
        gap = logits.max(1).values - logits[:, list(index)].max(1).values
        linear.bias[list(index)] += gap.median()


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def run(tmp_path, args, attacks=("clean", "fgsm:eps=0.03")):
    store, metrics = tmp_path / "acts.zarr", tmp_path / "m.zarr"
    assert extract([*args, *[a for q in attacks for a in ("--attack", q)], "--out", str(store),
                    "--no-progress"]) == 0
    assert analyze([str(store), "--out", str(metrics), "--no-progress"]) == 0
    return xr.open_datatree(store, engine="zarr"), xr.open_datatree(metrics, engine="zarr")


def check_store(acts, metrics, own_logits, index):
    """The stored clean logits are the model's own at the classes' outputs; the predictions
    its argmax over every output, mapped (OUTSIDE beyond the classes); W h + b exact; and
    pred_outside, net_acc the fractions of those predictions."""
    out = acts["train/outputs"]
    stored = out["logits"].sel(condition="clean").values[0]
    np.testing.assert_allclose(stored, own_logits[:, index], rtol=1e-4, atol=1e-5)
    inverse = np.full(own_logits.shape[1], OUTSIDE)
    inverse[index] = np.arange(len(index))
    pred = out["pred"].sel(condition="clean").values[0]
    np.testing.assert_array_equal(pred, inverse[own_logits.argmax(1)])
    assert acts.attrs["class_map"]["index"] == list(index)
    assert acts.attrs["class_map"]["outputs"] == own_logits.shape[1]
    layer = acts["classifier"].attrs["layer"]
    h = acts[f"train/layers/{layer}"]["features"].values[0].astype(np.float64)
    w = acts["classifier"]["weight"].values[0].astype(np.float64)
    b = acts["classifier"]["bias"].values[0].astype(np.float64)
    logits = out["logits"].values[0].astype(np.float64)
    assert w.shape[0] == len(index)
    assert np.abs(h @ w.T + b - logits).max() / np.abs(logits).max() < 1e-5
    s = metrics["summary"].sel(split="train", layer=layer, checkpoint=0)
    labels = out["label"].values
    for q, cond in enumerate(out["condition"].values):
        p = out["pred"].values[0, q]
        assert float(s["pred_outside"].sel(condition=cond)) == pytest.approx(
            np.mean(p == OUTSIDE))
        assert float(s["net_acc"].sel(condition=cond)) == pytest.approx(np.mean(p == labels))
    return pred


def test_hf_hub_model_on_an_imagenet_wnid_subset(tmp_path, caches, nette):
    """hf:ORG/NAME from a hub snapshot, offline: 10 WordNet-id folders against 1000 outputs,
    images resized and cropped as its processor config says, the weights' identity kept."""
    wnids = imagenet1k_wnids()
    index = [wnids.index(c) for c in hc.IMAGENETTE]
    net = hc.tiny_vit()
    ds = load_dataset("imagefolder", root=nette, size=20, crop=16, interpolation="bicubic")
    _favour(lambda v: net((v - 0.5) / 0.25).logits, net.classifier,
            torch.from_numpy(ds.images["train"]), index[:5])
    snap = hc.save_hf_model(caches["hf"], "tiny-org/vit-1k", net)
    acts, metrics = run(tmp_path, ["--arch", "hf:tiny-org/vit-1k", "--dataset", "imagefolder",
                                   "--data-root", str(nette)])
    x = torch.from_numpy(ds.images["train"][acts["train/outputs"]["sample"].values])
    with torch.no_grad():
        own = net((x - 0.5) / 0.25).logits.numpy()
    pred = check_store(acts, metrics, own, index)
    assert (pred == OUTSIDE).any() and (pred >= 0).any()  # both kinds are exercised
    model = acts.attrs["model"]
    assert model["pretrained"]["revision"] == hc.REVISION
    assert model["pretrained"]["sha256"] == _sha(snap / "model.safetensors")
    assert model["preprocess"] == {"resize": 20, "crop": 16, "interpolation": "bicubic",
                                   "source": "Hugging Face preprocessor_config.json"}
    assert model["normalization"]["mean"] == [0.5] * 3
    assert acts.attrs["class_map"]["source"] == "ImageNet-1k WordNet ids"
    assert acts.attrs["dataset"]["options"]["crop"] == 16
    # the metrics store keeps the map; the report's key numbers show the leaps outside it
    from ncprobe.plots.report import key_numbers

    assert metrics.attrs["source_attrs"]["class_map"] == acts.attrs["class_map"]
    table = key_numbers({"vit": metrics}).set_index("condition")
    test_pred = acts["test/outputs"]["pred"].values[0]
    np.testing.assert_allclose(table["pred_outside (test)"].values,
                               (test_pred == OUTSIDE).mean(axis=-1))


def test_torchvision_weights_from_torch_home(tmp_path, caches, stand_ins, nette):
    """torchvision:NAME --pretrained reads TORCH_HOME/hub/checkpoints/<URL's file name>
    through torch.hub, with the weights' transforms() as the preprocessing."""
    torch.manual_seed(0)
    net = zm.ResNet(num_classes=1000, in_chans=3).eval()
    wnids = imagenet1k_wnids()
    index = [wnids.index(c) for c in hc.IMAGENETTE]
    ds = load_dataset("imagefolder", root=nette, size=zm.HUB_RESIZE, crop=zm.HUB_CROP)
    mean = torch.tensor(zm.IMAGENET_MEAN).reshape(1, 3, 1, 1)
    std = torch.tensor(zm.IMAGENET_STD).reshape(1, 3, 1, 1)
    _favour(lambda v: net((v - mean) / std), net.fc, torch.from_numpy(ds.images["train"]),
            index[::2])
    file = caches["torch"] / "resnet18-f37072fd.pth"
    torch.save(net.state_dict(), file)
    acts, metrics = run(tmp_path, ["--arch", "torchvision:resnet18", "--pretrained",
                                   "--dataset", "imagefolder", "--data-root", str(nette)])
    x = torch.from_numpy(ds.images["train"][acts["train/outputs"]["sample"].values])
    with torch.no_grad():
        own = net((x - mean) / std).numpy()
    pred = check_store(acts, metrics, own, index)
    assert (pred == OUTSIDE).any() and (pred >= 0).any()
    weights = acts.attrs["model"]["pretrained"]
    assert weights["weights"] == "ResNet18_Weights.IMAGENET1K_V1"  # DEFAULT, resolved
    assert weights["sha256"] == _sha(file)
    assert acts.attrs["model"]["preprocess"]["resize"] == zm.HUB_RESIZE


def test_timm_tag_from_the_hub_cache(tmp_path, caches, stand_ins, nette):
    """timm:NAME.TAG --pretrained: the weights of the hub repo timm/NAME.TAG, with timm's
    data config (crop_pct, bicubic) as the preprocessing; the tag may come from --pretrained."""
    torch.manual_seed(1)
    net = zm.ResNet(num_classes=1000, in_chans=3).eval()
    from safetensors.torch import save_file

    snap = hc.hf_snapshot(caches["hf"], "timm/resnet18.a2_in1k")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()},
              snap / "model.safetensors")
    acts, metrics = run(tmp_path, ["--arch", "timm:resnet18", "--pretrained", "a2_in1k",
                                   "--dataset", "imagefolder", "--data-root", str(nette)],
                        attacks=("clean",))
    ds = load_dataset("imagefolder", root=nette, size=zm.HUB_RESIZE, crop=zm.HUB_CROP,
                      interpolation="bicubic")
    x = torch.from_numpy(ds.images["train"][acts["train/outputs"]["sample"].values])
    mean = torch.tensor(zm.IMAGENET_MEAN).reshape(1, 3, 1, 1)
    std = torch.tensor(zm.IMAGENET_STD).reshape(1, 3, 1, 1)
    with torch.no_grad():
        own = net((x - mean) / std).numpy()
    wnids = imagenet1k_wnids()
    check_store(acts, metrics, own, [wnids.index(c) for c in hc.IMAGENETTE])
    weights = acts.attrs["model"]["pretrained"]
    assert weights["name"] == "resnet18.a2_in1k" and weights["revision"] == hc.REVISION
    assert weights["sha256"] == _sha(snap / "model.safetensors")
    assert acts.attrs["model"]["preprocess"] == {"resize": zm.HUB_RESIZE, "crop": zm.HUB_CROP,
                                                 "interpolation": "bicubic",
                                                 "source": "timm data config"}


def test_class_map_file_and_label_names(tmp_path, caches):
    """Folders of other names: by --class-map, or by the model's own id2label names."""
    pets = hc.image_folder(tmp_path / "pets", ("cat", "dog", "tench"))
    labels = {i: f"thing {i}" for i in range(1000)}
    labels.update({0: "tench, Tinca tinca", 281: "tabby cat", 7: "Dog"})
    net = hc.tiny_vit(id2label=labels)
    ds = load_dataset("imagefolder", root=pets, size=20, crop=16, interpolation="bicubic")
    _favour(lambda v: net((v - 0.5) / 0.25).logits, net.classifier,
            torch.from_numpy(ds.images["train"]), [0, 7, 281])
    hc.save_hf_model(caches["hf"], "tiny-org/vit-named", net)

    def own(acts):
        x = torch.from_numpy(ds.images["train"][acts["train/outputs"]["sample"].values])
        with torch.no_grad():
            return net((x - 0.5) / 0.25).logits.numpy()

    mapping = tmp_path / "pets.txt"
    mapping.write_text("# dataset class -> output\ncat 281\ndog 7\ntench 0\nzebra 340\n")
    acts, metrics = run(tmp_path / "file", ["--arch", "hf:tiny-org/vit-named", "--dataset",
                                            "imagefolder", "--data-root", str(pets),
                                            "--class-map", str(mapping)])
    check_store(acts, metrics, own(acts), [281, 7, 0])
    assert acts.attrs["class_map"]["source"] == "class_map pets.txt"
    # "cat" is no label's first name ("tabby cat"): the names do not cover every class
    (pets / "cat").rename(pets / "tabby cat")
    ds = load_dataset("imagefolder", root=pets, size=20, crop=16, interpolation="bicubic")
    acts, metrics = run(tmp_path / "names", ["--arch", "hf:tiny-org/vit-named", "--dataset",
                                             "imagefolder", "--data-root", str(pets)])
    check_store(acts, metrics, own(acts), [7, 281, 0])  # dog, tabby cat, tench
    assert acts.attrs["class_map"]["source"] == "the model's label names"


def test_attack_targets_stay_in_the_models_outputs(tmp_path, caches, nette):
    """A random-target attack draws among all 1000 outputs: targets outside the dataset's
    classes are stored as OUTSIDE, the others as the dataset class."""
    net = hc.tiny_vit()
    hc.save_hf_model(caches["hf"], "tiny-org/vit-1k", net)
    acts, _ = run(tmp_path, ["--arch", "hf:tiny-org/vit-1k", "--dataset", "imagefolder",
                             "--data-root", str(nette)],
                  attacks=("clean", "pgd:eps=0.03,steps=2,target=random,name=pgd"))
    target = acts["train/outputs"]["target"].sel(condition="pgd").values[0]
    assert (target == OUTSIDE).mean() > 0.9  # 990 of 1000 outputs are no dataset class
    assert ((target == OUTSIDE) | ((target >= 0) & (target < 10))).all()


def test_a_study_of_pretrained_hub_models(tmp_path, caches, nette):
    """A study manifest takes hub ids and pretrained weights: one command, one study.zarr,
    each model's store mapped to the ten classes present."""
    from ncprobe.study import load_manifest
    from ncprobe.study.cli import main as study

    for seed, repo in enumerate(("tiny-org/vit-a", "tiny-org/vit-b")):
        hc.save_hf_model(caches["hf"], repo, hc.tiny_vit(seed=seed))
    manifest = tmp_path / "hubs.toml"
    manifest.write_text(f"""
[protocol]
dataset = "imagefolder"
data_root = "{nette}"
attacks = ["clean", "fgsm:eps=0.03"]

[[model]]
name = "vit-a"
arch = "hf:tiny-org/vit-a"

[[model]]
name = "vit-b"
arch = "hf:tiny-org/vit-b"
pretrained = true
""")
    m = load_manifest(manifest)
    assert m.model("vit-a").arch == "hf:tiny-org/vit-a"  # a hub id, not a path
    assert m.model("vit-b").pretrained == ""
    assert study(["run", str(manifest), "--no-progress"]) == 0
    folder = tmp_path / "hubs.study"
    for name in ("vit-a", "vit-b"):
        acts = xr.open_datatree(folder / "models" / name / "acts.zarr", engine="zarr")
        assert acts.attrs["class_map"]["outputs"] == 1000
        assert acts.attrs["model"]["pretrained"]["revision"] == hc.REVISION
    summary = xr.open_datatree(folder / "study.zarr", engine="zarr")["summary"]
    assert list(summary["model"].values) == ["vit-a", "vit-b"]
    assert np.isfinite(summary["pred_outside"].values).any()
