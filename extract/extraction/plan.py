"""What one extraction computes: the model, its inputs, layers, conditions and checkpoints.

An :class:`ExtractionPlan` is built either from checkpoint files (:func:`plan_checkpoints`,
what ``nc-extract`` does) or from a model already in memory (:func:`plan_module`, the Python
API); :func:`ncprobe.extract.extraction.run_plan` then walks its blocks. Everything that
changes the store's content goes into ``config``, the store's fingerprint.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ncprobe.data.datasets import Dataset, load_dataset
from ncprobe.data.datasets.subsets import stratified_subset
from ncprobe.data.errors import NcprobeError
from ncprobe.data.params import Instance, Interval, OneOf, Optional, StrList, check_params
from ncprobe.data.store.layout import COMPRESSIONS, LayerSpec

from .. import hub
from ..attacks import AttackSpecError, parse_attack
from ..checkpoints import epoch_of, expand_checkpoints, load_state_dict, read_sidecar, sha256
from ..class_map import ClassMap, resolve_class_map
from ..models import (
    ModelError,
    NCModel,
    build_model,
    load_state,
    robustbench,
    verify_classifier,
    wrap_module,
)
from ..models.wrap import LOGITS_RTOL
from ..models.zoo import hf_weights, known_normalization
from ..runtime import versions
from .capture import probe, resolve_layers
from .reduction import Reducer, default_reduction, has_class_token

log = logging.getLogger("ncprobe.extract")


@dataclass
class ExtractConfig:
    """What to extract; everything that changes the store's content is in its fingerprint.
    Checked when built: a bad value raises
    :class:`~ncprobe.data.params.ParameterError` naming it."""

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
    #: "auto" (the model source's: timm pretrained_cfg, a Hugging Face processor config), or
    #: "m1,m2,.../s1,s2,..." (per channel)
    normalize: str | None = None
    #: where a foreign model's logits are in what it returns (a mapping key or tuple index)
    output_key: str | None = None
    #: the leading prefix of the checkpoint keys that hold the network (e.g. "model.")
    strip_prefix: str | None = None
    #: pretrained weights from the model's hub (torchvision, timm, hf): "" for the source's
    #: default, else a tag (torchvision enum member, timm tag, Hugging Face revision)
    pretrained: str | None = None
    #: a file mapping each dataset class name to the model's output index (docs/your-model.md)
    class_map: str | None = None

    _constraints = {
        "attacks": StrList(), "splits": Optional(StrList()), "layers": Optional(StrList()),
        "project": Optional(Interval(int, 1)), "dtype": OneOf(("float32", "float16")),
        "compression": OneOf(COMPRESSIONS), "batch_size": Interval(int, 1),
        "chunk_samples": Optional(Interval(int, 1)), "limit": Optional(Interval(int, 1)),
        "max_per_class": Optional(Interval(int, 1)), "seed": Interval(int),
        "amp": Instance(bool, "True or False"),
        "pretrained": Optional(Instance(str, "a weights tag or ''")),
        "class_map": Optional(Instance(str, "a file path"))}

    def __post_init__(self):
        check_params(self, self._constraints)


@dataclass
class ExtractionPlan:
    """Everything an extraction computes, resolved; the order of work is :func:`run_plan`'s.

    ``load(k)`` puts checkpoint ``k``'s weights into ``model`` (checkpoint 0 is loaded when
    the plan is made); ``epochs[k]`` labels it in the store.
    """

    model: NCModel
    dataset: Dataset
    splits: list
    subsets: dict
    conditions: list
    layers: list
    paths_by_name: dict
    reducers: dict
    epochs: list
    load: Callable[[int], None]
    config: dict
    attrs: dict
    settings: ExtractConfig
    #: which output of the model each dataset class is, when it has more outputs
    class_map: ClassMap | None = None


#: RobustBench's dataset names and ncprobe's
_ROBUSTBENCH_DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet": "imagefolder"}


def _robustbench_source(cfg: ExtractConfig):
    """``(checkpoint paths, arch with its dataset and threat, dataset)`` of a robustbench:
    source: the entry resolved once, the weights in RobustBench's layout."""
    hint = {v: k for k, v in _ROBUSTBENCH_DATASETS.items()}.get(cfg.dataset, cfg.dataset)
    name, dataset, threat, _ = robustbench.entry(cfg.arch, hint)
    arch = f"{robustbench.PREFIX}{name}@{dataset}/{threat}"
    if len(cfg.checkpoints) != 1:
        raise ModelError(f"{cfg.arch!r} takes one `checkpoint`: its weight file or RobustBench's "
                         "model folder (MODEL_DIR, holding <dataset>/<threat>/<NAME>.pt)")
    paths = [robustbench.checkpoint(arch, cfg.checkpoints[0])]
    return paths, arch, cfg.dataset or _ROBUSTBENCH_DATASETS.get(dataset, dataset)


