"""Extraction: load checkpoints, attack, capture every layer, write the activation store.

The unit of work is a block (split, checkpoint, condition, sample chunk). Its random numbers
are drawn once from a seed derived from those names, so the store is the same whatever the
batch size and wherever an interrupted run resumes; a rerun skips the blocks already on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ncprobe.data.datasets import load_dataset
from ncprobe.data.errors import NcprobeError
from ncprobe.data.store import StoreError
from ncprobe.data.store_layout import LayerSpec
from ncprobe.data.store_writer import ActivationStoreWriter
from ncprobe.data.subsets import stratified_subset

from . import distributed
from .async_writer import AsyncBlockWriter, BufferPool
from .attacks import draw_randomness, parse_attack, run_condition, slice_randomness
from .attacks.spec import AttackSpecError
from .capture import LayerCapture, probe, resolve_layers
from .checkpoints import epoch_of, expand_checkpoints, load_state_dict, read_sidecar, sha256
from .models import ModelError, build_model, load_state
from .reduction import Reducer
from .runtime import pick_device, set_threads, versions

log = logging.getLogger("ncprobe.extract")


@dataclass
class ExtractConfig:
    """What to extract; everything that changes the store's content is in its fingerprint."""

    checkpoints: list
    attacks: list = field(default_factory=lambda: ["clean"])
    splits: list | None = None
    layers: list | None = None
    reductions: dict = field(default_factory=dict)
    project: int | None = None
    dataset: str | None = None
    data_root: str | None = None
    arch: str | None = None
    dtype: str = "float32"
    compression: str = "lz4"
    batch_size: int = 512
    chunk_samples: int | None = None
    limit: int | None = None
    max_per_class: int | None = None
    seed: int = 0
    amp: bool = False
    #: keyword arguments of a ``package.module:factory`` architecture (literals)
    arch_kwargs: dict = field(default_factory=dict)
    #: the key of the state dict inside a checkpoint that wraps several
    checkpoint_key: str | None = None
    #: module path of a factory model's final nn.Linear, when it is not the last one
    classifier: str | None = None
    #: input normalisation: None (the checkpoint's, else the dataset's), "dataset", "none",
    #: or "m1,m2,.../s1,s2,..." (per channel)
    normalize: str | None = None


def _block_seed(*parts) -> int:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _model_source(cfg: ExtractConfig):
    """Checkpoint paths and the arch / dataset they agree on (sidecars unless overridden)."""
    paths = expand_checkpoints(cfg.checkpoints)
    metas = [read_sidecar(p) for p in paths]
    arch = cfg.arch or metas[0].get("arch")
    dataset = cfg.dataset or metas[0].get("dataset")
    if arch is None or dataset is None:
        raise ModelError(f"checkpoint {str(paths[0])!r} has no JSON sidecar naming its arch and "
                         "dataset; pass `arch` and `dataset`")
    first = (metas[0].get("arch"), metas[0].get("dataset"))
    for p, m in zip(paths, metas, strict=True):
        if m and (m.get("arch"), m.get("dataset")) != first:
            raise ModelError(f"checkpoint {str(p)!r} is a {m.get('arch')} on {m.get('dataset')}, "
                             f"but the first is a {first[0]} on {first[1]}; extract them "
                             "separately")
    root = cfg.data_root or metas[0].get("data_root")
    return paths, metas, arch, dataset, root


def _conditions(attacks):
    specs = [parse_attack(a) for a in attacks]
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise AttackSpecError(f"condition names must be unique; repeated: {', '.join(dup)} "
                              "(give one a name=...)")
    return specs


def _reducer_spec(cfg, name):
    spec = cfg.reductions.get(name, cfg.reductions.get("*", "flatten"))
    if cfg.project and "+proj" not in spec:
        spec = f"{spec}+proj:{cfg.project}"
    return spec


