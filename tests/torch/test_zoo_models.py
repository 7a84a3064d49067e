"""Models from the zoos: torchvision, timm, Lightning, Hugging Face and RobustBench shapes.

For every family: the stored clean logits are the model's own output on the same inputs,
``W h + b`` at the classifier's input (``penultimate``) is the logits for every condition,
and ``nc-analyze`` runs on the store. torchvision and timm are stand-ins with their real
signatures (see tests/zoo_models.py); the Hugging Face models are real ``transformers``
models with tiny configs.
"""

import argparse
import sys

import numpy as np
import pytest
import torch
import xarray as xr

from ncprobe.analyze.cli import main as analyze
from ncprobe.extract.cli import main as extract
from tests import zoo_models as zm
from tests.torch.test_foreign_models import _randomised  # random BatchNorm statistics

pytestmark = pytest.mark.torch


@pytest.fixture
def zoo(monkeypatch):
    """torchvision and timm as importable packages with their real factory signatures."""
    tv = zm.fake_torchvision()
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", tv.models)
    monkeypatch.setitem(sys.modules, "timm", zm.fake_timm())


def extract_and_check(tmp_path, net, args, *, mean=0.0, std=1.0, logits_of=None):
    """Extract digits (clean and FGSM) with ``args``, analyse, and check the store against
    ``net`` (already holding the checkpoint's weights): its logits, and W h + b. Returns
    the activation store and (largest logits difference, W h + b relative error)."""
    from ncprobe.data.datasets import load_dataset

    store, metrics = tmp_path / "acts.zarr", tmp_path / "m.zarr"
    assert extract(["--dataset", "digits", "--limit", "40", "--attack", "clean",
                    "--attack", "fgsm:eps=0.05", "--out", str(store), "--no-progress",
                    *args]) == 0
    assert analyze([str(store), "--out", str(metrics), "--no-progress"]) == 0
    acts = xr.open_datatree(store, engine="zarr")
    out = acts["train/outputs"]
    x = torch.from_numpy(load_dataset("digits").images["train"][out["sample"].values])
    with torch.no_grad():
        own = net.eval()((x - mean) / std)
    own = (logits_of or (lambda o: o))(own).numpy()
    stored = out["logits"].sel(condition="clean").values[0]
    diff = float(np.abs(stored - own).max())
    np.testing.assert_allclose(stored, own, rtol=1e-5, atol=1e-5)
    layer = acts["classifier"].attrs["layer"]
    assert layer == acts.attrs["model"]["feature_layer"] == "penultimate"
    h = acts[f"train/layers/{layer}"]["features"].values[0].astype(np.float64)
    w = acts["classifier"]["weight"].values[0].astype(np.float64)
    b = acts["classifier"]["bias"].values[0].astype(np.float64)
    logits = out["logits"].values[0].astype(np.float64)
    err = float(np.abs(h @ w.T + b[:, None].T - logits).max() / np.abs(logits).max())
    assert err < 1e-5, err
    m = xr.open_datatree(metrics, engine="zarr")
    assert np.isfinite(m["summary"]["nc1"].sel(split="train", grouping="label").values).all()
    return acts, (diff, err)


def test_torchvision_resnet_by_name_gets_the_class_count(tmp_path, zoo):
    torch.manual_seed(0)
    net = _randomised(zm.resnet18(num_classes=10))
    torch.save(net.state_dict(), tmp_path / "r.pt")
    acts, _ = extract_and_check(tmp_path, net, ["--checkpoint", str(tmp_path / "r.pt"),
                                                "--arch", "torchvision:resnet18",
                                                "--normalize", "none"])
    assert acts.attrs["layers"] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2",
                                    "layer3", "layer4", "avgpool", "penultimate", "fc"]
    assert acts.attrs["model"]["classifier"] == "net.fc"


def test_torchvision_factory_path_passes_num_classes_through_kwargs(tmp_path, zoo):
    torch.manual_seed(0)
    net = _randomised(zm.resnet18(num_classes=10))
    torch.save(net.state_dict(), tmp_path / "r.pt")
    extract_and_check(tmp_path, net, ["--checkpoint", str(tmp_path / "r.pt"), "--arch",
                                      "torchvision.models:resnet18", "--normalize", "none",
                                      "--layers", "layer?,penultimate"])