def _model_source(cfg: ExtractConfig):
    """Checkpoint paths and the arch / dataset they agree on (sidecars unless overridden)."""
    if robustbench.is_robustbench(cfg.arch):
        paths, arch, dataset = _robustbench_source(cfg)
        return paths, [{}], arch, dataset, cfg.data_root
    patterns = cfg.checkpoints
    if not patterns and cfg.arch and cfg.arch.startswith("hf:"):
        if hf_weights(cfg.arch[3:]) is None:
            raise ModelError(f"{cfg.arch!r}: the folder holds no config.json with "
                             "model.safetensors or pytorch_model.bin; pass the weights with "
                             "`checkpoint`")
        patterns = [cfg.arch[3:]]
    if not patterns:
        raise ModelError("no checkpoint given; expected checkpoint files or globs (or an "
                         "arch hf:FOLDER, whose weights are in the folder)")
    paths = expand_checkpoints(patterns)
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


def _reducer_spec(cfg, name, shape, has_class_token):
    spec = cfg.reductions.get(name, cfg.reductions.get("*"))
    spec = spec or default_reduction(shape, has_class_token)
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
    if spec == "auto":
        raise NcprobeError("`normalize` 'auto' reads the model source's normalisation; this "
                           "model has none recorded (timm pretrained_cfg, Hugging Face "
                           "preprocessor_config.json); pass dataset, none or explicit values")
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


def apply_auto_normalization(model: NCModel, cfg: ExtractConfig, ds) -> None:
    """With ``normalize="auto"``, set the model's input normalisation to what its source
    records (:func:`~ncprobe.extract.models.zoo.known_normalization`); a one-line error when
    it records none or has another channel count."""
    if cfg.normalize != "auto":
        return
    known = known_normalization(model.net)
    if known is None:
        resolve_normalization("auto", {}, ds)  # raises, saying what auto needs
    mean, std, source = known
    if len(mean) != len(ds.mean) or len(std) != len(ds.mean):
        raise NcprobeError(f"`normalize` 'auto': the model's {source} has {len(mean)} "
                           f"channel(s), the dataset {len(ds.mean)}; pass explicit values")
    model.normalize.mean.copy_(torch.tensor(mean).reshape(model.normalize.mean.shape))
    model.normalize.std.copy_(torch.tensor(std).reshape(model.normalize.std.shape))


def _used_normalization(model) -> tuple[list, list]:
    """The per-channel mean and std of the model's first module, rounded for the store."""
    return ([round(float(v), 6) for v in model.normalize.mean.flatten()],
            [round(float(v), 6) for v in model.normalize.std.flatten()])


def normalization(model, cfg: ExtractConfig, meta: dict, ds) -> dict:
    """What the model's first module does to its input, as used (a checkpoint's own values
    included), for the store's attributes and ``--list-layers``."""
    used = _used_normalization(model)
    if cfg.normalize == "auto":
        return {"mode": f"auto ({known_normalization(model.net)[2]})", "mean": used[0],
                "std": used[1]}
    if cfg.normalize is None and robustbench.is_robustbench(cfg.arch):
        return {"mode": "none (robustbench: the model normalises its [0, 1] inputs itself)",
                "mean": used[0], "std": used[1]}
    mean, std, mode = resolve_normalization(cfg.normalize, meta, ds)
    if mode == "dataset" and not np.allclose(used, (mean, std)):
        mode = "checkpoint"  # the checkpoint carried its own normalize buffers
    return {"mode": mode, "mean": used[0], "std": used[1]}


