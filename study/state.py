"""Where each model of a study stands: its folder, its record, its lock.

A model's folder ``<study>/models/<name>/`` holds ``acts.zarr``, ``metrics.zarr`` (and
``metrics.csv``), ``record.json`` and, for a model the study trains, ``train/``. The record says
how the last run of the model ended; a model counts as done only when its record says so for
the manifest's current settings *and* both stores are complete with the recorded fingerprint,
so a deleted or half-rewritten store is never taken for finished. A run holds the model's lock
(``.<name>.lock`` beside the folder, the stores' own kind of lock) while it works on it.
Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import zarr

from ncprobe.data import schema
from ncprobe.data.store.lock import StoreLock, StoreLockedError

from .manifest import Manifest, ModelEntry

DONE, FAILED, RUNNING, NOT_STARTED, CHANGED = ("done", "failed", "running", "not started",
                                               "changed")


def model_folder(manifest: Manifest, name: str) -> Path:
    return manifest.folder / "models" / name


def acts_path(manifest: Manifest, name: str) -> Path:
    return model_folder(manifest, name) / "acts.zarr"


def metrics_path(manifest: Manifest, name: str) -> Path:
    return model_folder(manifest, name) / "metrics.zarr"


def model_lock(manifest: Manifest, name: str) -> StoreLock:
    return StoreLock(model_folder(manifest, name))


def read_record(manifest: Manifest, name: str) -> dict:
    path = model_folder(manifest, name) / "record.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write_record(manifest: Manifest, name: str, record: dict) -> None:
    """Replace the record atomically: a killed run leaves the old one or the new one."""
    folder = model_folder(manifest, name)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".record.json.{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp, folder / "record.json")


def _attrs(path: Path) -> dict:
    try:
        return dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception:  # noqa: BLE001 - absent or unreadable: not a finished store
        return {}


def stores_finished(manifest: Manifest, entry: ModelEntry, record: dict) -> bool:
    """Both stores complete, the activation store with the fingerprint the record holds and
    the metrics store computed from it (nothing is read but their root attributes)."""
    acts = _attrs(acts_path(manifest, entry.name))
    metrics = _attrs(metrics_path(manifest, entry.name))
    return (acts.get("schema") == schema.ACTIVATIONS_SCHEMA and acts.get("complete") is True
            and acts.get("fingerprint") == record.get("fingerprint") is not None
            and metrics.get("schema") == schema.METRICS_SCHEMA
            and metrics.get("complete") is True
            and metrics.get("source") == str(acts_path(manifest, entry.name)))


def is_done(manifest: Manifest, entry: ModelEntry) -> bool:
    record = read_record(manifest, entry.name)
    return (record.get("status") == DONE
            and record.get("signature") == entry.signature(manifest.protocol)
            and stores_finished(manifest, entry, record))


@dataclass(frozen=True)
class ModelStatus:
    name: str
    status: str  # DONE, FAILED, RUNNING, NOT_STARTED or CHANGED
    detail: str = ""


def status(manifest: Manifest) -> list[ModelStatus]:
    """Every model's status, from its record, its stores and its lock."""
    out = []
    for entry in manifest.models:
        record = read_record(manifest, entry.name)
        lock = model_lock(manifest, entry.name)
        try:
            lock.acquire()
        except StoreLockedError as e:
            holder = re.search(r"\((pid [^)]*)\)", str(e))  # who holds it, as the lock says
            out.append(ModelStatus(entry.name, RUNNING, holder[1] if holder else ""))
            continue
        else:
            lock.release()
        if not record:
            out.append(ModelStatus(entry.name, NOT_STARTED))
        elif record.get("signature") != entry.signature(manifest.protocol):
            out.append(ModelStatus(entry.name, CHANGED, "the manifest changed since its last "
                                   "run; the next run does it again"))
        elif record.get("status") == FAILED:
            out.append(ModelStatus(entry.name, FAILED, record.get("error", "")))
        elif record.get("status") == DONE and stores_finished(manifest, entry, record):
            out.append(ModelStatus(entry.name, DONE, f"{record.get('seconds', 0):.0f} s"))
        else:
            out.append(ModelStatus(entry.name, NOT_STARTED, "interrupted; the next run "
                                   "finishes it"))
    return out