def resolve_normalization(spec: str | None, meta: dict, ds) -> tuple[tuple, tuple, str]:
    """``(mean, std, mode)`` of the input normalisation the model gets as its first module.

    ``None``: the checkpoint sidecar's (ncprobe checkpoints), else the dataset's train
    statistics; ``"dataset"``: those statistics; ``"none"``: identity (the model normalises
    itself); ``"m1,m2,m3/s1,s2,s3"``: explicit per-channel values. Attacks always work in the
    dataset's input box (pixels in [0, 1] for images), before this normalisation.
    """
    channels = len(ds.mean)
    if spec is None:
        if "mean" in meta and "std" in meta:
            return tuple(meta["mean"]), tuple(meta["std"]), "checkpoint"
        return tuple(ds.mean), tuple(ds.std), "dataset"
    if spec == "dataset":
        return tuple(ds.mean), tuple(ds.std), "dataset"
    if spec == "none":
        return (0.0,) * channels, (1.0,) * channels, "none"
    mean_text, sep, std_text = spec.partition("/")
    try:
        mean = tuple(float(v) for v in mean_text.split(","))
        std = tuple(float(v) for v in std_text.split(","))
    except ValueError:
        mean = std = ()
    if not sep or len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise NcprobeError(f"`normalize` {spec!r} does not parse as {channels} means / "
                           f"{channels} positive stds; expected dataset, none or e.g. "
                           + ("0.4914,0.4822,0.4465/0.2471,0.2435,0.2616" if channels == 3
                              else f"{','.join(['0.5'] * channels)}/"
                                   f"{','.join(['0.25'] * channels)}"))
    return mean, std, "explicit"


def normalization(model, cfg: ExtractConfig, meta: dict, ds) -> dict:
    """What the model's first module does to its input, as used (a checkpoint's own values
    included), for the store's attributes and ``--list-layers``."""
    mean, std, mode = resolve_normalization(cfg.normalize, meta, ds)
    used = ([round(float(v), 6) for v in model.normalize.mean.flatten()],
            [round(float(v), 6) for v in model.normalize.std.flatten()])
    if mode == "dataset" and not np.allclose(used, (mean, std)):
        mode = "checkpoint"  # the checkpoint carried its own normalize buffers
    return {"mode": mode, "mean": used[0], "std": used[1]}


def plan_model(cfg: ExtractConfig, device):
    """Build the model from the first checkpoint and resolve layers and their reductions."""
    paths, metas, arch, dataset_name, root = _model_source(cfg)
    ds = load_dataset(dataset_name, root=root)
    mean, std, _ = resolve_normalization(cfg.normalize, metas[0], ds)
    model = build_model(arch, ds.input_shape, ds.n_classes, mean, std, cfg.arch_kwargs,
                        cfg.classifier)
    load_state(model, load_state_dict(paths[0], cfg.checkpoint_key), str(paths[0]), arch=arch,
               keep_normalization=cfg.normalize is not None)
    model.to(device).eval()
    paths_by_name = resolve_layers(model, cfg.layers)
    example = torch.from_numpy(ds.images[ds.splits[0]][:2]).to(device)
    shapes = probe(model, paths_by_name, example)
    if cfg.project is not None and cfg.project < 1:
        raise NcprobeError(f"`project` must be >= 1, got {cfg.project}")
    reducers, specs = {}, []
    for depth, (key, shape) in enumerate(shapes.items()):
        base = key.split(".call")[0]
        spec = _reducer_spec(cfg, base)
        # only project layers wider than the target: a projection never adds dimensions
        if cfg.project and np.prod(shape) <= cfg.project:
            spec = spec.split("+proj")[0]
        r = Reducer(spec, shape, key, cfg.seed).to(device)
        reducers[key] = r
        specs.append(LayerSpec(key, depth, paths_by_name[base], tuple(shape), r.spec, r.dim))
    return model, ds, paths, metas, arch, paths_by_name, reducers, specs


def list_layers(cfg: ExtractConfig, all_modules: bool = False) -> tuple[list[tuple], dict]:
    """(name, module path, output shape, flattened dim) for every capturable layer, and the
    input normalisation the model applies (:func:`normalization`)."""
    dev = torch.device("cpu")
    if all_modules:
        cfg = ExtractConfig(**{**cfg.__dict__, "layers": None})
    model, ds, paths_, metas, *_ = plan_model(cfg, dev)
    paths = dict(model.capture_points)
    if all_modules:
        paths.update({n: n for n, m in model.named_modules()
                      if n and not list(m.children()) and n not in paths.values()})
    shapes = probe(model, paths, torch.from_numpy(ds.images[ds.splits[0]][:2]))
    rows = []
    for key, shape in shapes.items():
        base = key.split(".call")[0]
        tag = " (feeds classifier)" if base == model.feature_layer else ""
        rows.append((key + tag, paths[base], shape, int(np.prod(shape))))
    return rows, normalization(model, cfg, metas[0], ds)