def resolve_capture(model, ds, cfg: ExtractConfig, device):
    """Capture paths, reducers and :class:`LayerSpec` of the layers ``cfg`` asks for, in
    depth order, from one probing forward pass."""
    paths_by_name = resolve_layers(model, cfg.layers)
    shapes = probe(model, paths_by_name, example_inputs(ds, device))
    ran = {key.split(".call")[0] for key in shapes}
    named = {n.removeprefix("net.") for n in cfg.layers or []
             if n != "all" and not any(ch in n for ch in "*?[")}
    silent = [n for n in paths_by_name if n not in ran and n in named]
    if silent:
        raise NcprobeError(f"layer(s) {', '.join(silent)} never ran in the forward pass (or "
                           "returned no tensor), so nothing can be captured there; choose "
                           "modules that the model calls")
    paths_by_name = {n: p for n, p in paths_by_name.items() if n in ran}
    cls = has_class_token(model)
    reducers, specs = {}, []
    for depth, (key, shape) in enumerate(shapes.items()):
        base = key.split(".call")[0]
        spec = _reducer_spec(cfg, base, shape, cls)
        # only project layers wider than the target: a projection never adds dimensions
        if cfg.project and np.prod(shape) <= cfg.project:
            spec = spec.split("+proj")[0]
        r = Reducer(spec, shape, key, cfg.seed).to(device)
        reducers[key] = r
        specs.append(LayerSpec(key, depth, paths_by_name[base], tuple(shape), r.spec, r.dim))
    return paths_by_name, reducers, specs


def example_inputs(ds, device) -> torch.Tensor:
    """Two inputs of the first split, for the passes that probe the model."""
    return torch.from_numpy(ds.images[ds.splits[0]][:2]).to(device)


def _plan(model, ds, cfg, device, *, epochs, load, checkpoints, model_attrs,
          labels=None) -> ExtractionPlan:
    """The parts every plan shares: the class map, subsets, conditions, layers, fingerprint
    and attributes. ``labels``: the model's output labels, where its source names them."""
    conditions = _conditions(cfg.attacks)
    model.to(device).eval()
    what = f"model {model_attrs['arch']!r}"
    n_outputs = model.classifier_module().out_features
    class_map = resolve_class_map(ds.class_names, n_outputs, labels, cfg.class_map, what)
    residual = verify_classifier(model, example_inputs(ds, device), n_outputs, what,
                                 explicit=cfg.classifier is not None)
    if residual > LOGITS_RTOL:
        log.warning("W h + b of the classifier %r differs from the model's logits (relative "
                    "error %.2g): NC3 and NC4 describe that linear map, not the output",
                    model.classifier[4:], residual)
    paths_by_name, reducers, layers = resolve_capture(model, ds, cfg, device)
    splits = cfg.splits or ds.splits
    for s in splits:
        ds.split(s)  # one-line error naming the splits that exist
    subsets = {s: stratified_subset(ds.labels[s], cfg.limit, cfg.max_per_class, cfg.seed)
               for s in splits}
    config = {
        "dataset": {"name": ds.name, "options": ds.options, "source": ds.source},
        "arch": model_attrs["arch"], "checkpoints": checkpoints,
        "layers": [[s.name, s.module, s.reduction] for s in layers],
        "conditions": [s.as_dict() for s in conditions], "seed": cfg.seed, "amp": cfg.amp,
        "arch_kwargs": cfg.arch_kwargs, "classifier": model.classifier,
        "normalization": model_attrs["normalization"],
        "subsets": {s: hashlib.sha256(i.tobytes()).hexdigest()[:16] for s, i in subsets.items()},
        "class_map": class_map and class_map.as_dict(),
    }
    attrs = {
        "class_names": ds.class_names,
        "dataset": {"name": ds.name, "splits": list(splits),
                    "normalization": {"mean": list(ds.mean), "std": list(ds.std)},
                    "source": ds.source, "options": ds.options},
        "model": {**model_attrs, "feature_layer": model.feature_layer,
                  "classifier": model.classifier, "arch_kwargs": cfg.arch_kwargs,
                  "classifier_relative_error": float(f"{residual:.3g}"),
                  "parameters": int(sum(p.numel() for p in model.net.parameters())),
                  "output_key": cfg.output_key,
                  "checkpoints": checkpoints},
        "class_map": class_map and class_map.as_dict(),
        "versions": versions(),
    }
    return ExtractionPlan(model, ds, list(splits), subsets, conditions, layers, paths_by_name,
                          reducers, list(epochs), load, config, attrs, cfg, class_map)


