"""A complete activation store from in-memory arrays: tests, benchmarks, imported features."""

from __future__ import annotations

import numpy as np

from .layout import LayerSpec
from .writer import ActivationStoreWriter


def write_activation_store(path, features, labels, *, n_classes, conditions=("clean",),
                           checkpoints=(0,), outputs=None, classifier=None, dtype="float32",
                           chunk_samples=None, sample_index=None, attrs=None):
    """Write a complete store from in-memory arrays (tests, benchmarks, imported features).

    Parameters
    ----------
    features : dict of split to dict of layer to ndarray (checkpoint, condition, sample, feature)
    labels : dict of split to ndarray (sample,)
    outputs : dict of split to dict with ``logits`` (checkpoint, condition, sample, class) and
        optionally ``pred`` and ``target``; by default logits are zeros and pred = label.
    classifier : tuple (layer, weight (checkpoint, class, feature), bias (checkpoint, class))
    """
    splits = list(features)
    layer_names = list(features[splits[0]])
    specs = [LayerSpec(name, d, name, (features[splits[0]][name].shape[-1],), "flatten",
                       features[splits[0]][name].shape[-1]) for d, name in enumerate(layer_names)]
    conds = [c if isinstance(c, dict) else {"name": c} for c in conditions]
    samples = {s: ((sample_index or {}).get(s, np.arange(len(labels[s]))), labels[s])
               for s in splits}
    w = ActivationStoreWriter(
        path, layers=specs, checkpoints=checkpoints, conditions=conds, samples=samples,
        n_classes=n_classes, config={"source": "write_activation_store"},
        attrs=dict({"dataset": {"name": "arrays", "splits": splits}, "model": {}},
                   **(attrs or {})),
        dtype=dtype, chunk_samples=chunk_samples,
        classifier=None if classifier is None else (classifier[0], classifier[1].shape[-1]))
    w.open(overwrite=True)
    for s in splits:
        y = np.asarray(labels[s])
        out = (outputs or {}).get(s, {})
        for k in range(len(w.checkpoints)):
            for q in range(len(conds)):
                for b, (lo, hi) in enumerate(w.layout.blocks(s)):
                    logits = out.get("logits")
                    logits = (np.zeros((hi - lo, n_classes)) if logits is None
                              else logits[k, q, lo:hi])
                    pred = out.get("pred")
                    pred = (logits.argmax(-1) if out.get("logits") is not None else y[lo:hi]) \
                        if pred is None else pred[k, q, lo:hi]
                    target = out.get("target")
                    target = np.full(hi - lo, -1) if target is None else target[k, q, lo:hi]
                    w.write_block(s, k, q, b, {n: features[s][n][k, q, lo:hi]
                                               for n in layer_names},
                                  logits, pred, target, np.zeros(hi - lo))
    if classifier is not None:
        for k in range(len(w.checkpoints)):
            w.write_classifier(k, classifier[1][k], classifier[2][k])
    w.finalize()
    return w
