"""ncprobe's data layer: datasets as numpy arrays and the two store schemas. Never imports torch.
"""

from . import schema
from .datasets import Dataset, DatasetError, load_dataset
from .store import (
    IncompleteStoreError,
    NotInStoreError,
    SchemaError,
    StoreError,
    open_activations,
    open_metrics,
)

__all__ = ["Dataset", "DatasetError", "IncompleteStoreError", "NotInStoreError", "SchemaError",
           "StoreError", "load_dataset", "open_activations", "open_metrics", "schema"]
