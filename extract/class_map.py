"""Which output of the model is each dataset class, when the model has more outputs.

A pretrained ImageNet-1k classifier measured on ten of its classes keeps its 1000 outputs: its
prediction and an attack's target stay among them. :class:`ClassMap` says which output each
dataset class is; the store keeps the logits and the classifier rows of those outputs and
writes a prediction or target outside them as :data:`~ncprobe.data.store.schema.OUTSIDE`
(docs/your-model.md, "Classes a subset of the model's").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ncprobe.data.datasets.imagenet import are_wnids, imagenet1k_wnids
from ncprobe.data.errors import NcprobeError
from ncprobe.data.store.schema import OUTSIDE


class ClassMapError(NcprobeError):
    """The dataset's classes cannot be matched to the model's outputs; the message says why."""


@dataclass(frozen=True)
class ClassMap:
    """Output ``index[c]`` of the model is dataset class ``c``; ``n_outputs`` in all."""

    index: tuple[int, ...]
    n_outputs: int
    source: str

    def as_dict(self) -> dict:
        """JSON-able, for the store's attributes and fingerprint."""
        return {"index": list(self.index), "outputs": self.n_outputs, "source": self.source}

    def to_outputs(self, labels: torch.Tensor) -> torch.Tensor:
        """Dataset classes (n,) -> the model's output indices (n,)."""
        return torch.as_tensor(self.index, device=labels.device)[labels]

    def to_classes(self, outputs: torch.Tensor) -> torch.Tensor:
        """Output indices (n,) -> dataset classes, :data:`OUTSIDE` for an output of no
        dataset class; negative codes (-1: untargeted) are kept."""
        inverse = torch.full((self.n_outputs,), OUTSIDE, dtype=torch.int64,
                             device=outputs.device)
        inverse[torch.as_tensor(self.index, device=outputs.device)] = torch.arange(
            len(self.index), device=outputs.device)
        return torch.where(outputs >= 0, inverse[outputs.clamp_min(0)], outputs)


def read_class_map(path) -> dict:
    """``{dataset class name: output index}`` from a JSON object or a text file of
    ``name index`` lines (``#`` comments)."""
    path = Path(path)
    if not path.is_file():
        raise ClassMapError(f"`class_map` {str(path)!r} does not exist; expected a JSON object "
                            "or lines 'class_name output_index'")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ClassMapError(f"`class_map` {str(path)!r} is not JSON ({e.msg} at line "
                                f"{e.lineno}); expected {{\"class_name\": output_index}}") from None
        if not isinstance(raw, dict):
            raise ClassMapError(f"`class_map` {str(path)!r} holds a {type(raw).__name__}; "
                                "expected an object {\"class_name\": output_index}")
        items = list(raw.items())
    else:
        items = []
        for n, line in enumerate(text.splitlines(), 1):
            line = line.split("#")[0].strip()
            if not line:
                continue
            name, _, index = line.rpartition(" ") if "\t" not in line else line.partition("\t")
            if not name.strip():
                raise ClassMapError(f"`class_map` {str(path)!r} line {n} is {line!r}; expected "
                                    "'class_name output_index'")
            items.append((name.strip(), index.strip()))
    out = {}
    for name, index in items:
        try:
            out[str(name)] = int(index)
        except (TypeError, ValueError):
            raise ClassMapError(f"`class_map` {str(path)!r}: class {name!r} maps to {index!r}; "
                                "expected an integer output index") from None
    return out


def _some(names, k=4) -> str:
    return ", ".join(names[:k]) + (", ..." if len(names) > k else "")


def _label_key(label: str) -> str:
    """A label as matched to a class folder: its first comma-separated name, lower case
    (torchvision's 'tench', Hugging Face's 'tench, Tinca tinca')."""
    return str(label).split(",")[0].strip().lower()


def _by_labels(class_names, labels) -> list | None:
    """Each class's output by the model's label names, or None unless every class has one."""
    keys = {}
    for i, label in enumerate(labels):
        keys.setdefault(_label_key(label), i)
    index = [keys.get(_label_key(n)) for n in class_names]
    return None if None in index else index


def resolve_class_map(class_names, n_outputs: int, labels=None, path=None,
                      what: str = "the model") -> ClassMap | None:
    """The map from the dataset's classes to the model's ``n_outputs`` outputs, or None when
    they are the same classes in the same order.

    In this order: the file ``path`` (``{class name: output index}``); class folders named by
    ImageNet WordNet ids on a 1000-output model; the model's own label names (``labels``,
    e.g. a Hugging Face ``id2label``; a label matches a class by its first comma-separated
    name, ignoring case) when every class has one; else, with as many outputs as classes,
    none. Every class must map to its own output in ``0 .. n_outputs - 1``.
    """
    class_names = [str(n) for n in class_names]
    c = len(class_names)
    if c > n_outputs:
        raise ClassMapError(f"the dataset has {c} classes but {what} only {n_outputs} outputs; "
                            "expected the dataset's classes to be among the model's")
    if path is not None:
        given = read_class_map(path)
        missing = [n for n in class_names if n not in given]
        if missing:
            raise ClassMapError(f"`class_map` {str(path)!r} maps no output to class(es) "
                                f"{', '.join(missing[:5])}; expected every class of the "
                                f"dataset ({_some(class_names)})")
        index, source = [given[n] for n in class_names], f"class_map {Path(path).name}"
    elif n_outputs == 1000 and c < 1000 and are_wnids(class_names):
        wnids = imagenet1k_wnids()
        unknown = [n for n in class_names if n not in wnids]
        if unknown:
            raise ClassMapError(f"class folder(s) {', '.join(unknown[:5])} are not ImageNet-1k "
                                "WordNet ids; expected ids of its 1000 classes (n01440764, ...) "
                                "or `class_map`")
        index, source = [wnids.index(n) for n in class_names], "ImageNet-1k WordNet ids"
    elif labels is not None and _by_labels(class_names, labels):
        # also with as many outputs as classes: a model's labels in another order than the
        # sorted class folders must not be read as the same order
        index, source = _by_labels(class_names, labels), "the model's label names"
        if index == list(range(n_outputs)):
            return None
    elif c == n_outputs:
        return None
    else:
        raise ClassMapError(
            f"{what} has {n_outputs} outputs and the dataset {c} classes "
            f"({_some(class_names)}), which are neither "
            "ImageNet WordNet ids (n01440764, ...) nor the model's label names; pass "
            "`class_map` (a file of 'class_name output_index' lines) or the class count to "
            "the model (num_classes)")
    bad = [(n, i) for n, i in zip(class_names, index, strict=True)
           if not 0 <= i < n_outputs]
    if bad:
        raise ClassMapError(f"class {bad[0][0]!r} maps to output {bad[0][1]}, but {what} has "
                            f"outputs 0..{n_outputs - 1}")
    seen = {}
    for name, i in zip(class_names, index, strict=True):
        if i in seen:
            raise ClassMapError(f"classes {seen[i]!r} and {name!r} both map to output {i}; "
                                "expected one output per class")
        seen[i] = name
    return ClassMap(tuple(int(i) for i in index), int(n_outputs), source)

