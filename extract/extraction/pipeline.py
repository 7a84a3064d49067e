"""Extraction: attack, capture every layer, write the activation store.

The unit of work is a block (split, checkpoint, condition, sample chunk). Its random numbers
are drawn once from a seed derived from those names, so the store is the same whatever the
batch size and wherever an interrupted run resumes; a rerun skips the blocks already on disk.
:func:`run_plan` walks the blocks of an
:class:`~ncprobe.extract.extraction.plan.ExtractionPlan` in order (checkpoint, split, condition,
chunk), :func:`compute_block` computes one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging

import numpy as np
import torch

from ncprobe.data.errors import NcprobeError
from ncprobe.data.store import StoreError
from ncprobe.data.store.writer import ActivationStoreWriter

from ..attacks import slice_randomness
from ..models import ModelError
from ..runtime import pick_device, set_threads
from . import distributed
from .async_writer import AsyncBlockWriter, BufferPool
from .capture import LayerCapture, probe
from .plan import ExtractConfig, ExtractionPlan, example_inputs, plan_checkpoints
from .reduction import Reducer, default_reduction, has_class_token

log = logging.getLogger("ncprobe.extract")
#: the namespace of the per-sample outputs among a block's buffers (layers have plain names)
OUTPUT = "output"


def _block_seed(*parts) -> int:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def list_layers(cfg: ExtractConfig, all_modules: bool = False) -> tuple[list[tuple], dict]:
    """(name, module path, output shape, reduction, stored dim) for every capturable layer
    (with ``all_modules``, every module the forward pass runs, at any depth), and the input
    normalisation the model applies (:func:`~ncprobe.extract.extraction.plan.normalization`)."""
    dev = torch.device("cpu")
    if all_modules:
        cfg = ExtractConfig(**{**cfg.__dict__, "layers": None})
    plan = plan_checkpoints(cfg, dev)
    model = plan.model
    rows = [(s.name + (" (feeds classifier)" if s.name == model.feature_layer else ""),
             s.module.removeprefix("net."), s.original_shape, s.reduction, s.dim)
            for s in plan.layers]
    if all_modules:
        listed = {s.module for s in plan.layers}
        paths = {n.removeprefix("net."): n for n, _ in model.named_modules()
                 if n.startswith("net.") and n not in listed}
        shapes = probe(model, paths, example_inputs(plan.dataset, dev))
        cls = has_class_token(model)
        for key, shape in shapes.items():
            spec = default_reduction(shape, cls)
            rows.append((key, paths[key.split(".call")[0]].removeprefix("net."), shape, spec,
                         Reducer(spec, shape, key).dim))
    return rows, plan.attrs["model"]["normalization"]


def extract_store(cfg: ExtractConfig, out, *, overwrite: bool = False, device: str = "auto",
                  threads: int | None = None, progress: bool = True, command: str = "",
                  queue_depth: int = 2, repair: bool = False) -> str:
    """Write the activation store ``out`` (docs/store.md) for ``cfg``; resume if it exists.

    Under ``torchrun --nproc-per-node N`` the blocks are shared among the N processes.
    """
    return run(lambda dev: plan_checkpoints(cfg, dev), out, overwrite=overwrite, device=device,
               threads=threads, progress=progress, command=command, queue_depth=queue_depth,
               repair=repair)


def run(make_plan, out, *, overwrite=False, device="auto", threads=None, progress=True,
        command="", queue_depth=2, repair=False) -> str:
    """Pick the device (one per torchrun rank), make the plan on it and run it."""
    rank = distributed.from_environment()
    dev = pick_device(device)
    if dev.type == "cuda" and rank.world > 1:
        dev = torch.device("cuda", rank.local)
    distributed.start(rank, dev)
    try:
        plan = make_plan(dev)
        if plan.settings.amp and dev.type != "cuda":
            raise NcprobeError("`amp` needs a CUDA device (mixed precision is not used on the "
                               "CPU)")
        set_threads(plan.model, dev, threads)
        return run_plan(plan, out, rank, dev, overwrite=overwrite, command=command,
                        progress=progress and rank.main, queue_depth=queue_depth, repair=repair)
    finally:
        distributed.stop(rank)


def _open_writer(plan: ExtractionPlan, out, rank, *, overwrite, repair, command):
    """The store writer; rank 0 creates (or resumes) the store, the others attach to it."""
    cfg, ds = plan.settings, plan.dataset
    fc = plan.model.classifier_module()
    writer = ActivationStoreWriter(
        out, layers=plan.layers, checkpoints=plan.epochs,
        conditions=[s.as_dict() for s in plan.conditions],
        samples={s: (plan.subsets[s], ds.labels[s][plan.subsets[s]]) for s in plan.splits},
        n_classes=ds.n_classes, config=plan.config, attrs={**plan.attrs, "command": command},
        dtype=cfg.dtype, compression=cfg.compression,
        classifier=(plan.model.feature_layer, fc.in_features), chunk_samples=cfg.chunk_samples)
    error = None
    if rank.main:
        try:
            # alone, the layout is created by the writer thread while the first block is
            # computed; other ranks need it on disk before they attach
            writer.open(overwrite=overwrite, repair=repair, defer_layout=rank.world == 1)
        except ValueError as e:
            error = str(e)
    error = distributed.share(rank, error)
    if error is not None:
        raise StoreError(error if rank.main else f"rank 0 could not open the store: {error}")
    if not rank.main:
        writer.attach()
    if writer.repaired:
        log.warning("deleted %d corrupt chunks to rewrite: %s", len(writer.repaired),
                    "; ".join(writer.repaired[:5]))
    return writer


def _buffers(plan: ExtractionPlan, writer, queue_depth, dev) -> BufferPool:
    """Recycled host buffers of the largest block (pinned on CUDA)."""
    cs = max(writer.layout.split_chunk(s) for s in plan.splits)
    store_dtype = torch.float16 if plan.settings.dtype == "float16" else torch.float32
    c = plan.dataset.n_classes
    # layers by name, outputs by (OUTPUT, name): a layer may be called "logits" or "norm"
    shapes = {s.name: (cs, s.dim) for s in plan.layers}
    shapes.update({(OUTPUT, "logits"): (cs, c), (OUTPUT, "pred"): (cs,),
                   (OUTPUT, "target"): (cs,), (OUTPUT, "norm"): (cs,)})
    dtypes = {s.name: store_dtype for s in plan.layers}
    dtypes.update({(OUTPUT, "logits"): torch.float32, (OUTPUT, "pred"): torch.int64,
                   (OUTPUT, "target"): torch.int64, (OUTPUT, "norm"): torch.float32})
    return BufferPool(queue_depth + 2, shapes, dtypes, pin=dev.type == "cuda")


def compute_block(plan: ExtractionPlan, capture: LayerCapture, bufs: dict, x, y, spec, seed,
                  dev, amp) -> None:
    """One block: the condition's perturbation, the forward pass with every layer captured
    into ``bufs`` (reduced), logits, predictions, targets and perturbation norms, batch by
    batch. The block's random numbers come from ``seed`` alone."""
    ds, batch, cmap = plan.dataset, plan.settings.batch_size, plan.class_map
    names = [s.name for s in plan.layers]
    # labels, targets and predictions in the model's output space; stored as dataset classes
    n_outputs = ds.n_classes if cmap is None else cmap.n_outputs
    if cmap is not None:
        y = cmap.to_outputs(y)
    rand = spec.draw(x, y, n_outputs, torch.Generator().manual_seed(seed), ds.box)
    for i in range(0, len(x), batch):
        j = min(i + batch, len(x))
        xb = x[i:j].to(dev, non_blocking=True)
        yb = y[i:j].to(dev, non_blocking=True)
        with amp:
            x_adv, target, norm = spec.run(plan.model, xb, yb, n_outputs,
                                           slice_randomness(rand, i, j), box=ds.box)
            capture.reset({name: bufs[name][i:j] for name in names})
            with torch.no_grad(), capture:
                logits = plan.model(x_adv)
        if capture.seen != names:
            raise ModelError(f"the forward pass captured {capture.seen}, but the layers probed "
                             f"at the start were {names}; the model's call pattern must not "
                             "depend on its input")
        pred = logits.argmax(1)
        if cmap is not None:
            logits, pred, target = (logits[:, list(cmap.index)], cmap.to_classes(pred),
                                    cmap.to_classes(target))
        bufs[OUTPUT, "logits"][i:j].copy_(logits, non_blocking=True)
        bufs[OUTPUT, "pred"][i:j].copy_(pred, non_blocking=True)
        bufs[OUTPUT, "target"][i:j].copy_(target, non_blocking=True)
        bufs[OUTPUT, "norm"][i:j].copy_(norm, non_blocking=True)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _blocks(plan: ExtractionPlan, writer):
    """``(k, split, q, b)`` of every block, in the order of work."""
    for k in range(len(plan.epochs)):
        for split in plan.splits:
            for q in range(len(plan.conditions)):
                for b in range(len(writer.layout.blocks(split))):
                    yield k, split, q, b


