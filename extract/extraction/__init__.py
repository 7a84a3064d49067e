"""Extraction: the plan of what to compute (:mod:`.plan`), layer capture and reduction
(:mod:`.capture`, :mod:`.reduction`), the block walk that attacks, captures and writes
(:mod:`.pipeline`), its background writer and its sharing among processes."""

from .pipeline import OUTPUT, compute_block, extract_store, list_layers, run, run_plan
from .plan import ExtractConfig, ExtractionPlan

__all__ = ["OUTPUT", "ExtractConfig", "ExtractionPlan", "compute_block", "extract_store",
           "list_layers", "run", "run_plan"]
