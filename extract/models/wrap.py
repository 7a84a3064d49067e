"""Any ``nn.Module`` classifier as an :class:`~.base.NCModel`: its stages, its classifier and
the layer feeding it, each found by a rule that is checked, never guessed.

* The classifier is an ``nn.Linear`` at any depth: the one named, else the last whose output
  width is the class count.
* The layer feeding it is captured by a forward pre-hook on the classifier itself (capture
  point ``penultimate``): exactly what it receives, so ``W h + b`` is its output by
  construction; :func:`verify_classifier` checks that this output is the model's logits.
* The default capture points are the network's stages (:func:`default_stages`).
"""

from __future__ import annotations

import torch
from torch import nn

from ncprobe.data.errors import NcprobeError

from .base import NCModel, select_logits

#: the capture point of what the classifier receives (``classifier_input`` if the network
#: has a module of that name)
FEATURE_POINT = "penultimate"
#: share of a module's parameters above which a child is walked into rather than captured
DESCEND_SHARE = 0.9
#: the largest relative error of ``W h + b`` against the model's logits that counts as equal
#: (float32 matrix products in another order differ by about 1e-6)
LOGITS_RTOL = 1e-4
#: modules whose output is their input in eval mode: never a default capture point
_PASS_THROUGH = (nn.Dropout, nn.Identity)


class ModelError(NcprobeError):
    """An architecture or checkpoint that cannot be used; the message says why."""


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _contains(path: str, other: str) -> bool:
    return other == path or other.startswith(path + ".")


def default_stages(net: nn.Module, classifier: str) -> dict:
    """Capture points of a network, in definition order: module path -> module path.

    Its children, except that the walk goes into a child that is a ``ModuleList`` or
    ``ModuleDict`` (never called itself), that holds at least :data:`DESCEND_SHARE` of its
    parent's parameters without holding the classifier (a backbone: DenseNet's ``features``,
    a vision transformer's ``blocks``, a Hugging Face ``...ForImageClassification``'s
    ``vit``), or that is its parent's only child with parameters (a wrapper such as a
    LightningModule's ``model``). Dropout and Identity modules are skipped.
    """
    def walk(module, prefix):
        total = _n_params(module)
        with_params = [n for n, c in module.named_children() if _n_params(c)]
        out = {}
        for name, child in module.named_children():
            path = prefix + name
            if isinstance(child, _PASS_THROUGH):
                continue
            inner = any(True for _ in child.children())
            backbone = (total and _n_params(child) >= DESCEND_SHARE * total
                        and not _contains(path, classifier))
            wrapper = with_params == [name] and _contains(path, classifier)
            if inner and (isinstance(child, (nn.ModuleList, nn.ModuleDict)) or backbone
                          or wrapper):
                out.update(walk(child, path + "."))
            else:
                out[path] = path
        return out

    return walk(net, "")


def choose_classifier(net: nn.Module, n_classes: int | None, classifier: str | None,
                      what: str) -> str:
    """The module path of the final ``nn.Linear``: ``classifier`` if given, else the last
    ``nn.Linear`` with ``n_classes`` outputs; a one-line error lists the candidates."""
    linears = {name: m.out_features for name, m in net.named_modules()
               if isinstance(m, nn.Linear)}
    listed = ", ".join(f"{n} ({w} outputs)" for n, w in linears.items()) or "none"
    if classifier is not None:
        if classifier not in linears:
            raise ModelError(f"{what}: `classifier` {classifier!r} is not an nn.Linear of it; "
                             f"its nn.Linear modules: {listed}")
        return classifier
    fitting = [n for n, w in linears.items() if n_classes is None or w == n_classes]
    if not fitting:
        raise ModelError(
            f"{what}: no nn.Linear has {n_classes} outputs (the dataset's class count); its "
            f"nn.Linear modules: {listed}; pass the class count to the model (num_classes) "
            "or name the classifier with `classifier`")
    return fitting[-1]


def wrap_module(net: nn.Module, input_shape, mean, std, classifier: str | None = None,
                what: str = "the model", n_classes: int | None = None,
                output_key: str | None = None) -> NCModel:
    """Any classifier as an :class:`NCModel`.

    Capture points: the network's ``capture_points`` attribute, else :func:`default_stages`,
    plus ``penultimate``, the classifier's input. The classifier: ``classifier``, else the
    network's ``classifier_path`` attribute, else the last ``nn.Linear`` with ``n_classes``
    outputs. ``output_key`` says where the logits are in what ``net`` returns.
    """
    classifier = choose_classifier(net, n_classes,
                                   classifier or getattr(net, "classifier_path", None), what)
    points = dict(getattr(net, "capture_points", None) or default_stages(net, classifier))
    feature = FEATURE_POINT if FEATURE_POINT not in points else "classifier_input"
    if feature in points:
        raise ModelError(f"{what}: has capture points named both 'penultimate' and "
                         "'classifier_input'; rename one (they name the classifier's input)")
    points[feature] = f"{classifier}:input"
    model = NCModel(net, mean, std, len(input_shape), points, feature, classifier, output_key)
    model.what = what
    return model


def verify_classifier(model: NCModel, example: torch.Tensor, n_classes: int, what: str,
                      explicit: bool) -> float:
    """Check, on ``example``, that the classifier's ``W h + b`` is the model's logits and that
    there are ``n_classes`` of them; return the relative error ``max |Wh + b - logits| /
    max |logits|``.

    A mismatch is a one-line :class:`ModelError` when the classifier was chosen by default;
    a classifier the user named may be followed by more computation (a calibration layer),
    and then the error is returned for the store to record.
    """
    fc = model.classifier_module()
    seen = []
    handle = fc.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            logits = model(example)
    finally:
        model.train(was)
        handle.remove()
    if logits.dim() != 2 or logits.shape[1] != n_classes:
        raise ModelError(f"{what} outputs logits of shape {tuple(logits.shape[1:])}, but the "
                         f"dataset has {n_classes} classes; pass the class count to the "
                         "model (num_classes) or use a checkpoint of a "
                         f"{n_classes}-class model")
    if len(seen) != 1:
        raise ModelError(f"{what}: the classifier {model.classifier[4:]!r} ran {len(seen)} "
                         "times in one forward pass; expected once (name the final linear "
                         "layer with `classifier`)")
    h = seen[0].double()
    if h.dim() != 2:
        raise ModelError(f"{what}: the classifier {model.classifier[4:]!r} receives shape "
                         f"{tuple(h.shape[1:])} per sample, expected a vector; it is not the "
                         "final classifier (name it with `classifier`)")
    w = fc.weight.detach().double()
    b = fc.bias.detach().double() if fc.bias is not None else 0.0
    err = float((h @ w.T + b - logits.double()).abs().max()
                / logits.double().abs().max().clamp_min(1e-30))
    if err > LOGITS_RTOL and not explicit:
        raise ModelError(
            f"{what}: W h + b of its last nn.Linear with {n_classes} outputs, "
            f"{model.classifier[4:]!r}, differs from the model's logits (relative error "
            f"{err:.2g}): something follows it; name the final linear layer with "
            "`classifier`")
    return err


__all__ = ["FEATURE_POINT", "ModelError", "choose_classifier", "default_stages",
           "select_logits", "verify_classifier", "wrap_module"]