def plan_checkpoints(cfg: ExtractConfig, device) -> ExtractionPlan:
    """The plan of ``nc-extract``: the model rebuilt from checkpoint files (and sidecars), or
    pretrained weights from its hub (:func:`plan_pretrained`)."""
    if hub.is_hub(cfg.arch, cfg.pretrained):
        return plan_pretrained(cfg, device)
    if cfg.pretrained is not None:
        raise ModelError(f"`pretrained` is for torchvision:NAME, timm:NAME and hf:ORG/NAME, not "
                         f"{cfg.arch!r}; pass its weights with `checkpoint`")
    paths, metas, arch, dataset_name, root = _model_source(cfg)
    ds = load_dataset(dataset_name, root=root)
    spec = None if cfg.normalize == "auto" else cfg.normalize
    if spec is None and robustbench.is_robustbench(arch):
        spec = "none"  # RobustBench's models take [0, 1] inputs and normalise inside
        log.info("%s normalises its own inputs: normalization none (pass `normalize` to "
                 "override)", arch)
    mean, std, _ = resolve_normalization(spec, metas[0], ds)
    model = build_model(arch, ds.input_shape, ds.n_classes, mean, std, cfg.arch_kwargs,
                        cfg.classifier, cfg.output_key, match_outputs=cfg.class_map is None)
    apply_auto_normalization(model, cfg, ds)

    def load(k):
        load_state(model, load_state_dict(paths[k], cfg.checkpoint_key), str(paths[k]),
                   arch=arch, keep_normalization=cfg.normalize is not None,
                   strip_prefix=cfg.strip_prefix)
        model.eval()

    load(0)
    epochs = [epoch_of(p) for p in paths]
    if -1 in epochs or len(set(epochs)) < len(epochs):
        epochs = list(range(len(paths)))
    shas = [m.get("sha256") or sha256(p) for p, m in zip(paths, metas, strict=True)]
    checkpoints = [{"path": str(Path(p).resolve()), "sha256": h, "epoch": e}
                   for p, h, e in zip(paths, shas, epochs, strict=True)]
    model_attrs = {"arch": arch, "factory": arch if ":" in arch else None,
                   "training": {"mode": metas[0].get("mode"), "attack": metas[0].get("attack")},
                   "normalization": normalization(model, cfg, metas[0], ds)}
    return _plan(model, ds, cfg, device, epochs=epochs, load=load, checkpoints=checkpoints,
                 model_attrs=model_attrs, labels=hub.hf_labels(model.net))


def _pretrained_dataset(cfg: ExtractConfig, hm: hub.HubModel) -> Dataset:
    """The dataset, prepared as the weights' own preprocessing says (image folders are
    resized and cropped on load); a one-line error for images of another size."""
    if cfg.dataset is None:
        raise ModelError(f"{cfg.arch!r}: pretrained weights carry no dataset; pass `dataset` "
                         "(e.g. imagefolder with `data_root`)")
    pre = hm.preprocess
    options = pre.loader_options() if pre and cfg.dataset == "imagefolder" else {}
    ds = load_dataset(cfg.dataset, root=cfg.data_root, **options)
    if pre and tuple(ds.input_shape[-2:]) != pre.shape:
        shape = "x".join(map(str, ds.input_shape))
        raise NcprobeError(f"dataset {ds.name!r} has {shape} inputs, but the weights of "
                           f"{cfg.arch!r} expect {'x'.join(map(str, pre.shape))} images ("
                           f"{pre.source}); use an image folder (`dataset` imagefolder), which "
                           "is resized and cropped on load as the weights say")
    return ds


