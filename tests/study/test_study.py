"""nc-study end to end on tiny digits models: one command, reruns that do nothing, a broken
model, a killed run, two runs at once, and the study dataset against each model's store."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from ncprobe.study import load_manifest, status
from ncprobe.study.cli import main
from tests.helpers import store_arrays

ROOT = Path(__file__).resolve().parents[2]
TRAIN = 'epochs = 2, lr = 0.05, schedule = "constant"'


def manifest_text(broken: bool = False) -> str:
    text = f"""
[protocol]
dataset = "digits"
attacks = ["clean", "pgd:norm=linf,eps=0.1,steps=3"]
max_per_class = 12
layers = ["block2", "block4"]

[[model]]
name = "st"
training = "standard"
train = {{ mode = "standard", {TRAIN} }}

[[model]]
name = "at"
training = "pgd"
pair = "st"
train = {{ mode = "pgd", eps = 0.1, steps = 2, {TRAIN} }}

[[model]]
name = "trades"
training = "trades"
pair = "st"
reported_robust = 0.5
train = {{ mode = "trades", eps = 0.1, steps = 2, {TRAIN} }}
"""
    if broken:
        text += '\n[[model]]\nname = "lost"\ncheckpoint = "nowhere/epoch-0001.pt"\n'
    return text


def write_manifest(folder: Path, broken: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.toml"
    path.write_text(manifest_text(broken))
    return path


def stores(folder: Path) -> dict:
    """Every array of every model's stores (and the study dataset), by path."""
    out = {}
    for store in sorted((folder / "models").glob("*/*.zarr")):
        for k, v in store_arrays(store).items():
            out[f"{store.relative_to(folder)}/{k}"] = v
    return out


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The study with a broken fourth model, run once."""
    folder = tmp_path_factory.mktemp("study")
    manifest = write_manifest(folder, broken=True)
    rc = main(["run", str(manifest), "--no-progress"])
    return folder, manifest, rc


def test_broken_model_is_listed_and_the_others_finish(finished, capsys):
    folder, manifest, rc = finished
    assert rc == 2  # a model failed on its input
    rows = {s.name: s for s in status(load_manifest(manifest))}
    assert [rows[n].status for n in ("st", "at", "trades")] == ["done"] * 3
    assert rows["lost"].status == "failed"
    assert "nowhere/epoch-0001.pt" in rows["lost"].detail and "\n" not in rows["lost"].detail
    assert main(["status", str(manifest)]) == 0
    out = capsys.readouterr().out
    assert "lost" in out and "failed" in out and "# done 3, failed 1" in out
    tree = xr.open_datatree(folder / "study.study" / "study.zarr", engine="zarr")
    assert list(tree.attrs["failed"]) == ["lost"]
    assert (folder / "study.study" / "report.html").exists()


def test_rerun_does_nothing(finished, capsys):
    folder, manifest, _ = finished
    study = folder / "study.study"
    before = stores(study)
    mtimes = {p: p.stat().st_mtime_ns for p in study.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["run", str(manifest), "--no-progress"]) == 2  # lost fails again
    out, err = capsys.readouterr()
    assert "0 run, 3 already done" in err and "lost" in err
    assert "study.zarr and the report are up to date" in out
    assert_same(before, stores(study))
    changed = [p for p, t in mtimes.items() if p.exists() and p.stat().st_mtime_ns != t
               and "lost" not in p.parts]
    assert not changed, changed


def test_study_dataset_equals_each_models_store(finished):
    """Plain xarray opens study.zarr; its values are those of each model's metrics store."""
    folder, _, _ = finished
    study = folder / "study.study"
    tree = xr.open_datatree(study / "study.zarr", engine="zarr")
    s = tree["summary"]
    assert list(s["model"].values) == ["st", "at", "trades"]
    for coord in ("family", "training", "pair", "source", "feature_dim", "parameters",
                  "clean_acc", "robust_acc", "accuracy", "reported_robust", "n_layers"):
        assert coord in s.coords, coord
    assert list(s["pair"].values) == ["", "st", "st"]
    assert int(s["feature_dim"].sel(model="at")) == 256
    assert int(s["parameters"].sel(model="at")) > 0
    for name in ("st", "at", "trades"):
        m = xr.open_datatree(study / "models" / name / "metrics.zarr", engine="zarr")
        own = m["summary"].to_dataset().sel(layer="block4").isel(checkpoint=-1)
        for var in ("nc1", "ncc_acc", "leap_rate", "net_acc", "nc3"):
            np.testing.assert_array_equal(s[var].sel(model=name).transpose(*own[var].dims)
                                          .values, own[var].values, err_msg=f"{name} {var}")
        acc = own["net_acc"].sel(split="test")
        assert float(s["clean_acc"].sel(model=name)) == float(acc.sel(condition="clean"))
        assert float(s["robust_acc"].sel(model=name)) == float(acc.sel(condition="pgd-linf-0.1"))
    curves = tree["curves"]
    assert curves.sizes["position"] == 2
    np.testing.assert_array_equal(curves["rel_depth"].sel(model="st").values, [0.0, 1.0])
    c = tree["comparison"]
    assert int(c["n_models"].sel(metric="nc1", split="train", condition="clean")) == 3
    assert list(tree["pairs"]["pair"].values) == ["at - st", "trades - st"]


def _run_args(manifest):
    return [sys.executable, "-m", "ncprobe.study.cli", "run", str(manifest), "--no-progress"]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_stores(tmp_path):
    ref = write_manifest(tmp_path / "ref")
    subprocess.run(_run_args(ref), cwd=ROOT, check=True, capture_output=True, timeout=600)
    cut = write_manifest(tmp_path / "cut")
    models = tmp_path / "cut" / "study.study" / "models"
    kills = 0
    for target in ("at", "trades"):  # kill once inside each of two models' work
        p = subprocess.Popen(_run_args(cut), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        t0 = time.monotonic()
        while p.poll() is None and not (models / target / "acts.zarr").exists() \
                and time.monotonic() - t0 < 300:
            time.sleep(0.01)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.communicate()
    assert kills >= 1
    subprocess.run(_run_args(cut), cwd=ROOT, check=True, capture_output=True, timeout=600)
    assert_same(stores(tmp_path / "ref" / "study.study"), stores(tmp_path / "cut" /
                                                                  "study.study"))
    a = xr.open_datatree(tmp_path / "ref" / "study.study" / "study.zarr", engine="zarr")
    b = xr.open_datatree(tmp_path / "cut" / "study.study" / "study.zarr", engine="zarr")
    # the same but for the checkpoints' paths, which name each study's own folder
    xr.testing.assert_identical(a["summary"].to_dataset().drop_vars("checkpoint"),
                                b["summary"].to_dataset().drop_vars("checkpoint"))


@pytest.mark.slow
def test_two_runs_at_once_share_the_models(tmp_path):
    manifest = write_manifest(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    runs = [subprocess.Popen(_run_args(manifest), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [r.communicate(timeout=600) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], [o[1][-2000:] for o in outs]
    counts = [int(o[1].split("nc-study: ", 1)[1].split(" run,")[0]) for o in outs]
    assert sum(counts) == 3, [o[1] for o in outs]  # every model run by exactly one of them
    assert [s.status for s in status(load_manifest(manifest))] == ["done"] * 3
    tree = xr.open_datatree(tmp_path / "study.study" / "study.zarr", engine="zarr")
    assert tree["summary"].sizes["model"] == 3