def test_densenet_in_place_relu_before_pooling_is_not_the_feature_layer(tmp_path, zoo):
    """The old search matched ``features`` (its hooked output was changed in place later);
    the pre-hook captures what the classifier receives, and ``features.norm5`` keeps its
    pre-ReLU values."""
    torch.manual_seed(0)
    net = _randomised(zm.densenet121(num_classes=10))
    torch.save(net.state_dict(), tmp_path / "d.pt")
    acts, _ = extract_and_check(tmp_path, net, ["--checkpoint", str(tmp_path / "d.pt"),
                                                "--arch", "torchvision:densenet121",
                                                "--normalize", "none", "--layers",
                                                "features.denseblock*,features.norm5,all"])
    assert {"features.denseblock1", "features.denseblock2", "classifier"} <= set(
        acts.attrs["layers"])
    norm5 = acts["train/layers/features.norm5"]["features"].values[0, 0]
    assert (norm5 < 0).any()  # stored before the in-place ReLU


def test_a_head_inside_a_sequential(tmp_path, zoo):
    torch.manual_seed(0)
    net = _randomised(zm.mobilenet_v3_small(num_classes=10))
    torch.save({"state_dict": net.state_dict(), "epoch": 7}, tmp_path / "m.pt")
    acts, _ = extract_and_check(tmp_path, net, ["--checkpoint", str(tmp_path / "m.pt"),
                                                "--arch", "torchvision:mobilenet_v3_small",
                                                "--normalize", "none"])
    assert acts.attrs["model"]["classifier"] == "net.classifier.3"
    assert acts["train/layers/penultimate"]["features"].shape[-1] == 24


def _timm_train_checkpoint(net, path, arch):
    """What timm's train.py CheckpointSaver writes: args as an argparse.Namespace."""
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    torch.save({"epoch": 2, "arch": arch, "state_dict": net.state_dict(),
                "optimizer": opt.state_dict(), "version": 2,
                "args": argparse.Namespace(model=arch, lr=0.1, epochs=2, aa=None,
                                           mean=None, std=None, num_classes=10),
                "metric": 12.5, "state_dict_ema": net.state_dict()}, path)


def test_timm_vision_transformer_from_its_train_script(tmp_path, zoo):
    """A top-level ``norm`` module, a class token, token outputs and --normalize auto."""
    torch.manual_seed(0)
    net = zm.VisionTransformer(num_classes=10).eval()
    _timm_train_checkpoint(net, tmp_path / "last.pth.tar", "vit_tiny_patch4")
    acts, _ = extract_and_check(tmp_path, net, ["--checkpoint", str(tmp_path / "last.pth.tar"),
                                                "--arch", "timm:vit_tiny_patch4",
                                                "--normalize", "auto"], mean=0.25, std=0.5)
    layers = acts.attrs["layers"]
    assert layers == ["patch_embed", "blocks.0", "blocks.1", "blocks.2", "norm",
                      "penultimate", "head"]
    assert acts.attrs["model"]["normalization"] == {
        "mode": "auto (timm pretrained_cfg)", "mean": [0.25], "std": [0.5]}
    spec = {name: red for name, _, red in acts.attrs["config"]["layers"]}
    assert spec["blocks.0"] == spec["norm"] == "cls" and spec["penultimate"] == "flatten"
    # the class token of the final norm is what the head receives
    np.testing.assert_array_equal(acts["train/layers/norm"]["features"].values,
                                  acts["train/layers/penultimate"]["features"].values)
    assert acts["train/layers/blocks.1"]["features"].shape[-1] == 16


def test_timm_create_model_factory_form_and_the_ema_weights(tmp_path, zoo):
    torch.manual_seed(0)
    net = _randomised(zm.ResNet(num_classes=10))
    _timm_train_checkpoint(net, tmp_path / "model_best.pth.tar", "resnet18")
    extract_and_check(tmp_path, net, ["--checkpoint", str(tmp_path / "model_best.pth.tar"),
                                      "--arch", "timm:create_model", "--arch-kwargs",
                                      "model_name=resnet18", "--checkpoint-key",
                                      "state_dict_ema", "--normalize", "none"])


