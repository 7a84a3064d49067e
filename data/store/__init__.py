"""The activation and metrics stores: schema, layout, reading, writing, chunk files, locks
and the filesystems they live on (docs/store.md).

The reader's API is re-exported here: ``from ncprobe.data.store import open_activations``;
the rest (the writer, chunk checks and repairs) lives in its modules.
"""

from . import fs, schema
from .reader import (
    IncompleteStoreError,
    NotInStoreError,
    SchemaError,
    StoreError,
    layer_dataset,
    layers,
    load_variables,
    open_activations,
    open_metrics,
    select_conditions,
    splits,
    verify_chunks,
)

__all__ = ["fs", "IncompleteStoreError", "layer_dataset", "layers", "load_variables",
           "NotInStoreError", "open_activations", "open_metrics", "schema", "SchemaError",
           "select_conditions", "splits", "StoreError", "verify_chunks"]
