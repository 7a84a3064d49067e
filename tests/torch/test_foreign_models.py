"""Models trained anywhere: the standard CIFAR definitions' checkpoints, factories with their
own signature, wrapped and prefixed checkpoints, normalisation outside or inside the model."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn

from ncprobe.analyze.cli import main as analyze
from ncprobe.extract.checkpoints import load_state_dict
from ncprobe.extract.cli import main as extract
from ncprobe.extract.models import build_model, load_state

pytestmark = pytest.mark.torch


# ---- the standard definitions, written out (kuangliu/pytorch-cifar and Su et al.) ----
class RefPreActBlock(nn.Module):
    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class RefPreActResNet18(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.layer1 = self._make(64, 1)
        self.layer2 = self._make(128, 2)
        self.layer3 = self._make(256, 2)
        self.layer4 = self._make(512, 2)
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def _make(self, planes, stride):
        layers = []
        for s in (stride, 1):
            layers.append(RefPreActBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        out = F.avg_pool2d(F.relu(self.bn(out)), 4)
        return self.linear(out.flatten(1))


class RefVGG11BN(nn.Module):
    """Su et al.: configuration A without its final max-pool, conv (bias) + BN + ReLU, a 2x2
    average pool, classifier Linear(512, C)."""

    def __init__(self, num_classes=10):
        super().__init__()
        layers, c = [], 3
        for v in [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        layers.append(nn.AvgPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def _randomised(model):
    """Random BatchNorm statistics too, so a wrong mapping of any buffer changes the logits."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            m.weight.data.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
    return model.eval()


@pytest.mark.parametrize(("arch", "ref"), [("preactresnet18", RefPreActResNet18),
                                            ("vgg11bn", RefVGG11BN)])
def test_the_papers_checkpoints_load_into_our_architectures(tmp_path, arch, ref):
    torch.manual_seed(1)
    theirs = _randomised(ref())
    mean, std = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
    ours = build_model(arch, (3, 32, 32), 10, mean, std).eval()
    # their checkpoint, wrapped as training code saves it and with DataParallel prefixes
    torch.save({"state_dict": {f"module.{k}": v for k, v in theirs.state_dict().items()},
                "epoch": 3}, tmp_path / "theirs.pt")
    load_state(ours, load_state_dict(tmp_path / "theirs.pt"), "theirs.pt", arch=arch)
    x = torch.rand(4, 3, 32, 32)
    normalised = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(normalised), rtol=1e-4, atol=1e-4)
    # and our own checkpoints still load as they are
    again = build_model(arch, (3, 32, 32), 10, mean, std).eval()
    load_state(again, ours.state_dict(), "ours", arch=arch)
    with torch.no_grad():
        torch.testing.assert_close(again(x), ours(x))


def _extract_and_analyse(tmp_path, ckpt, *extra):
    store, metrics = tmp_path / "acts.zarr", tmp_path / "m.zarr"
    assert extract(["--checkpoint", str(ckpt), "--dataset", "digits", "--limit", "60",
                    "--attack", "clean", "--attack", "pgd:eps=0.1,steps=3", "--out", str(store),
                    "--no-progress", *extra]) == 0
    assert analyze([str(store), "--out", str(metrics), "--no-progress"]) == 0
    return xr.open_datatree(store, engine="zarr"), xr.open_datatree(metrics, engine="zarr")


@pytest.mark.slow
@pytest.mark.parametrize("save_as", ["plain", "wrapped", "dataparallel"])
def test_a_torchvision_style_factory_with_its_own_checkpoint(tmp_path, save_as, monkeypatch):
    from tests.user_models import small

    torch.manual_seed(0)
    model = small(num_classes=10, width=16).eval()
    state = model.state_dict()
    obj = {"plain": state, "wrapped": {"model_state_dict": state, "epoch": 3},
           "dataparallel": {f"module.{k}": v for k, v in state.items()}}[save_as]
    torch.save(obj, tmp_path / "mine.pt")
    acts, metrics = _extract_and_analyse(
        tmp_path, tmp_path / "mine.pt", "--arch", "tests.user_models:small", "--arch-kwargs",
        "width=16", "--normalize", "none")
    norm = acts.attrs["model"]["normalization"]
    assert norm == {"mode": "none", "mean": [0.0], "std": [1.0]}
    # the stored logits are the model's own output on the same (clean) inputs
    from ncprobe.data.datasets import load_dataset

    ds = load_dataset("digits")
    out = acts["train/outputs"]
    samples = out["sample"].values
    with torch.no_grad():
        want = model(torch.from_numpy(ds.images["train"][samples])).numpy()
    np.testing.assert_allclose(out["logits"].sel(condition="clean").values[0], want,
                               rtol=1e-5, atol=1e-5)
    # W h + b = logits at the layer that feeds the classifier, for every condition
    layer = acts["classifier"].attrs["layer"]
    h = acts[f"train/layers/{layer}"]["features"].values[0].astype(np.float64)
    w, b = acts["classifier"]["weight"].values[0], acts["classifier"]["bias"].values[0]
    np.testing.assert_allclose(h @ w.T + b, out["logits"].values[0], rtol=1e-4, atol=1e-4)
    assert np.isfinite(metrics["summary"]["nc1"].sel(grouping="label").values).all()