def run_plan(plan: ExtractionPlan, out, rank, dev, *, overwrite=False, command="",
             progress=True, queue_depth=2, repair=False) -> str:
    """Compute every block of ``plan`` this rank owns and is missing from ``out``; the
    background thread writes them while the next is computed. Finalizes the store."""
    writer = _open_writer(plan, out, rank, overwrite=overwrite, repair=repair, command=command)
    walk = _BlockWalk(plan, writer, rank, dev, queue_depth, progress)
    failed = walk.run()
    try:
        if distributed.any_failed(rank, failed is not None, dev):
            if failed is not None:
                raise failed
            raise StoreError(f"another rank failed while writing {str(out)!r}; rerun the same "
                             "command to resume")
        if rank.main:
            writer.finalize()
    finally:
        writer.close()
    log.info("wrote %s", out)
    return str(out)


class _BlockWalk:
    """The blocks of a plan in order (checkpoint, split, condition, chunk): each computed on
    the device while the previous one is written by the background thread."""

    def __init__(self, plan: ExtractionPlan, writer, rank, dev, queue_depth, progress):
        from tqdm import tqdm

        self.plan, self.writer, self.rank, self.dev = plan, writer, rank, dev
        self.pool = _buffers(plan, writer, queue_depth, dev)
        self.done = writer.done_blocks()
        self.background = AsyncBlockWriter(depth=queue_depth)
        self.blocks = list(_blocks(plan, writer))
        self.bar = tqdm(total=-(-len(self.blocks) // rank.world), desc="nc-extract",
                        unit="block", disable=not progress, leave=False)
        self.amp = (torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported()
                                   else torch.float16) if plan.settings.amp
                    else contextlib.nullcontext())
        self.capture = LayerCapture(plan.model, plan.paths_by_name, plan.reducers)
        ds = plan.dataset
        self.inputs = {s: (torch.from_numpy(ds.images[s][plan.subsets[s]]),
                           torch.from_numpy(ds.labels[s][plan.subsets[s]]))
                       for s in plan.splits}

    def run(self) -> BaseException | None:
        """Walk every block; the first error, or None. The writer thread is stopped either
        way."""
        failed, loaded = None, 0
        try:
            self.background.submit(self.writer.create_layout)
            for item, (k, split, q, b) in enumerate(self.blocks):
                if k != loaded:
                    self.plan.load(k)
                    loaded = k
                if self.rank.main and split == self.plan.splits[0] and q == 0 and b == 0:
                    self._write_classifier(k)
                if self.rank.owns(item):
                    self._block(k, split, q, b)
            self.background.close()
        except BaseException as e:
            failed = e
            with contextlib.suppress(BaseException):
                self.background.close()  # the first error is the one reported
        finally:
            self.bar.close()
        return failed

    def _write_classifier(self, k):
        fc, cmap = self.plan.model.classifier_module(), self.plan.class_map
        # copies: the next checkpoint is loaded into these parameters in place
        weight = fc.weight.detach().cpu().numpy().copy()
        bias = (fc.bias.detach().cpu().numpy().copy() if fc.bias is not None
                else np.zeros(fc.out_features))
        if cmap is not None:  # the rows of the dataset's classes
            weight, bias = weight[list(cmap.index)], bias[list(cmap.index)]
        self.background.submit(lambda: self.writer.write_classifier(k, weight, bias))

    def _block(self, k, split, q, b):
        plan = self.plan
        if (split, k, q, b) in self.done:
            self.bar.update(1)
            return
        spec = plan.conditions[q]
        lo, hi = self.writer.layout.blocks(split)[b]
        bufs = self.pool.get()
        x, y = self.inputs[split]
        compute_block(plan, self.capture, bufs, x[lo:hi], y[lo:hi], spec,
                      _block_seed(plan.settings.seed, spec.seed, spec.name, split,
                                  plan.epochs[k], b), self.dev, self.amp)
        self.background.submit(lambda: self._write(split, k, q, b, hi - lo, bufs),
                               release=lambda: self.pool.put(bufs))
        self.bar.update(1)

    def _write(self, split, k, q, b, n, bufs):
        self.writer.write_block(split, k, q, b, {s.name: bufs[s.name][:n].numpy()
                                                  for s in self.plan.layers},
                                *(bufs[OUTPUT, o][:n].numpy()
                                  for o in ("logits", "pred", "target", "norm")))
