"""``robustbench:NAME[@DATASET/THREAT]``: a RobustBench entry, by its own model definitions.

The installed ``robustbench`` package's zoo (``robustbench.model_zoo.models.model_dicts``,
keyed by its ``BenchmarkDataset`` and ``ThreatModel`` enums, each entry a dict with the
network's constructor under ``model``) builds the network; the weights are read from
RobustBench's own folder layout, ``MODEL_DIR/<dataset>/<threat>/<NAME>.pt`` (what
``robustbench.utils.load_model`` reads without downloading when the file is there), through
ncprobe's checkpoint loading (``state_dict`` wrappers and ``module.`` prefixes). ncprobe
never downloads: a missing file is a one-line error that names the path and RobustBench's own
command that fetches it. An entry whose weights are several files (an ensemble: a list of ids)
has no single layer feeding one classifier and is refused. RobustBench's models take inputs
in [0, 1] and normalise inside, so the source's default normalisation is ``none``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from torch import nn

from .wrap import ModelError

PREFIX = "robustbench:"
INSTALL = ("RobustBench's instructions install it with pip install "
           "git+https://github.com/RobustBench/robustbench.git (its autoattack comes from "
           "git, and its pkg_resources needs setuptools < 81)")


def is_robustbench(arch: str | None) -> bool:
    return bool(arch) and arch.startswith(PREFIX)


def parse(arch: str) -> tuple[str, str | None, str | None]:
    """``(NAME, dataset or None, threat or None)`` of ``robustbench:NAME[@DATASET/THREAT]``."""
    spec = arch[len(PREFIX):]
    name, at, rest = spec.partition("@")
    dataset, slash, threat = rest.partition("/")
    if not name or (at and (not dataset or not slash or not threat)):
        raise ModelError(f"{arch!r}: expected robustbench:NAME or "
                         "robustbench:NAME@DATASET/THREAT, e.g. "
                         "robustbench:Carmon2019Unlabeled@cifar10/Linf")
    return name, dataset or None, threat or None


def _zoo():
    try:
        return importlib.import_module("robustbench.model_zoo.models").model_dicts
    except Exception as e:  # noqa: BLE001 - its imports fail in several ways (see INSTALL)
        first = " ".join(str(e).split())[:160]
        raise ModelError(f"the robustbench: source needs the package 'robustbench', which does "
                         f"not import here ({type(e).__name__}: {first}); {INSTALL}") from None


def _value(key) -> str:
    return str(getattr(key, "value", key))


def entry(arch: str, dataset: str | None = None) -> tuple[str, str, str, dict]:
    """``(NAME, dataset, threat, zoo entry)``: the one entry ``arch`` names (its suffix, else
    ``dataset``, else the only dataset and threat model that have NAME)."""
    name, want_dataset, want_threat = parse(arch)
    want_dataset = want_dataset or dataset
    found = []
    for ds_key, threats in _zoo().items():
        for threat_key, models in threats.items():
            if name in models and want_dataset in (None, _value(ds_key)) \
                    and want_threat in (None, _value(threat_key)):
                found.append((_value(ds_key), _value(threat_key), models[name]))
    if not found:
        where = f" for {want_dataset or 'any dataset'}/{want_threat or 'any threat model'}"
        raise ModelError(f"{arch!r}: RobustBench has no entry {name!r}{where}; the names are "
                         "those of its leaderboards (robustbench.model_zoo)")
    if len(found) > 1:
        options = ", ".join(f"{PREFIX}{name}@{d}/{t}" for d, t, _ in found)
        raise ModelError(f"{arch!r} names several RobustBench entries; choose one: {options}")
    ds, threat, spec = found[0]
    if isinstance(spec.get("gdrive_id"), (list, tuple)):
        raise ModelError(f"{arch!r} is an ensemble of {len(spec['gdrive_id'])} networks "
                         "(RobustBench loads one weight file per member): no single layer feeds "
                         "one classifier, so ncprobe cannot measure it")
    return name, ds, threat, spec


def build(arch: str, dataset: str | None = None) -> nn.Module:
    """The untrained network of the entry (RobustBench's own constructor)."""
    _, _, _, spec = entry(arch, dataset)
    try:
        return spec["model"]()
    except Exception as e:  # noqa: BLE001 - the package's own errors
        raise ModelError(f"{arch!r} could not be built by robustbench: {type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]}") from None


def checkpoint(arch: str, given, dataset: str | None = None) -> Path:
    """The weight file: ``given`` when it is a file, ``given/<dataset>/<threat>/<NAME>.pt``
    when it is RobustBench's model folder."""
    name, ds, threat, _ = entry(arch, dataset)
    path = Path(given)
    if path.is_dir():
        path = path / ds / threat / f"{name}.pt"
    if not path.is_file():
        raise ModelError(
            f"{arch!r}: no weights at {str(path)!r} (RobustBench's layout MODEL_DIR/{ds}/"
            f"{threat}/{name}.pt); fetch them with RobustBench's own loader: python -c "
            f"\"from robustbench.utils import load_model; load_model('{name}', model_dir="
            f"'MODEL_DIR', dataset='{ds}', threat_model='{threat}')\"")
    return path
