"""docs/your-model.md: every recipe runs as written, in a folder holding its files."""

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

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "your-model.md").read_text()


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", DOC, re.S)


def _dedent(block):
    lines = block.splitlines()
    pad = min(len(ln) - len(ln.lstrip()) for ln in lines if ln.strip())
    return "\n".join(ln[pad:] for ln in lines) + "\n"


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.filterwarnings("ignore:empty classes:UserWarning",
                            "ignore:classes with a single sample:UserWarning")
def test_every_recipe_runs_as_written(tmp_path):
    from ncprobe.data.datasets import write_cifar_binary
    from tests.test_foreign_models import RefPreActResNet18

    python = [_dedent(b) for b in _blocks("python")]
    (tmp_path / "mymodels.py").write_text(python[0])
    (tmp_path / "save.py").write_text(python[1])
    (tmp_path / "api.py").write_text(python[2])
    run = {"cwd": tmp_path, "capture_output": True, "text": True, "timeout": 600}
    assert subprocess.run([sys.executable, "save.py"], **run).returncode == 0
    # recipe 4's inputs: a checkpoint of the standard definition and CIFAR-shaped batches
    torch.save(RefPreActResNet18().state_dict(), tmp_path / "preact.pt")
    write_cifar_binary(tmp_path / "cifar", "cifar10", n_train=10, n_test=60)
    commands = [_dedent(b).replace("\\\n", " ") for b in _blocks("bash")]
    assert len(commands) == 5
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "nc-extract"
        done = subprocess.run([sys.executable, "-m", "ncprobe.extract.cli_extract", *argv[1:],
                               "--no-progress"], **run)
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
    assert heads["classifier"].attrs["layer"] == "body"
    done = subprocess.run([sys.executable, "api.py"], **run)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "feature_2" in done.stdout
    assert xr.open_datatree(tmp_path / "api.zarr", engine="zarr").attrs["complete"] is True
