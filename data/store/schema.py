"""Names of the two on-disk contracts: ``ncprobe-activations/1`` and ``ncprobe-metrics/2``.

Every group, dim, variable and attribute name used by more than one stage lives here, so the
writer (``extract/``), the readers (``analyze/``, ``plots/``) and the docs cannot drift apart.
See ``docs/store.md`` and ``docs/metrics.md`` for their meaning.
"""

ACTIVATIONS_SCHEMA = "ncprobe-activations/1"
METRICS_SCHEMA = "ncprobe-metrics/2"
#: what a store of an older schema holds differently, said when such a store is refused
SUPERSEDED = {
    "ncprobe-metrics/1": "its nc3 is the unsquared distance; rerun nc-analyze (analyze_store) "
                         "on its activation store to write nc3 as docs/metrics.md defines it",
}

# dims
SAMPLE = "sample"
FEATURE = "feature"
FEATURE2 = "feature2"
CHECKPOINT = "checkpoint"
CONDITION = "condition"
CLASS = "class"
LABEL = "label"
VERTEX = "vertex"
SPLIT = "split"
LAYER = "layer"
GROUPING = "grouping"

# activation store
LAYERS_GROUP = "layers"
OUTPUTS_GROUP = "outputs"
CLASSIFIER_GROUP = "classifier"
FEATURES = "features"
LOGITS = "logits"
PRED = "pred"
TARGET = "target"
PERTURBATION_NORM = "perturbation_norm"
WEIGHT = "weight"
BIAS = "bias"
CLEAN = "clean"
#: ``pred`` and ``target`` of a model whose outputs are more than the dataset's classes: the
#: output is a class outside the dataset (docs/your-model.md, "Classes a subset of the model's")
OUTSIDE = -2
LAYER_ATTRS = ("layer", "depth", "module", "original_shape", "reduction")
ROOT_ATTRS = ("schema", "n_classes", "class_names", "dataset", "model", "layers", "conditions",
              "command", "created", "versions", "complete")

# metrics store
SUMMARY_GROUP = "summary"
PER_CLASS_GROUP = "per_class"
TRANSITIONS_GROUP = "transitions"
METRIC_LAYERS_GROUP = "layers"
SEPARATION_GROUP = "separation"
DEPTH = "depth"
# the metrics themselves are declared in ncprobe.analyze.registry, the one list of them


def features_path(split: str, layer: str) -> str:
    """Group path of one layer's features in an activation store."""
    return f"{split}/{LAYERS_GROUP}/{layer}"


def outputs_path(split: str) -> str:
    """Group path of the network outputs of one split."""
    return f"{split}/{OUTPUTS_GROUP}"
