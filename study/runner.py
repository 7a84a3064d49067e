"""Run the models of a study: train (when asked), extract and analyse each, one at a time.

Each model is an independent, resumable job (:func:`run_model`): several runs of one study
(a SLURM array, one per GPU) each take the models no other run holds, and a killed run is
finished by running it again, block by block, with the same stores as an uninterrupted run.
A model that fails is recorded with its one-line reason and the others go on.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field

from ncprobe.data.errors import NcprobeError, for_cli
from ncprobe.data.store.lock import StoreLockedError

from . import state
from .manifest import Manifest, ModelEntry

log = logging.getLogger("ncprobe.study")


@dataclass
class RunResult:
    """What one run did, by model name."""

    done: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # finished before this run
    busy: list = field(default_factory=list)  # held by another run
    failed: dict = field(default_factory=dict)  # name -> one-line reason
    internal: list = field(default_factory=list)  # failures that are bugs (traceback logged)


def _checkpoint(manifest: Manifest, entry: ModelEntry, device: str, progress: bool) -> str:
    """The model's checkpoint: the manifest's, or the last epoch of the training the
    ``[model.train]`` table asks for (trained here, resumed if interrupted)."""
    if entry.checkpoint is not None or entry.train is None:
        return entry.checkpoint
    from ncprobe.extract.checkpoints import checkpoint_path
    from ncprobe.extract.training import TrainConfig, train

    settings = dict(entry.train, dataset=manifest.protocol.dataset,
                    data_root=manifest.protocol.data_root)
    try:
        cfg = TrainConfig(**settings)
    except TypeError as e:
        raise NcprobeError(f"model {entry.name!r}: [model.train] {e}; its keys are nc-train's "
                           "settings (docs/studies.md)") from None
    folder = state.model_folder(manifest, entry.name) / "train"
    train(cfg, folder, resume=True, device=device, progress=progress,
          command=f"nc-study {manifest.path.name} (train {entry.name})")
    return str(checkpoint_path(folder / "checkpoints", cfg.epochs))


def _extract_config(manifest: Manifest, entry: ModelEntry, checkpoint):
    from ncprobe.extract.extraction import ExtractConfig

    p = manifest.protocol
    layers = entry.layers if entry.layers is not None else p.layers
    return ExtractConfig(
        checkpoints=[checkpoint] if checkpoint else [], attacks=list(p.attacks),
        splits=list(p.splits) if p.splits else None,
        layers=list(layers) if layers else None, dataset=p.dataset, data_root=p.data_root,
        arch=entry.arch, batch_size=p.batch_size, limit=p.limit,
        max_per_class=p.max_per_class, seed=p.seed, arch_kwargs=dict(entry.arch_kwargs),
        checkpoint_key=entry.checkpoint_key, classifier=entry.classifier,
        normalize=entry.normalize if entry.normalize is not None else p.normalize,
        output_key=entry.output_key, strip_prefix=entry.strip_prefix,
        pretrained=entry.pretrained, class_map=entry.class_map)


def _work(manifest: Manifest, entry: ModelEntry, device: str, progress: bool) -> dict:
    """Train if asked, extract, analyse; the record of a finished model."""
    import zarr

    from ncprobe.analyze.run import analyze_store
    from ncprobe.extract.extraction import extract_store

    t0 = time.perf_counter()
    acts = state.acts_path(manifest, entry.name)
    checkpoint = _checkpoint(manifest, entry, device, progress)
    # same settings: resumes block by block; other settings (the manifest changed): replaced
    extract_store(_extract_config(manifest, entry, checkpoint), acts, overwrite=True,
                  device=device, progress=progress,
                  command=f"nc-study {manifest.path.name} (model {entry.name})")
    analyze_store(acts, state.metrics_path(manifest, entry.name), progress=progress,
                  overwrite=True)
    fingerprint = zarr.open_group(str(acts), mode="r").attrs["fingerprint"]
    return {"status": state.DONE, "signature": entry.signature(manifest.protocol),
            "fingerprint": fingerprint, "seconds": round(time.perf_counter() - t0, 1)}


def _is_out_of_memory(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or "out of memory" in str(e).lower()


def run_model(manifest: Manifest, entry: ModelEntry, result: RunResult, *, device: str = "auto",
              progress: bool = True) -> None:
    """Run one model unless it is finished or another run holds it; record how it ended."""
    if state.is_done(manifest, entry):
        result.skipped.append(entry.name)
        return
    lock = state.model_lock(manifest, entry.name)
    state.model_folder(manifest, entry.name).mkdir(parents=True, exist_ok=True)
    try:
        lock.acquire()
    except StoreLockedError:
        result.busy.append(entry.name)
        log.info("model %s is being run by another process", entry.name)
        return
    try:
        if state.is_done(manifest, entry):  # finished by another run while we looked
            result.skipped.append(entry.name)
            return
        log.info("model %s: running", entry.name)
        signature = entry.signature(manifest.protocol)
        try:
            record = _work(manifest, entry, device, progress)
        except NcprobeError as e:
            reason = for_cli(str(e.args[0]) if e.args else str(e))
            result.failed[entry.name] = reason
            record = {"status": state.FAILED, "signature": signature, "error": reason}
        except Exception as e:  # noqa: BLE001 - one model's failure must not stop the study
            first = " ".join(str(e).split())[:200]
            if _is_out_of_memory(e):
                reason = f"out of memory: {first}"
            else:
                trace = state.model_folder(manifest, entry.name) / "error.log"
                trace.write_text(traceback.format_exc())
                reason = (f"internal error (a bug in ncprobe): {type(e).__name__}: {first}; "
                          f"traceback in {trace}")
                result.internal.append(entry.name)
            result.failed[entry.name] = reason
            record = {"status": state.FAILED, "signature": signature, "error": reason}
        else:
            result.done.append(entry.name)
        state.write_record(manifest, entry.name, record)
    finally:
        lock.release()


def run_study(manifest: Manifest, only=None, *, device: str = "auto",
              progress: bool = True) -> RunResult:
    """Run every model of ``manifest`` (or those named in ``only``) that is not finished."""
    entries = [manifest.model(n) for n in only] if only else list(manifest.models)
    result = RunResult()
    for entry in entries:
        run_model(manifest, entry, result, device=device, progress=progress)
    return result
