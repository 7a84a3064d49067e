"""The extraction stage (torch): train models, attack them and write their per-layer features
to activation stores. By concept: ``models`` (built-in, zoo and foreign models, the classifier
check), ``attacks`` (one object per attack, by name), ``training`` (standard, PGD-AT, TRADES;
``nc-train``), ``extraction`` (plan, capture, reduction, the block walk; ``nc-extract`` in
:mod:`.cli`), ``checkpoints`` and ``runtime`` (devices, versions) shared by both, and
:mod:`.api` for models already in memory.
"""

from .api import as_dataset, extract_features, extract_model
from .attacks import Attack, parse_attack, register_attack
from .extraction import ExtractConfig, extract_store, list_layers
from .models import build_model
from .training import TrainConfig, train

__all__ = ["Attack", "ExtractConfig", "TrainConfig", "as_dataset", "build_model",
           "extract_features", "extract_model", "extract_store", "list_layers", "parse_attack",
           "register_attack", "train"]
