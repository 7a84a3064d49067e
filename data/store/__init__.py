"""The activation and metrics stores: schema, layout, reading, writing, chunk files, locks
and the filesystems they live on (docs/store.md).

The reader's API is re-exported here: ``from ncprobe.data.store import open_activations``.
"""

from . import fs, schema
from .reader import (
    IncompleteStoreError,
    NotInStoreError,
    SchemaError,
    StoreError,
    bad_chunks,
    check_schema,
    delete_chunks,
    layer_dataset,
    layers,
    load_variables,
    missing_chunks,
    open_activations,
    open_metrics,
    open_tree,
    root_attrs,
    select_conditions,
    splits,
    store_arrays,
    validate_activations,
    verify_chunks,
)

__all__ = ["bad_chunks", "check_schema", "delete_chunks", "fs", "IncompleteStoreError",
           "layer_dataset", "layers", "load_variables", "missing_chunks", "NotInStoreError",
           "open_activations", "open_metrics", "open_tree", "root_attrs",
           "schema", "SchemaError", "select_conditions", "splits", "store_arrays", "StoreError",
           "validate_activations", "verify_chunks"]
