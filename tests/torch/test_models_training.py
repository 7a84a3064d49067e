"""Architectures, training modes, checkpoints and nc-train's bad-input handling."""

import json

import pytest
import torch

from ncprobe.data.params import ParameterError
from ncprobe.extract.checkpoints import load_state_dict, sha256
from ncprobe.extract.models import ModelError, build_model, load_state
from ncprobe.extract.training import loop as training
from ncprobe.extract.training.cli import main

ARCH_CASES = [("mlp", (1, 8, 8), ["block1", "block2", "block3", "block4", "logits"], 256),
              ("cnn", (1, 8, 8), ["conv1", "conv2", "conv3", "penultimate", "logits"], 128),
              ("cnn", (1, 28, 28), ["conv1", "conv2", "conv3", "penultimate", "logits"], 128),
              ("preactresnet18", (3, 32, 32), ["stem", "layer1.0", "layer1.1", "layer2.0",
                                               "layer2.1", "layer3.0", "layer3.1", "layer4.0",
                                               "layer4.1", "penultimate", "logits"], 512),
              ("vgg11bn", (3, 32, 32), [f"conv{i}" for i in range(1, 9)]
               + ["penultimate", "logits"], 512)]


@pytest.mark.parametrize(("arch", "shape", "points", "feat_dim"), ARCH_CASES)
def test_architectures_shapes_and_capture_points(arch, shape, points, feat_dim):
    torch.manual_seed(0)
    m = build_model(arch, shape, 10, (0.5,) * shape[0], (0.25,) * shape[0]).eval()
    seen = {}
    hooks = [m.get_submodule(path).register_forward_hook(
        lambda mod, i, o, name=name: seen.__setitem__(name, o.shape))
        for name, path in m.capture_points.items()]
    with torch.no_grad():
        out = m(torch.rand(2, *shape))
    for h in hooks:
        h.remove()
    assert out.shape == (2, 10)
    assert list(m.capture_points) == points == list(seen)  # depth order = execution order
    assert seen[m.feature_layer][1:].numel() == feat_dim
    assert m.classifier_module().in_features == feat_dim
    assert seen["logits"] == (2, 10)


def test_normalisation_is_the_first_module():
    m = build_model("mlp", (1, 8, 8), 10, (0.3,), (0.4,))
    assert next(iter(m.children())).__class__.__name__ == "Normalize"
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(m.normalize(x), (x - 0.3) / 0.4)


def small_cfg(**kw):
    base = dict(dataset="digits", arch="mlp", epochs=3, batch_size=64, lr=0.05,
                schedule="constant", eps=0.1, steps=2)
    base.update(kw)
    return training.TrainConfig(**base)