def test_token_reductions_mean_and_flatten_on_request(tmp_path, zoo):
    from ncprobe.extract.extraction.reduction import Reducer

    x = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    torch.testing.assert_close(Reducer("cls", (5, 3), "b")(x), x[:, 0])
    torch.testing.assert_close(Reducer("mean", (5, 3), "b")(x), x.mean(1))
    assert Reducer("mean", (5, 3), "b").dim == 3


def _lightning_checkpoint(net_state, path, prefix="model."):
    """A Lightning 2.x ``last.ckpt``: the LightningModule's state dict (its attribute as
    prefix, the loss's buffer beside it) with the Trainer's state."""
    state = {f"{prefix}{k}": v for k, v in net_state.items()}
    state["criterion.weight"] = torch.ones(10)
    torch.save({"epoch": 1, "global_step": 24, "pytorch-lightning_version": "2.4.0",
                "state_dict": state,
                "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {
                    "total": {"ready": 2, "completed": 1}}}},
                "callbacks": {"ModelCheckpoint{'monitor': None, 'mode': 'min'}": {
                    "best_model_score": None, "dirpath": "/runs/ckpts", "last_model_path": ""}},
                "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}],
                "lr_schedulers": [], "hparams_name": "kwargs",
                "hyper_parameters": {"lr": 0.1, "num_classes": 10}}, path)


def test_lightning_checkpoint_into_the_network_and_into_the_module(tmp_path, zoo):
    from ncprobe.extract.cli import main

    torch.manual_seed(0)
    lit = zm.LitClassifier(num_classes=10)
    _randomised(lit.model)
    _lightning_checkpoint(lit.model.state_dict(), tmp_path / "last.ckpt")
    extract_and_check(tmp_path / "net", lit.model, [
        "--checkpoint", str(tmp_path / "last.ckpt"), "--arch", "tests.zoo_models:resnet18",
        "--normalize", "none"])
    extract_and_check(tmp_path / "explicit", lit.model, [
        "--checkpoint", str(tmp_path / "last.ckpt"), "--arch", "tests.zoo_models:resnet18",
        "--normalize", "none", "--strip-prefix", "model."])
    # the LightningModule itself: the walk goes through its only child with parameters
    acts, _ = extract_and_check(tmp_path / "module", lit, [
        "--checkpoint", str(tmp_path / "last.ckpt"), "--arch",
        "tests.zoo_models:LitClassifier", "--normalize", "none"])
    assert "model.layer4" in acts.attrs["layers"]
    assert main(["--checkpoint", str(tmp_path / "last.ckpt"), "--dataset", "digits",
                 "--arch", "tests.zoo_models:resnet18", "--strip-prefix", "net.",
                 "--out", str(tmp_path / "no.zarr")]) == 2
    assert not (tmp_path / "no.zarr").exists()


def test_robustbench_style_model_with_a_head_named_logits(tmp_path):
    torch.manual_seed(0)
    net = _randomised(zm.WideResNetRB(num_classes=10))
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}},
               tmp_path / "Standard.pt")
    acts, _ = extract_and_check(tmp_path, net, ["--checkpoint", str(tmp_path / "Standard.pt"),
                                                "--arch", "tests.zoo_models:WideResNetRB",
                                                "--normalize", "none"])
    assert "logits" in acts.attrs["layers"]  # a layer named logits beside the outputs
    np.testing.assert_array_equal(acts["train/layers/logits"]["features"].values,
                                  acts["train/outputs"]["logits"].values)


@pytest.mark.parametrize(("factory", "key", "pick"), [
    ("LogitsAndFeatures", None, lambda o: o[0]),
    ("DictOutput", "scores", lambda o: o["scores"])])
def test_outputs_that_are_not_a_tensor(tmp_path, factory, key, pick):
    torch.manual_seed(0)
    net = getattr(zm, factory)(num_classes=10).eval()
    torch.save(net.state_dict(), tmp_path / "n.pt")
    args = ["--checkpoint", str(tmp_path / "n.pt"), "--arch", f"tests.zoo_models:{factory}",
            "--normalize", "none"] + (["--output-key", key] if key else [])
    extract_and_check(tmp_path, net, args, logits_of=pick)