def test_a_model_that_normalises_itself_gets_no_second_normalisation(tmp_path):
    """--normalize none leaves the input as pixels: the model's own first op normalises."""
    from ncprobe.data.datasets import load_dataset
    from ncprobe.extract.extraction.plan import ExtractConfig, plan_checkpoints

    torch.manual_seed(0)
    torch.save(build_model("mlp", (1, 8, 8), 10, (0.3,), (0.4,)).state_dict(),
               tmp_path / "m.pt")
    (tmp_path / "m.json").write_text(json.dumps({"arch": "mlp", "dataset": "digits"}))
    for spec, mean, std in (("none", 0.0, 1.0), ("0.25/0.5", 0.25, 0.5), (None, 0.3, 0.4)):
        model = plan_checkpoints(ExtractConfig(checkpoints=[str(tmp_path / "m.pt")],
                                               normalize=spec), "cpu").model
        assert float(model.normalize.mean) == pytest.approx(mean)
        assert float(model.normalize.std) == pytest.approx(std)
    ds = load_dataset("digits")
    assert ds.mean != (0.3,)  # "dataset" would give the digits statistics instead


def test_a_classifier_that_is_not_the_last_linear_is_named_and_its_input_captured():
    from ncprobe.extract.models import ModelError

    model = build_model("tests.user_models:heads", (1, 8, 8), 10, (0.0,), (1.0,),
                        classifier="head")
    assert model.classifier == "net.head" and model.feature_layer == "penultimate"
    assert model.capture_points["penultimate"] == "net.head:input"
    # by default the last nn.Linear with the class count (here the calibration layer)
    default = build_model("tests.user_models:heads", (1, 8, 8), 10, (0.0,), (1.0,))
    assert default.classifier == "net.calibration"
    assert default.capture_points["penultimate"] == "net.calibration:input"
    with pytest.raises(ModelError, match="`classifier` 'nope' is not an nn.Linear of it; its "
                                         r"nn.Linear modules: body.1 \(32 outputs\), head "
                                         r"\(10 outputs\), calibration \(10 outputs\)"):
        build_model("tests.user_models:heads", (1, 8, 8), 10, (0.0,), (1.0,),
                    classifier="nope")


def test_a_classifier_input_that_is_no_modules_output_is_captured_exactly():
    """The classifier receives 2 x body(x), which no module outputs: the pre-hook on the
    classifier records exactly that, so W h + b is the logits."""
    from ncprobe.extract.extraction.capture import LayerCapture

    torch.manual_seed(0)
    model = build_model("tests.user_models:scaled", (1, 8, 8), 10, (0.0,), (1.0,)).eval()
    x = torch.rand(5, 1, 8, 8)
    with LayerCapture(model, model.capture_points) as cap, torch.no_grad():
        logits = model(x)
        body = model.net.body(x)
    torch.testing.assert_close(cap.outputs["penultimate"], 2 * body)
    fc = model.classifier_module()
    torch.testing.assert_close(cap.outputs["penultimate"] @ fc.weight.T + fc.bias, logits)


@pytest.mark.slow
def test_the_python_api_writes_the_clis_store_bitwise(digits_checkpoints, tmp_path):
    from ncprobe.data.datasets import load_dataset
    from ncprobe.data.store.reader import store_arrays
    from ncprobe.extract.api import extract_model
    from ncprobe.extract.extraction.plan import ExtractConfig, plan_checkpoints

    ck = digits_checkpoints / "epoch-0002.pt"
    attacks = ["clean", "pgd:eps=0.1,steps=3", "noise:kind=gaussian,eps=0.5"]
    assert extract(["--checkpoint", str(ck), "--limit", "120", "--out", str(tmp_path / "cli.zarr"),
                    "--no-progress", *[a for x in attacks for a in ("--attack", x)]]) == 0
    model = plan_checkpoints(ExtractConfig(checkpoints=[str(ck)]), "cpu").model
    ds = load_dataset("digits")
    extract_model(model, {s: torch.from_numpy(ds.images[s]) for s in ds.splits},
                  {s: ds.labels[s] for s in ds.splits}, tmp_path / "api.zarr", attacks=attacks,
                  limit=120, epoch=2, progress=False)
    a, b = store_arrays(tmp_path / "cli.zarr"), store_arrays(tmp_path / "api.zarr")
    assert a.keys() == b.keys() and len(a) > 20
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)  # bitwise


def test_features_of_a_model_in_memory_without_writing(tmp_path, monkeypatch):
    from ncprobe.extract.api import extract_features
    from tests.user_models import small

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = small(num_classes=3, width=8).eval()
    x = torch.rand(30, 1, 8, 8)
    y = torch.arange(30) % 3
    out = extract_features(model, x, y, attacks=["clean", "fgsm:eps=0.05"])
    assert list(tmp_path.iterdir()) == []  # nothing written
    assert set(out.data_vars) >= {"0", "1", "2", "3", "logits", "pred"}
    assert out["2"].dims == ("condition", "sample", "feature_2")
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(out["logits"].sel(condition="clean").values, want, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(out["label"].values, y.numpy())
    assert out.attrs["model"]["feature_layer"] == "penultimate"
    np.testing.assert_array_equal(out["penultimate"].values, out["2"].values)