def test_standard_training_lowers_loss(tmp_path):
    training.train(small_cfg(epochs=4), tmp_path / "r", progress=False)
    log = [json.loads(line) for line in (tmp_path / "r/log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]
    assert log[-1]["test_acc"] > 0.9


@pytest.mark.parametrize(("mode", "attack_bn", "attack_training"),
                         [("pgd", None, True), ("trades", None, False), ("pgd", "eval", False),
                          ("trades", "train", True)])
def test_attack_batchnorm_mode_and_train_mode_for_the_update(mode, attack_bn, attack_training,
                                                             monkeypatch):
    """PGD-AT attacks with BatchNorm in train mode (Madry et al., Rice et al., Su et al.),
    TRADES in eval mode (Zhang et al.); --attack-bn overrides. The update always sees train
    mode, and the running statistics keep moving (Su et al.'s TRADES froze them for good)."""
    modes = []
    real = training.pgd

    def spy(model, *a, **k):
        modes.append(("attack", model.training))
        return real(model, *a, **k)

    monkeypatch.setattr(training, "pgd", spy)
    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 10, (0.3,), (0.4,))
    model.train()
    bn = model.net.block1[1]
    before = bn.running_mean.clone()
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    cfg = small_cfg(mode=mode, attack_bn=attack_bn).validate()
    assert cfg.attack_settings()["bn"] == ("train" if attack_training else "eval")
    loss, _ = training.training_loss(model, x, y, cfg, torch.Generator())
    assert modes == [("attack", attack_training)]
    assert model.training, f"{mode}: model left in eval mode"
    assert not torch.equal(bn.running_mean, before), f"{mode}: BatchNorm stats frozen"
    assert loss.requires_grad


def test_resume_gives_the_same_model_as_an_uninterrupted_run(tmp_path, monkeypatch):
    cfg = small_cfg(epochs=4, mode="pgd", save_epochs=[2])
    training.train(cfg, tmp_path / "full", progress=False)
    calls = {"n": 0}
    real = training.evaluate

    def crash_in_epoch_3(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(training, "evaluate", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        training.train(small_cfg(epochs=4, mode="pgd", save_epochs=[2]), tmp_path / "cut",
                progress=False)
    monkeypatch.setattr(training, "evaluate", real)
    training.train(small_cfg(epochs=4, mode="pgd", save_epochs=[2]), tmp_path / "cut", resume=True,
            progress=False)
    a = load_state_dict(tmp_path / "full/checkpoints/epoch-0004.pt")
    b = load_state_dict(tmp_path / "cut/checkpoints/epoch-0004.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert len((tmp_path / "cut/log.jsonl").read_text().splitlines()) == 4


def test_checkpoint_round_trip_and_sidecar(tmp_path):
    training.train(small_cfg(epochs=2, save_epochs=[1]), tmp_path / "r", progress=False)
    ck = tmp_path / "r/checkpoints/epoch-0001.pt"
    side = json.loads(ck.with_suffix(".json").read_text())
    assert side["sha256"] == sha256(ck) and side["epoch"] == 1 and side["arch"] == "mlp"
    assert set(side["accuracies"]) == {"train_acc", "test_acc"}
    m = build_model("mlp", (1, 8, 8), 10, side["mean"], side["std"]).eval()
    load_state(m, load_state_dict(ck), str(ck))
    assert (tmp_path / "r/checkpoints/epoch-0002.pt").is_file()


def test_checkpoint_keys_mismatch_lists_keys(tmp_path):
    m = build_model("mlp", (1, 8, 8), 10, (0.3,), (0.4,))
    state = m.state_dict()
    state.pop("net.fc.bias")
    state["net.extra.weight"] = torch.zeros(1)
    with pytest.raises(ModelError, match=r"missing keys \[net.fc.bias\], unexpected keys "
                                         r"\[net.extra.weight\]"):
        load_state(m, state, "x.pt")
    torch.save({"w": torch.zeros(1), "f": print}, tmp_path / "evil.pt")
    with pytest.raises(ModelError, match="cannot be loaded as weights only"):
        load_state_dict(tmp_path / "evil.pt")


@pytest.mark.parametrize(("args", "message"), [
    (["--arch", "resnet9000"], "unknown arch 'resnet9000'"),
    (["--dataset", "svhn"], "unknown dataset 'svhn'"),
    (["--mode", "fast"], "--mode must be one of 'standard', 'pgd', 'trades'; got 'fast'"),
    (["--eps", "-0.1"], "--eps must be a number >= 0; got -0.1"),
    (["--epochs", "5", "--save-epochs", "3,9"], r"--save-epochs \[9\] outside the run's 1..5"),
    (["--dataset", "cifar10"], "--data-root is required"),
])
def test_bad_input_one_line_errors(tmp_path, capsys, args, message):
    assert main(["--out", str(tmp_path / "r"), "--epochs", "1", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nc-train: error:")
    import re
    assert re.search(message, err), err


def test_output_folder_rules(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(["--out", out, "--epochs", "1", "--no-progress"]) == 0
    assert main(["--out", out, "--epochs", "1", "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["--out", out, "--epochs", "2", "--no-progress"]) == 2
    assert "differs in: epochs" in capsys.readouterr().err
    assert main(["--out", out, "--epochs", "2", "--no-progress", "--overwrite"]) == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    assert main(["--out", str(tmp_path / "other"), "--epochs", "1"]) == 2
    assert (tmp_path / "other" / "notes.txt").read_text() == "x"


def test_user_factory_model_trains_and_extracts(tmp_path):
    from ncprobe.extract.extraction import ExtractConfig, extract_store

    m = build_model("tests.user_models:tiny", (1, 8, 8), 10, (0.3,), (0.4,))
    assert list(m.capture_points) == ["0", "1", "2", "3", "penultimate"]
    assert m.classifier == "net.3" and m.capture_points["penultimate"] == "net.3:input"
    training.train(small_cfg(arch="tests.user_models:tiny", epochs=2), tmp_path / "r",
                   progress=False)
    ck = tmp_path / "r/checkpoints/epoch-0002.pt"
    extract_store(ExtractConfig(checkpoints=[str(ck)], limit=30, layers=["1", "3"]),
                  tmp_path / "a.zarr", progress=False)
    import xarray as xr

    t = xr.open_datatree(tmp_path / "a.zarr", engine="zarr")
    assert t["test/layers/1"]["features"].shape[-1] == 32
    assert t["classifier"]["weight"].shape == (1, 10, 32)
    with pytest.raises(ModelError, match="cannot import model factory 'nowhere.mod:f'"):
        build_model("nowhere.mod:f", (1, 8, 8), 10, (0.3,), (0.4,))


def test_learning_rate_schedules():
    piece = training.TrainConfig(epochs=400, schedule="piecewise")
    assert [training.lr_factor(piece, e) for e in (0, 99, 100, 149, 150, 399)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])
    multi = training.TrainConfig(epochs=10, schedule="multistep", milestones=[3, 6])
    assert [training.lr_factor(multi, e) for e in (2, 3, 6)] == pytest.approx([1, 0.1, 0.01])
    cos = training.TrainConfig(epochs=10, schedule="cosine")
    assert training.lr_factor(cos, 0) == 1 and training.lr_factor(cos, 5) == pytest.approx(0.5)


def test_sidecar_records_the_attack_batchnorm_mode(tmp_path):
    training.train(small_cfg(mode="pgd", epochs=1, attack_bn="eval"), tmp_path / "r",
                   progress=False)
    side = json.loads((tmp_path / "r/checkpoints/epoch-0001.json").read_text())
    assert side["mode"] == "pgd" and side["attack"]["bn"] == "eval"
    with pytest.raises(ParameterError, match="`attack_bn` must be one of 'train', 'eval', or "
                                             "unset"):
        small_cfg(mode="pgd", attack_bn="frozen")


def test_vgg11bn_is_su_et_als_configuration():
    """Configuration A without the final max-pool: conv8 is a 2x2x512 map whose average is
    the penultimate layer; every convolution has a bias and is followed by BatchNorm."""
    m = build_model("vgg11bn", (3, 32, 32), 10, (0.5,) * 3, (0.25,) * 3).eval()
    seen = {}
    for name in ("conv8", "penultimate"):
        m.get_submodule(m.capture_points[name]).register_forward_hook(
            lambda mod, i, o, name=name: seen.__setitem__(name, o))
    with torch.no_grad():
        m(torch.rand(2, 3, 32, 32))
    assert seen["conv8"].shape == (2, 512, 2, 2)
    torch.testing.assert_close(seen["penultimate"], seen["conv8"].mean(dim=(2, 3)))
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert len(convs) == 8 and all(c.bias is not None for c in convs)
    assert sum(isinstance(mod, torch.nn.MaxPool2d) for mod in m.modules()) == 4