def extract_store(cfg: ExtractConfig, out, *, overwrite: bool = False, device: str = "auto",
                  threads: int | None = None, progress: bool = True, command: str = "",
                  queue_depth: int = 2, repair: bool = False) -> str:
    """Write the activation store ``out`` (STORE.md) for ``cfg``; resume if it exists.

    Under ``torchrun --nproc-per-node N`` the blocks are shared among the N processes.
    """
    if cfg.batch_size < 1:
        raise NcprobeError(f"`batch_size` must be >= 1, got {cfg.batch_size}")
    rank = distributed.from_environment()
    dev = pick_device(device)
    if dev.type == "cuda" and rank.world > 1:
        dev = torch.device("cuda", rank.local)
    distributed.start(rank, dev)
    try:
        return _extract(cfg, out, rank, dev, overwrite=overwrite, threads=threads,
                        progress=progress and rank.main, command=command,
                        queue_depth=queue_depth, repair=repair)
    finally:
        distributed.stop(rank)


def _extract(cfg, out, rank, dev, *, overwrite, threads, progress, command, queue_depth,
             repair) -> str:
    from tqdm import tqdm

    if cfg.amp and dev.type != "cuda":
        raise NcprobeError("`amp` needs a CUDA device (mixed precision is not used on the CPU)")
    specs = _conditions(cfg.attacks)
    model, ds, paths, metas, arch, paths_by_name, reducers, layer_specs = plan_model(cfg, dev)
    set_threads(model, dev, threads)
    splits = cfg.splits or ds.splits
    for s in splits:
        ds.split(s)  # one-line error naming the splits that exist
    subsets = {s: stratified_subset(ds.labels[s], cfg.limit, cfg.max_per_class, cfg.seed)
               for s in splits}
    epochs = [epoch_of(p) for p in paths]
    if -1 in epochs or len(set(epochs)) < len(epochs):
        epochs = list(range(len(paths)))
    shas = [m.get("sha256") or sha256(p) for p, m in zip(paths, metas, strict=True)]
    fc = model.classifier_module()
    feat = model.feature_layer
    config = {
        "dataset": {"name": ds.name, "options": ds.options, "source": ds.source},
        "arch": arch, "checkpoints": [{"path": str(Path(p).resolve()), "sha256": h, "epoch": e}
                                      for p, h, e in zip(paths, shas, epochs, strict=True)],
        "layers": [[s.name, s.module, s.reduction] for s in layer_specs],
        "conditions": [s.as_dict() for s in specs], "seed": cfg.seed, "amp": cfg.amp,
        "arch_kwargs": cfg.arch_kwargs, "classifier": model.classifier,
        "normalization": normalization(model, cfg, metas[0], ds),
        "subsets": {s: hashlib.sha256(i.tobytes()).hexdigest()[:16] for s, i in subsets.items()},
    }
    attrs = {
        "class_names": ds.class_names,
        "dataset": {"name": ds.name, "splits": list(splits),
                    "normalization": {"mean": list(ds.mean), "std": list(ds.std)},
                    "source": ds.source, "options": ds.options},
        "model": {"arch": arch, "factory": arch if ":" in arch else None,
                  "training": {"mode": metas[0].get("mode"), "attack": metas[0].get("attack")},
                  "feature_layer": feat, "classifier": model.classifier,
                  "arch_kwargs": cfg.arch_kwargs,
                  "normalization": config["normalization"],
                  "checkpoints": config["checkpoints"]},
        "command": command, "versions": versions(),
    }
    writer = ActivationStoreWriter(
        out, layers=layer_specs, checkpoints=epochs, conditions=[s.as_dict() for s in specs],
        samples={s: (subsets[s], ds.labels[s][subsets[s]]) for s in splits},
        n_classes=ds.n_classes, config=config, attrs=attrs, dtype=cfg.dtype,
        compression=cfg.compression, classifier=(feat, fc.in_features),
        chunk_samples=cfg.chunk_samples)
    # rank 0 creates (or resumes) the store; the others attach once it exists
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
    n_classes = ds.n_classes
    # the buffers hold the largest block, not a full chunk_samples when every split is smaller
    cs = max(writer.layout.split_chunk(s) for s in splits)
    store_dtype = torch.float16 if cfg.dtype == "float16" else torch.float32
    shapes = {s.name: (cs, s.dim) for s in layer_specs}
    shapes.update(logits=(cs, n_classes), pred=(cs,), target=(cs,), norm=(cs,))
    dtypes = {s.name: store_dtype for s in layer_specs}
    dtypes.update(logits=torch.float32, pred=torch.int64, target=torch.int64, norm=torch.float32)
    pool = BufferPool(queue_depth + 2, shapes, dtypes, pin=dev.type == "cuda")

    def write(split, k, q, b, n, bufs):
        writer.write_block(split, k, q, b, {s.name: bufs[s.name][:n].numpy()
                                             for s in layer_specs},
                           bufs["logits"][:n].numpy(), bufs["pred"][:n].numpy(),
                           bufs["target"][:n].numpy(), bufs["norm"][:n].numpy())

    done = writer.done_blocks()
    background = AsyncBlockWriter(depth=queue_depth)
    n_blocks = len(paths) * len(specs) * sum(len(writer.layout.blocks(s)) for s in splits)
    bar = tqdm(total=-(-n_blocks // rank.world), desc="nc-extract", unit="block",
               disable=not progress, leave=False)
    amp = (torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported()
                          else torch.float16) if cfg.amp else contextlib.nullcontext())
    capture = LayerCapture(model, paths_by_name, reducers)
    names = [s.name for s in layer_specs]
    item = -1  # global index of a block: ranks take every world-th one
    failed = None
    try:
        background.submit(writer.create_layout)
        for k, path in enumerate(paths):
            if k > 0:
                load_state(model, load_state_dict(path, cfg.checkpoint_key), str(path),
                           arch=arch, keep_normalization=cfg.normalize is not None)
                model.eval()
            if rank.main:
                # copies: the next checkpoint is loaded into these parameters in place
                weight = fc.weight.detach().cpu().numpy().copy()
                bias = (fc.bias.detach().cpu().numpy().copy() if fc.bias is not None
                        else np.zeros(n_classes))
                background.submit(lambda k=k, w=weight, c=bias: writer.write_classifier(k, w, c))
            for split in splits:
                x_all = torch.from_numpy(ds.images[split][subsets[split]])
                y_all = torch.from_numpy(ds.labels[split][subsets[split]])
                for q, spec in enumerate(specs):
                    for b, (lo, hi) in enumerate(writer.layout.blocks(split)):
                        item += 1
                        if not rank.owns(item):
                            continue
                        if (split, k, q, b) in done:
                            bar.update(1)
                            continue
                        gen = torch.Generator().manual_seed(
                            _block_seed(cfg.seed, spec.seed, spec.name, split, epochs[k], b))
                        xb, yb = x_all[lo:hi], y_all[lo:hi]
                        rand = draw_randomness(spec, xb, yb, n_classes, gen, ds.box)
                        bufs = pool.get()
                        for i in range(0, hi - lo, cfg.batch_size):
                            j = min(i + cfg.batch_size, hi - lo)
                            x = xb[i:j].to(dev, non_blocking=True)
                            y = yb[i:j].to(dev, non_blocking=True)
                            with amp:
                                x_adv, target, norm = run_condition(
                                    model, x, y, spec, n_classes, slice_randomness(rand, i, j))
                                capture.reset({s.name: bufs[s.name][i:j]
                                               for s in layer_specs})
                                with torch.no_grad(), capture:
                                    logits = model(x_adv)
                            if capture.seen != names:
                                raise ModelError(
                                    f"the forward pass captured {capture.seen}, but the "
                                    f"layers probed at the start were {names}; the model's "
                                    "call pattern must not depend on its input")
                            bufs["logits"][i:j].copy_(logits, non_blocking=True)
                            bufs["pred"][i:j].copy_(logits.argmax(1), non_blocking=True)
                            bufs["target"][i:j].copy_(target, non_blocking=True)
                            bufs["norm"][i:j].copy_(norm, non_blocking=True)
                        if dev.type == "cuda":
                            torch.cuda.synchronize(dev)
                        background.submit(
                            lambda a=(split, k, q, b, hi - lo, bufs): write(*a),
                            release=lambda bufs=bufs: pool.put(bufs))
                        bar.update(1)
        background.close()
    except BaseException as e:
        failed = e
        with contextlib.suppress(BaseException):
            background.close()  # stop the writer thread; the first error is the one reported
    finally:
        bar.close()
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
