"""robustbench:NAME on RobustBench-layout checkpoints (tests/fake_packages/robustbench writes
its interface out key for key): each kind of network its zoo holds loads with the model's own
logits and W h + b exact; missing files, ensembles and a package that does not import are
one line each."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from ncprobe.data.datasets import load_dataset, write_cifar_binary
from ncprobe.extract.extraction import ExtractConfig, extract_store
from ncprobe.extract.models import ModelError

FAKE = Path(__file__).resolve().parents[1] / "fake_packages"


@pytest.fixture
def zoo(monkeypatch):
    monkeypatch.syspath_prepend(str(FAKE))
    for name in [m for m in sys.modules if m.split(".")[0] == "robustbench"]:
        monkeypatch.delitem(sys.modules, name)
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    from robustbench.model_zoo.models import model_dicts

    return model_dicts[BenchmarkDataset.cifar_10], ThreatModel


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    return write_cifar_binary(tmp_path_factory.mktemp("cifar"), "cifar10", n_train=20, n_test=24)


def save_entry(zoo, model_dir: Path, name: str, threat: str = "Linf", wrapped: bool = True):
    """Random weights of the entry saved as RobustBench lays them out (DataParallel's
    ``module.`` prefix under ``state_dict``, or a plain state dict)."""
    models, threats = zoo
    torch.manual_seed(len(name))
    net = models[threats(threat)][name]["model"]()
    for m in net.modules():  # running statistics that are not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    path = model_dir / "cifar10" / threat / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    state = net.state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}} if wrapped
               else state, path)
    return net.eval(), path


@pytest.mark.parametrize(("name", "suffix", "wrapped", "classifier"), [
    ("Carmon2019Unlabeled", "", True, "net.fc"),
    ("Gowal2020Uncovering_28_10_extra", "", False, "net.logits"),
    ("Rice2020Overfitting", "@cifar10/Linf", True, "net.linear"),
    ("Timm2023Backed", "", True, "net.model.head.fc"),
])
def test_entries_load_with_their_own_logits(zoo, cifar, tmp_path, name, suffix, wrapped,
                                            classifier):
    net, _ = save_entry(zoo, tmp_path / "models", name, wrapped=wrapped)
    out = tmp_path / "acts.zarr"
    extract_store(ExtractConfig(checkpoints=[str(tmp_path / "models")],
                                arch=f"robustbench:{name}{suffix}", dataset="cifar10",
                                data_root=str(cifar), splits=["test"], attacks=["clean"]),
                  out, progress=False)
    tree = xr.open_datatree(out, engine="zarr")
    model = tree.attrs["model"]
    assert model["arch"] == f"robustbench:{name}@cifar10/Linf"
    assert model["classifier"] == classifier
    assert model["normalization"]["mode"].startswith("none (robustbench")
    assert model["classifier_relative_error"] < 1e-5
    idx = tree["test/outputs"]["sample"].values
    x = torch.from_numpy(load_dataset("cifar10", root=cifar).images["test"][idx])
    with torch.no_grad():
        own = net(x).numpy()
    stored = tree["test/outputs"]["logits"].values[0, 0]
    np.testing.assert_allclose(stored, own, rtol=1e-4, atol=1e-5)


def test_a_checkpoint_file_may_be_named_directly(zoo, cifar, tmp_path):
    _, path = save_entry(zoo, tmp_path / "models", "Carmon2019Unlabeled")
    extract_store(ExtractConfig(checkpoints=[str(path)], arch="robustbench:Carmon2019Unlabeled",
                                dataset="cifar10", data_root=str(cifar), splits=["test"],
                                limit=8), tmp_path / "a.zarr", progress=False)
    assert (tmp_path / "a.zarr" / "zarr.json").exists()


@pytest.mark.parametrize(("arch", "message"), [
    ("robustbench:Carmon2019Unlabeled", "no weights at '{models}/cifar10/Linf/"
     "Carmon2019Unlabeled.pt' (RobustBench's layout MODEL_DIR/cifar10/Linf/"
     "Carmon2019Unlabeled.pt); fetch them with RobustBench's own loader"),
    ("robustbench:Chen2020Adversarial", "is an ensemble of 2 networks"),
    ("robustbench:Rice2020Overfitting", "names several RobustBench entries; choose one: "
     "robustbench:Rice2020Overfitting@cifar10/Linf, robustbench:Rice2020Overfitting@cifar10/L2"),
    ("robustbench:Nobody2099", "RobustBench has no entry 'Nobody2099'"),
    ("robustbench:Carmon2019Unlabeled@cifar10", "expected robustbench:NAME or "
     "robustbench:NAME@DATASET/THREAT"),
])
def test_refusals_are_one_line(zoo, cifar, tmp_path, arch, message):
    (tmp_path / "models").mkdir()
    with pytest.raises(ModelError) as e:
        extract_store(ExtractConfig(checkpoints=[str(tmp_path / "models")], arch=arch,
                                    dataset="cifar10", data_root=str(cifar)),
                      tmp_path / "x.zarr", progress=False)
    assert message.format(models=tmp_path / "models") in str(e.value)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "x.zarr").exists()


def test_a_package_that_does_not_import_says_how_to_install(monkeypatch, cifar, tmp_path):
    monkeypatch.setitem(sys.modules, "robustbench", None)  # what a failed import leaves
    monkeypatch.setitem(sys.modules, "robustbench.model_zoo", None)
    monkeypatch.setitem(sys.modules, "robustbench.model_zoo.models", None)
    with pytest.raises(ModelError, match=r"needs the package 'robustbench', which does not "
                                         r"import here .*pip install "
                                         r"git\+https://github.com/RobustBench/robustbench.git"):
        extract_store(ExtractConfig(checkpoints=[str(tmp_path)], arch="robustbench:X",
                                    dataset="cifar10", data_root=str(cifar)),
                      tmp_path / "x.zarr", progress=False)
