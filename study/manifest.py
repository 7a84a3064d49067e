"""A study manifest: one protocol, many models (docs/studies.md, "The manifest").

The manifest is TOML, read with the standard library's :mod:`tomllib`: a ``[protocol]`` table
shared by every model and one ``[[model]]`` table per model. Every key is checked here, so a
typo is one line naming the key and the keys that exist, before any model is loaded. Nothing
here imports torch: ``nc-study status`` and the comparison run on machines without it.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ncprobe.data.errors import NcprobeError


class StudyError(NcprobeError):
    """A study that cannot go on as asked: the message says what is wrong and what to do."""


class ManifestError(StudyError):
    """A study manifest that cannot be used; the message names the key and what was expected."""


#: a model's name is a folder name and a coordinate value
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$")


@dataclass(frozen=True)
class Protocol:
    """What every model of the study goes through (the ``[protocol]`` table)."""

    dataset: str
    attacks: tuple = ("clean",)
    data_root: str | None = None
    splits: tuple | None = None
    layers: tuple | None = None
    max_per_class: int | None = None
    limit: int | None = None
    normalize: str | None = None
    seed: int = 0
    batch_size: int = 512
    #: the condition whose network accuracy is a model's robust accuracy (default: the first
    #: condition that is not clean)
    robust_condition: str | None = None
    #: ``measured`` (ncprobe's ``net_acc``) or ``reported`` (the manifest's ``reported_robust``)
    robust_accuracy: str = "measured"
    #: the split whose accuracy is compared (default: test when present, else the first)
    accuracy_split: str | None = None


@dataclass(frozen=True)
class Train:
    """``[model.train]``: train the model with nc-train's settings when no checkpoint is
    given (the example's way to be one command); see ``ncprobe.extract.TrainConfig``."""

    settings: dict


@dataclass(frozen=True)
class ModelEntry:
    """One ``[[model]]`` table: where the model comes from, its overrides and metadata."""

    name: str
    arch: str | None = None
    checkpoint: str | None = None
    normalize: str | None = None
    classifier: str | None = None
    output_key: str | None = None
    layers: tuple | None = None
    arch_kwargs: dict = field(default_factory=dict)
    checkpoint_key: str | None = None
    strip_prefix: str | None = None
    #: the hub's pretrained weights (nc-extract --pretrained): "" for the default, else a tag
    pretrained: str | None = None
    #: a file mapping dataset class names to the model's outputs (nc-extract --class-map)
    class_map: str | None = None
    family: str | None = None
    training: str | None = None
    reported_clean: float | None = None
    reported_robust: float | None = None
    pair: str | None = None
    meta: dict = field(default_factory=dict)
    train: dict | None = None

    def signature(self, protocol: Protocol) -> str:
        """A hash of everything that decides this model's stores (not its metadata), the
        size and modification time of its checkpoint files included (a file replaced in
        place is new weights): a finished model is done again only when this changes."""
        decisive = {k: v for k, v in asdict(self).items()
                    if k not in ("family", "training", "reported_clean", "reported_robust",
                                 "pair", "meta")
                    # settings added later count only when set: finished models of older
                    # manifests keep their signature
                    and not (k in ("pretrained", "class_map") and v is None)}
        files = sorted(glob.glob(self.checkpoint)) if self.checkpoint else []
        decisive["checkpoint_files"] = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns)
                                        for f in files if os.path.isfile(f)]
        blob = json.dumps({"protocol": asdict(protocol), "model": decisive}, sort_keys=True,
                          default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Manifest:
    """A parsed, checked manifest; ``folder`` is where the study's files go."""

    path: Path
    folder: Path
    protocol: Protocol
    models: tuple

    def model(self, name: str) -> ModelEntry:
        for m in self.models:
            if m.name == name:
                return m
        raise ManifestError(f"no model {name!r} in {str(self.path)!r}; models: "
                            f"{', '.join(m.name for m in self.models)}")

    def robust_condition(self, conditions: list[str]) -> str:
        """The condition named for robust accuracy, checked against the store's ``conditions``."""
        want = self.protocol.robust_condition
        if want is None:
            rest = [c for c in conditions if c != "clean"]
            if not rest:
                raise ManifestError("the protocol has no attack besides clean: robust accuracy "
                                    "needs one (protocol `attacks`)")
            return rest[0]
        if want not in conditions:
            raise ManifestError(f"protocol robust_condition {want!r} is not a condition of the "
                                f"study; conditions: {', '.join(conditions)}")
        return want


_PROTOCOL_KEYS = {f for f in Protocol.__dataclass_fields__}
_MODEL_KEYS = {f for f in ModelEntry.__dataclass_fields__}


def _check_keys(table: dict, allowed: set, where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ManifestError(f"{where}: unknown key {unknown[0]!r}; expected one of "
                            f"{', '.join(sorted(allowed))}")


def _typed(table: dict, key: str, kind, where: str, default=None):
    value = table.get(key, default)
    if value is None or value is default:
        return value
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if kinds == (float,) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ManifestError(f"{where}: {key} = {value!r} is not a {names}")
    return value


def _strings(table: dict, key: str, where: str):
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()] if value != "all" else None
        return None if value is None else tuple(value)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ManifestError(f"{where}: {key} must be a list of strings, got {value!r}")
    return tuple(value)


def _protocol(table: dict) -> Protocol:
    where = "[protocol]"
    _check_keys(table, _PROTOCOL_KEYS, where)
    if not isinstance(table.get("dataset"), str):
        raise ManifestError(f"{where}: dataset is required (a dataset name, e.g. 'digits')")
    out = Protocol(
        dataset=table["dataset"],
        attacks=_strings(table, "attacks", where) or ("clean",),
        data_root=_typed(table, "data_root", str, where),
        splits=_strings(table, "splits", where),
        layers=_strings(table, "layers", where),
        max_per_class=_typed(table, "max_per_class", int, where),
        limit=_typed(table, "limit", int, where),
        normalize=_typed(table, "normalize", str, where),
        seed=_typed(table, "seed", int, where, 0),
        batch_size=_typed(table, "batch_size", int, where, 512),
        robust_condition=_typed(table, "robust_condition", str, where),
        robust_accuracy=_typed(table, "robust_accuracy", str, where, "measured"),
        accuracy_split=_typed(table, "accuracy_split", str, where))
    if out.robust_accuracy not in ("measured", "reported"):
        raise ManifestError(f"{where}: robust_accuracy = {out.robust_accuracy!r}; expected "
                            "'measured' (ncprobe's net_acc) or 'reported' (each model's "
                            "reported_robust)")
    for key in ("max_per_class", "limit", "batch_size"):
        value = getattr(out, key)
        if value is not None and value < 1:
            raise ManifestError(f"{where}: {key} = {value} must be >= 1")
    return out


def _pretrained(table: dict, where: str) -> str | None:
    """``pretrained = true`` (the source's default weights) or a tag."""
    value = _typed(table, "pretrained", (str, bool), where)
    if value is False:
        return None
    return "" if value is True else value


def _model(table: dict, i: int) -> ModelEntry:
    where = f"[[model]] #{i + 1}"
    if not isinstance(table, dict):
        raise ManifestError(f"{where}: expected a table")
    _check_keys(table, _MODEL_KEYS, where)
    name = table.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ManifestError(f"{where}: name = {name!r}; expected letters, digits and . _ + - "
                            "(it names the model's folder)")
    where = f"model {name!r}"
    for key in ("arch_kwargs", "meta", "train"):
        if key in table and not isinstance(table[key], dict):
            raise ManifestError(f"{where}: {key} must be a table")
    entry = ModelEntry(
        name=name, arch=_typed(table, "arch", str, where),
        checkpoint=_typed(table, "checkpoint", str, where),
        normalize=_typed(table, "normalize", str, where),
        classifier=_typed(table, "classifier", str, where),
        output_key=_typed(table, "output_key", (str, int), where),
        layers=_strings(table, "layers", where),
        arch_kwargs=dict(table.get("arch_kwargs", {})),
        checkpoint_key=_typed(table, "checkpoint_key", str, where),
        strip_prefix=_typed(table, "strip_prefix", str, where),
        pretrained=_pretrained(table, where),
        class_map=_typed(table, "class_map", str, where),
        family=_typed(table, "family", str, where),
        training=_typed(table, "training", str, where),
        reported_clean=_typed(table, "reported_clean", float, where),
        reported_robust=_typed(table, "reported_robust", float, where),
        pair=_typed(table, "pair", str, where),
        meta=dict(table.get("meta", {})), train=table.get("train"))
    if entry.checkpoint is None and entry.train is None and entry.pretrained is None \
            and not (entry.arch or "").startswith("hf:"):
        raise ManifestError(f"{where}: no checkpoint; give checkpoint (a file or glob), a "
                            "[model.train] table, pretrained (the hub's weights) or arch "
                            "hf:FOLDER")
    for key in ("reported_clean", "reported_robust"):
        value = getattr(entry, key)
        if value is not None and not 0 <= value <= 1:
            raise ManifestError(f"{where}: {key} = {value} is an accuracy in [0, 1]")
    return entry


def load_manifest(path, folder=None) -> Manifest:
    """Read and check the manifest at ``path``; the study's files go to ``folder`` (default:
    the manifest's folder, ``<stem>.study``). Relative paths in the manifest (checkpoints,
    data_root, class maps, hf: folders) are relative to the manifest's folder."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {str(path)!r} does not exist; expected a TOML file "
                            "(docs/studies.md)")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"manifest {str(path)!r} is not valid TOML: {e}") from None
    _check_keys(raw, {"protocol", "model"}, f"manifest {str(path)!r}")
    if not isinstance(raw.get("protocol"), dict):
        raise ManifestError(f"manifest {str(path)!r} has no [protocol] table")
    models = raw.get("model")
    if not isinstance(models, list) or not models:
        raise ManifestError(f"manifest {str(path)!r} has no [[model]] tables")
    base = path.resolve().parent
    protocol = _protocol(raw["protocol"])
    if protocol.data_root is not None:
        protocol = replace(protocol, data_root=str(base / protocol.data_root))
    entries = []
    for i, table in enumerate(models):
        entry = _model(table, i)
        if entry.checkpoint is not None and not Path(entry.checkpoint).is_absolute():
            entry = replace(entry, checkpoint=str(base / entry.checkpoint))
        # a folder beside the manifest; anything else is a hub id (ORG/NAME)
        if (entry.arch or "").startswith("hf:") and (base / entry.arch[3:]).is_dir() \
                and not Path(entry.arch[3:]).is_absolute():
            entry = replace(entry, arch=f"hf:{base / entry.arch[3:]}")
        if entry.class_map is not None and not Path(entry.class_map).is_absolute():
            entry = replace(entry, class_map=str(base / entry.class_map))
        entries.append(entry)
    names = [e.name for e in entries]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ManifestError(f"manifest {str(path)!r}: model name {dup[0]!r} appears twice; "
                            "names must be unique")
    for e in entries:
        if e.pair is not None and e.pair not in names:
            raise ManifestError(f"model {e.name!r}: pair = {e.pair!r} names no model of the "
                                "study")
        if e.pair == e.name:
            raise ManifestError(f"model {e.name!r}: pair names the model itself")
    if protocol.robust_accuracy == "reported":
        missing = [e.name for e in entries if e.reported_robust is None]
        if missing:
            raise ManifestError(f"robust_accuracy = 'reported' but model {missing[0]!r} has no "
                                "reported_robust")
    folder = Path(folder) if folder is not None else base / f"{path.stem}.study"
    return Manifest(path=path, folder=folder, protocol=protocol, models=tuple(entries))

