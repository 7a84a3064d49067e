"""nc-extract end to end on a small digits model: store contract, resume, bad input."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import xarray as xr
import zarr

from ncprobe.data.datasets import load_dataset
from ncprobe.data.datasets.subsets import stratified_subset
from ncprobe.data.store.layout import StoreLayout
from ncprobe.extract.checkpoints import load_state_dict
from ncprobe.extract.cli import main
from ncprobe.extract.extraction import pipeline as extraction
from ncprobe.extract.models import build_model
from tests.helpers import store_arrays

ATTACKS = ["clean", "pgd:norm=linf,eps=0.1,steps=3", "pgd:norm=linf,eps=0.1,steps=3,target=next",
           "noise:kind=gaussian,eps=0.5"]


def cfg(ckpt, **kw):
    base = dict(checkpoints=[str(ckpt / "epoch-*.pt")], attacks=ATTACKS, limit=60,
                batch_size=16, chunk_samples=25)
    base.update(kw)
    return extraction.ExtractConfig(**base)


@pytest.fixture(scope="module")
def store(ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("st") / "acts.zarr"
    extraction.extract_store(cfg(ckpt), out, progress=False)
    return out


PLAIN = """
import sys, xarray as xr
t = xr.open_datatree(sys.argv[1], engine="zarr")
f = t["test/layers/block4"]["features"]
print(f.dims, f.shape, t.attrs["schema"], t.attrs["complete"])
assert not any(m.split(".")[0] in ("data", "extract", "analyze", "plots") for m in sys.modules)
"""


def test_store_opens_with_plain_xarray_without_ncprobe(store):
    out = subprocess.run([sys.executable, "-W", "error", "-c", PLAIN, str(store)],
                         capture_output=True, text=True, cwd="/", timeout=120)
    assert out.returncode == 0, out.stderr
    assert "('checkpoint', 'condition', 'sample', 'feature') (2, 4, 60, 256)" in out.stdout
    assert "ncprobe-activations/1 True" in out.stdout


def test_features_are_the_model_activations(store, ckpt):
    t = xr.open_datatree(store, engine="zarr")
    ds = load_dataset("digits")
    idx = stratified_subset(ds.labels["test"], limit=60)
    assert t["test/layers/block4"]["sample"].values.tolist() == idx.tolist()
    m = build_model("mlp", (1, 8, 8), 10, ds.mean, ds.std).eval()
    m.load_state_dict(load_state_dict(ckpt / "epoch-0002.pt"))
    x = torch.from_numpy(ds.images["test"][idx])
    with torch.no_grad():
        b1 = m.net.block1(m.net.flatten(m.normalize(x)))
        logits = m(x)
    feats = t["test/layers/block1"]["features"].sel(checkpoint=2, condition="clean").values
    np.testing.assert_allclose(feats, b1.numpy(), rtol=1e-5, atol=1e-6)
    out = t["test/outputs"].to_dataset().sel(checkpoint=2)
    np.testing.assert_allclose(out["logits"].sel(condition="clean").values, logits.numpy(),
                               rtol=1e-5, atol=1e-6)
    assert (out["pred"].values == out["logits"].values.argmax(-1)).all()
    np.testing.assert_array_equal(out["target"].sel(condition="pgd-linf-0.1-next").values,
                                  (t["test/outputs"]["label"].values + 1) % 10)
    assert (out["target"].sel(condition="pgd-linf-0.1").values == -1).all()
    pn = out["perturbation_norm"]
    assert float(pn.sel(condition="clean").max()) == 0
    assert float(pn.sel(condition="pgd-linf-0.1").max()) <= 0.1 + 1e-6
    w = t["classifier"]["weight"].sel(checkpoint=2).values
    np.testing.assert_array_equal(w, m.net.fc.weight.detach().numpy())
    assert t["classifier"].attrs["layer"] == "block4"
    attrs = t.attrs
    assert attrs["layers"] == ["block1", "block2", "block3", "block4", "logits"]
    assert [c["name"] for c in attrs["conditions"]][1] == "pgd-linf-0.1"
    assert attrs["model"]["checkpoints"][0]["sha256"]
    assert t["test/layers/block2"].attrs["depth"] == 1


def test_resume_after_interruption_mid_write_equals_uninterrupted(ckpt, store, tmp_path,
                                                                  monkeypatch):
    out = tmp_path / "cut.zarr"
    real = extraction.ActivationStoreWriter.write_block
    calls = {"n": 0}

    def crash(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5:  # in the middle: some blocks on disk, the rest not
            raise OSError("disk went away")
        return real(self, *a, **k)

    monkeypatch.setattr(extraction.ActivationStoreWriter, "write_block", crash)
    with pytest.raises(OSError, match="disk went away"):
        extraction.extract_store(cfg(ckpt), out, progress=False)
    assert zarr.open_group(str(out), mode="r").attrs["complete"] is False
    monkeypatch.setattr(extraction.ActivationStoreWriter, "write_block", real)
    extraction.extract_store(cfg(ckpt, batch_size=7), out, progress=False)  # another batch size too
    a, b = store_arrays(store), store_arrays(out)
    assert a.keys() == b.keys()
    for k in a:
        if a[k].dtype.kind == "f":
            np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-5, err_msg=k)
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_layout_failing_in_the_writer_thread_is_raised_and_redone(ckpt, store, tmp_path,
                                                                  monkeypatch):
    """The layout is created by the writer thread beside the first block: its error must
    reach the caller, release the lock and leave a store that a rerun recreates."""
    out = tmp_path / "nolayout.zarr"

    def fail(self, path):
        raise OSError("no space left on device")

    monkeypatch.setattr(StoreLayout, "create", fail)
    with pytest.raises(OSError, match="no space left"):
        extraction.extract_store(cfg(ckpt), out, progress=False)
    assert zarr.open_group(str(out), mode="r").attrs["layout_written"] is False
    monkeypatch.undo()
    extraction.extract_store(cfg(ckpt), out, progress=False)
    a, b = store_arrays(store), store_arrays(out)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_float16_and_reductions(ckpt, tmp_path):
    out = tmp_path / "h.zarr"
    extraction.extract_store(cfg(ckpt, attacks=["clean"], dtype="float16",
                                 layers=["block1", "logits"],
                        project=32, checkpoints=[str(ckpt / "epoch-0001.pt")]), out,
                    progress=False)
    t = xr.open_datatree(out, engine="zarr")
    assert t["train/layers/block1"]["features"].dtype == np.float16
    assert t["train/layers/block1"]["features"].shape[-1] == 32
    assert t["train/layers/block1"].attrs["reduction"] == "flatten+proj:32"
    assert t["train/layers/logits"]["features"].shape[-1] == 10  # not widened


def test_bad_input(ckpt, store, tmp_path, capsys):
    c = str(ckpt / "epoch-0001.pt")
    cases = [
        (["--arch", "cnn"], "does not fit the architecture: missing keys"),
        (["--layers", "block7"], "layer 'block7' not in model; capture points: block1"),
        (["--attack", "cw:eps=1"], "unknown attack 'cw'"),
        (["--attack", "pgd:eps=0.1,steps=0"], "steps must be >= 1"),
        (["--dataset", "cifar10", "--data-root", str(tmp_path)], "cifar10: no batches found"),
        (["--splits", "val"], "split 'val' not in dataset 'digits'"),
    ]
    for extra, message in cases:
        assert main(["--checkpoint", c, "--out", str(tmp_path / "x.zarr"), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (extra, err)
    before = store_arrays(store)
    assert main(["--checkpoint", c, "--out", str(store), "--attack", "clean"]) == 2
    assert "holds a different run" in capsys.readouterr().err
    after = store_arrays(store)
    assert all(np.array_equal(before[k], after[k], equal_nan=True) for k in before)
    assert zarr.open_group(str(store), mode="r").attrs["complete"] is True


def test_list_layers(ckpt, capsys):
    assert main(["--list-layers", "--checkpoint", str(ckpt / "epoch-0001.pt")]) == 0
    out = capsys.readouterr().out
    assert "block4 (feeds classifier)" in out and "(256,)" in out
    row = next(line for line in out.splitlines() if line.startswith("block4"))
    assert row.split()[-2:] == ["flatten", "256"]  # the reduction each layer gets, its dim
    assert main(["--list-layers", "--all-modules", "--checkpoint",
                 str(ckpt / "epoch-0001.pt")]) == 0
    assert "block4.0" in capsys.readouterr().out  # modules at any depth


def test_zarr_api_path_extracts_the_same_store(store, ckpt, tmp_path, monkeypatch):
    """NCPROBE_CHUNK_WRITES=zarr (what an untested zarr gets): every array bitwise, the
    array metadata and the fingerprint as with ncprobe's own chunk files; the store says
    which path wrote it."""
    from ncprobe.data.store.chunk_file import WRITES_ENV, writes_record

    monkeypatch.setenv(WRITES_ENV, "zarr")
    out = tmp_path / "api.zarr"
    extraction.extract_store(cfg(ckpt), out, progress=False)
    want, got = store_arrays(store), store_arrays(out)
    assert want.keys() == got.keys()
    assert all(np.array_equal(want[k], got[k], equal_nan=True) for k in want)
    for meta in sorted(store.rglob("zarr.json")):
        if meta.parent != store:
            assert meta.read_text() == (out / meta.relative_to(store)).read_text(), meta
    a, b = (dict(zarr.open_group(str(p), mode="r").attrs) for p in (store, out))
    assert a["fingerprint"] == b["fingerprint"]
    assert b["chunk_writes"] == [writes_record(False)]
    assert set(a) == set(b)
