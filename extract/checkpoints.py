"""Checkpoints: a state dict ``epoch-NNNN.pt`` with a JSON sidecar, written atomically.

Loading uses ``torch.load(weights_only=True)``: a checkpoint is data and never runs code.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
from pathlib import Path

import torch

from .models import ModelError
from .models.foreign import unwrap
from .models.zoo import hf_state_dict, hf_weights

#: plain-data classes that common trainers pickle beside the weights, allowed through
#: ``torch.load(weights_only=True)``: timm's train.py saves its ``args`` as a Namespace
SAFE_GLOBALS = (argparse.Namespace,)


def sha256(path) -> str:
    """The digest of a checkpoint file (of a Hugging Face folder: of its weight file)."""
    path = hf_weights(path) or path
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file beside ``path``, then rename: never a torn checkpoint."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def checkpoint_path(folder: Path, epoch: int) -> Path:
    return Path(folder) / f"epoch-{epoch:04d}.pt"


def save_checkpoint(model, folder: Path, epoch: int, meta: dict) -> Path:
    """Write ``epoch-NNNN.pt`` (state dict) and ``epoch-NNNN.json`` (meta + sha256)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(folder, epoch)
    atomic_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    sidecar = dict(meta, epoch=epoch, sha256=sha256(path), file=path.name)
    atomic_write_text(path.with_suffix(".json"), json.dumps(sidecar, indent=2, default=str))
    return path


def load_state_dict(path, key: str | None = None) -> dict:
    """The state dict in ``path``, loaded with ``weights_only=True``; one-line errors.

    Accepts what training code commonly saves (:func:`~.models.foreign.unwrap`): a plain
    state dict, one under ``state_dict``/``model``/``model_state_dict``/``net``/``ema`` (or
    ``key``), with ``module.`` and ``_orig_mod.`` prefixes removed; timm's train.py files
    (their ``args`` Namespace is allowed, :data:`SAFE_GLOBALS`), Lightning ``.ckpt`` files,
    ``.safetensors`` files and Hugging Face folders (their weight file). A pickled whole model
    is refused: it is code, not data.
    """
    path = Path(path)
    if path.is_dir() and hf_weights(path) is not None:
        return hf_state_dict(path)
    if not path.is_file():
        raise ModelError(f"checkpoint {str(path)!r} does not exist")
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        text = " ".join(str(e).split()) or type(e).__name__
        module = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if module:
            raise ModelError(
                f"checkpoint {str(path)!r} cannot be loaded as weights only: it holds a "
                f"pickled object ({module[1]}), not a state dict; save the weights with "
                "torch.save(model.state_dict(), path) and name the model's code with `arch`") \
                from None
        first = text.split(". ")[0][:120]  # torch appends paragraphs of advice
        raise ModelError(f"checkpoint {str(path)!r} cannot be loaded as weights only "
                         f"({first}); expected a state dict saved with torch.save") from None
    return unwrap(obj, str(path), key)


def read_sidecar(path) -> dict:
    """The JSON sidecar beside a checkpoint, or {} when there is none."""
    side = Path(path).with_suffix(".json")
    if not side.is_file():
        return {}
    try:
        return json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise ModelError(f"checkpoint sidecar {str(side)!r} is not valid JSON: {e}") from None


def expand_checkpoints(patterns) -> list[Path]:
    """Checkpoint paths from paths and globs, sorted by epoch, each once."""
    out = []
    for p in patterns:
        hits = sorted(glob.glob(str(p))) if any(ch in str(p) for ch in "*?[") else [str(p)]
        if not hits:
            raise ModelError(f"no checkpoint matches {str(p)!r}")
        for h in hits:
            if not Path(h).is_file() and hf_weights(h) is None:
                raise ModelError(f"checkpoint {h!r} does not exist")
        out += [Path(h) for h in hits]
    seen, unique = set(), []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return sorted(unique, key=lambda p: (epoch_of(p), str(p)))


def epoch_of(path) -> int:
    """Epoch from the sidecar, else from ``epoch-NNNN`` in the name, else -1."""
    meta = read_sidecar(path)
    if "epoch" in meta:
        return int(meta["epoch"])
    stem = Path(path).stem
    if stem.startswith("epoch-") and stem[6:].isdigit():
        return int(stem[6:])
    return -1