def plan_pretrained(cfg: ExtractConfig, device) -> ExtractionPlan:
    """The plan of a pretrained model from its hub (:mod:`ncprobe.extract.hub`): the weights
    from the package's cache, the images prepared as they expect, the input normalisation
    theirs (unless `normalize` says otherwise) and the dataset's classes mapped to the
    outputs."""
    if cfg.checkpoints:
        raise ModelError(f"{cfg.arch!r} with `pretrained` takes its weights from the hub; drop "
                         "`checkpoint` (or drop `pretrained` to load the checkpoint)")
    hm = hub.load(cfg.arch, cfg.pretrained or None)
    ds = _pretrained_dataset(cfg, hm)
    spec = cfg.normalize or ("auto" if hm.normalization else None)
    if spec == "auto":
        if hm.normalization is None:
            resolve_normalization("auto", {}, ds)  # raises, saying what auto needs
        mean, std, source = hm.normalization
        mode = f"auto ({source})"
    else:
        mean, std, mode = resolve_normalization(spec, {}, ds)
    if len(mean) != len(ds.mean):
        raise NcprobeError(f"the normalisation of {cfg.arch!r} has {len(mean)} channel(s), the "
                           f"dataset {len(ds.mean)}; pass `normalize` explicitly")
    model = wrap_module(hm.net, ds.input_shape, mean, std, cfg.classifier,
                        f"model {cfg.arch!r}", hm.n_outputs, cfg.output_key)
    used = _used_normalization(model)
    checkpoints = [{"path": hm.weights["file"], "sha256": hm.weights["sha256"], "epoch": 0}]
    model_attrs = {"arch": cfg.arch, "factory": cfg.arch,
                   "training": {"mode": None, "attack": None},
                   "normalization": {"mode": mode, "mean": used[0], "std": used[1]},
                   "pretrained": hm.weights,
                   "preprocess": hm.preprocess and hm.preprocess.as_dict()}
    return _plan(model, ds, cfg, device, epochs=[0], load=lambda k: None,
                 checkpoints=checkpoints, model_attrs=model_attrs, labels=hm.labels)


def state_sha256(model: torch.nn.Module) -> str:
    """A digest of a model's weights, for the fingerprint of a store of an in-memory model."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def plan_module(model: torch.nn.Module, ds: Dataset, cfg: ExtractConfig, device, *,
                epoch: int = 0, name: str | None = None) -> ExtractionPlan:
    """The plan of a model already in memory: an :class:`NCModel` as it is, any other
    ``nn.Module`` wrapped (:func:`~ncprobe.extract.models.wrap.wrap_module`; normalisation:
    ``cfg.normalize``, by default none, ``auto`` from the model's ``pretrained_cfg``)."""
    if not isinstance(model, NCModel):
        auto = cfg.normalize == "auto"
        mean, std, mode = resolve_normalization("none" if auto else cfg.normalize or "none",
                                                {}, ds)
        model = wrap_module(model, ds.input_shape, mean, std, cfg.classifier,
                            f"model {name or type(model).__name__!r}",
                            ds.n_classes if cfg.class_map is None else None, cfg.output_key)
        apply_auto_normalization(model, cfg, ds)
        if auto:
            mode = f"auto ({known_normalization(model.net)[2]})"
    else:
        mode = "model"
    used = _used_normalization(model)
    norm = {"mode": mode, "mean": used[0], "std": used[1]}
    checkpoints = [{"path": None, "sha256": state_sha256(model), "epoch": epoch}]
    model_attrs = {"arch": name or type(model).__name__, "factory": None,
                   "training": {"mode": None, "attack": None}, "normalization": norm}
    return _plan(model, ds, cfg, device, epochs=[epoch], load=lambda k: None,
                 checkpoints=checkpoints, model_attrs=model_attrs,
                 labels=hub.hf_labels(model.net))
