"""ncprobe's data layer, shared by every stage and never importing torch: ``datasets`` (images
and labels as numpy arrays), ``store`` (the activation and metrics stores), the error base
class and the options checks (``errors``, ``params``) and what every command shares
(``cli_support``)."""

from .datasets import Dataset, DatasetError, load_dataset
from .store import (
    IncompleteStoreError,
    NotInStoreError,
    SchemaError,
    StoreError,
    open_activations,
    open_metrics,
    schema,
)

__all__ = ["Dataset", "DatasetError", "IncompleteStoreError", "NotInStoreError", "SchemaError",
           "StoreError", "load_dataset", "open_activations", "open_metrics", "schema"]