def _hf_folder(tmp_path, kind):
    """A tiny real transformers image classifier saved as from_pretrained reads it, with an
    image processor config holding its normalisation."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if kind == "vit":
        config = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=1,
                                        hidden_size=16, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=32,
                                        num_labels=10)
        net = transformers.ViTForImageClassification(config)
    else:
        config = transformers.ResNetConfig(num_channels=1, embedding_size=8,
                                           hidden_sizes=[8, 16], depths=[1, 1],
                                           layer_type="basic", num_labels=10)
        net = transformers.ResNetForImageClassification(config)
    net.eval()
    folder = tmp_path / f"hf-{kind}"
    net.save_pretrained(folder)
    transformers.ViTImageProcessor(image_mean=[0.3], image_std=[0.4]).save_pretrained(folder)
    return net, folder


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_hugging_face_folders_offline(tmp_path, kind):
    net, folder = _hf_folder(tmp_path, kind)
    acts, _ = extract_and_check(tmp_path, net, ["--arch", f"hf:{folder}", "--normalize",
                                                "auto"],
                                mean=0.3, std=0.4, logits_of=lambda o: o.logits)
    layers = acts.attrs["layers"]
    if kind == "vit":
        # transformers 5 names the blocks vit.layers.N (the files keep encoder.layer.N)
        blocks = [name for name in layers if name.startswith("vit.")]
        assert len(blocks) == 4 and blocks[-1] == "vit.layernorm"
        spec = {name: red for name, _, red in acts.attrs["config"]["layers"]}
        assert spec[blocks[1]] == "cls"
    else:
        assert acts.attrs["model"]["classifier"] == "net.classifier.1"  # Sequential head
        assert {"resnet.encoder.stages.0", "resnet.encoder.stages.1"} <= set(layers)


def test_features_of_a_hugging_face_transformer_in_memory(tmp_path):
    from ncprobe.extract.api import extract_features

    net, _ = _hf_folder(tmp_path, "vit")
    x, y = torch.rand(20, 1, 8, 8), torch.arange(20) % 10
    out = extract_features(net, x, y, n_classes=10)
    with torch.no_grad():
        want = net(x).logits.numpy()
    np.testing.assert_allclose(out["logits"].sel(condition="clean").values, want, rtol=1e-5,
                               atol=1e-5)
    h = out["penultimate"].sel(condition="clean").values.astype(np.float64)
    w = net.classifier.weight.detach().double().numpy()
    np.testing.assert_allclose(h @ w.T + net.classifier.bias.detach().double().numpy(), want,
                               rtol=1e-4, atol=1e-5)


def test_the_last_linear_with_the_class_count_is_checked_against_the_logits():
    """A default classifier whose W h + b is not the model's output is refused, a named one
    is taken and the difference recorded."""
    from ncprobe.data.datasets import load_dataset
    from ncprobe.extract.extraction.plan import ExtractConfig, plan_module
    from ncprobe.extract.models import ModelError

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(64, 10)

        def forward(self, x):
            return 3 * self.fc(x.flatten(1))

    ds = load_dataset("digits")
    with pytest.raises(ModelError, match=r"W h \+ b of its last nn.Linear with 10 outputs, "
                                         r"'fc', differs from the model's logits"):
        plan_module(Scaled(), ds, ExtractConfig(checkpoints=[]), "cpu")
    plan = plan_module(Scaled(), ds, ExtractConfig(checkpoints=[], classifier="fc"), "cpu")
    assert plan.attrs["model"]["classifier_relative_error"] == pytest.approx(2 / 3, rel=1e-3)


def test_normalize_auto_for_a_timm_model_in_memory():
    from ncprobe.extract.api import extract_features

    torch.manual_seed(0)
    net = zm.fake_timm().create_model("vit_tiny_patch4", num_classes=10).eval()
    x, y = torch.rand(12, 1, 8, 8), torch.arange(12) % 10
    out = extract_features(net, x, y, n_classes=10, normalize="auto")
    assert out.attrs["model"]["normalization"] == {
        "mode": "auto (timm pretrained_cfg)", "mean": [0.25], "std": [0.5]}
    with torch.no_grad():
        want = net((x - 0.25) / 0.5).numpy()
    np.testing.assert_allclose(out["logits"].sel(condition="clean").values, want, rtol=1e-5,
                               atol=1e-6)
