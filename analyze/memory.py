"""How much of a store the analysis may hold in memory, and which layers it reads only once.

Exact NC1 and NCC need two passes over the features (the class means come first). A layer
whose blocks for a split fit the budget is read once, kept in its stored dtype and both passes
run from memory; a layer that does not fit is streamed twice, with memory flat in N. The
results are bitwise identical either way: the chunks, and so every sum, are the same
(docs/scale-out.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import psutil
from dask.utils import format_bytes, parse_bytes

from ncprobe.data.store import fs

from .blocks import AnalysisError

#: share of the memory available (this process, or each dask worker's limit) that ``auto``
#: lets the analysis hold: the passes' own working memory and the stats need the rest
AUTO_FRACTION = 0.5

#: under ``auto``, the most a local store's batch holds: reading a chunk again from a local
#: disk (page cache and lz4) costs about what faulting in fresh memory to keep it does, so
#: large local layers stream while small ones are held (docs/scale-out.md, "Read once or
#: twice", has the figures); remote stores, where a read is a network transfer, are held up
#: to the whole budget
AUTO_LOCAL_BATCH = 256 * 2**20

MEMORY_HELP = ("bytes the analysis may hold to read each layer once: 'auto' (the default: "
               f"{AUTO_FRACTION:g} of the memory available, or of the dask workers' memory "
               "limits; for a local store at most 256 MiB at a time), a number of bytes or a "
               "size such as 8GB or 512MiB; 0 streams every layer twice")


def parse_memory(memory) -> int | None:
    """Bytes of a ``memory`` value (None for ``auto``), or a one-line error before any work."""
    if memory is None or memory == "auto":
        return None
    if isinstance(memory, bool):
        raise AnalysisError(f"`memory` {memory!r}: expected 'auto', bytes (>= 0) or a size "
                            "such as 8GB")
    if isinstance(memory, int):
        value = memory
    else:
        try:
            value = parse_bytes(str(memory))
        except (ValueError, TypeError):
            raise AnalysisError(f"`memory` {memory!r} is not a size; expected 'auto', bytes "
                                "(>= 0) or a size such as 8GB or 512MiB") from None
    if value < 0:
        raise AnalysisError(f"`memory` must be >= 0 bytes, got {value}")
    return int(value)


def _cgroup_available() -> int | None:
    """Bytes left under this process's cgroup (v2 or v1) memory limit, if it has one."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:  # v1 writes a huge number for "no limit"
            return max(int(limit) - usage, 0)
    return None


def auto_budget(store, client=None) -> tuple[int, str]:
    """The ``auto`` budget for ``store``: :func:`available_memory`, and for a local store at
    most :data:`AUTO_LOCAL_BATCH`."""
    budget, source = available_memory(client)
    if fs.is_local(store) and budget > AUTO_LOCAL_BATCH:
        return AUTO_LOCAL_BATCH, f"{source}; at most {format_bytes(AUTO_LOCAL_BATCH)} for a " \
                                 "local store"
    return budget, source


def available_memory(client=None) -> tuple[int, str]:
    """Bytes the analysis may hold under ``auto``, and where the figure comes from."""
    if client is not None:
        limits = [w.get("memory_limit") or 0
                  for w in client.scheduler_info().get("workers", {}).values()]
        if limits and all(limits):
            return int(AUTO_FRACTION * sum(limits)), (
                f"{AUTO_FRACTION:g} of {len(limits)} dask workers' limits "
                f"({format_bytes(sum(limits))})")
    free = psutil.virtual_memory().available
    cgroup = _cgroup_available()
    if cgroup is not None:
        free = min(free, cgroup)
    return int(AUTO_FRACTION * free), f"{AUTO_FRACTION:g} of the {format_bytes(free)} available"


@dataclass
class ReadPlan:
    """Which (split, layer) keys are read once and kept, in batches that each fit the budget,
    and which are streamed twice."""

    budget: int
    source: str
    batches: list = field(default_factory=list)
    streamed: list = field(default_factory=list)
    sizes: dict = field(default_factory=dict)

    def describe(self) -> str:
        held = sum(len(b) for b in self.batches)
        largest = max(self.sizes.values(), default=0)
        return (f"memory budget {format_bytes(self.budget)} ({self.source}): {held} of "
                f"{len(self.sizes)} split/layer arrays read once and kept, "
                f"{len(self.streamed)} streamed twice (largest {format_bytes(largest)})")


def plan_reads(sizes: dict, budget: int, source: str, reference_split: str | None) -> ReadPlan:
    """Group the (split, layer) keys of ``sizes`` (bytes, in the order of work) into batches
    of at most ``budget`` bytes; keys larger than the budget alone are streamed.

    Keys of one layer stay together with the reference split first, so the reference's class
    means are known when the other splits' second pass runs.
    """
    plan = ReadPlan(budget, source, sizes=dict(sizes))
    order = sorted(sizes, key=lambda k: (_first_seen(sizes, k[1]), k[0] != reference_split))
    batch, held = [], 0
    for key in order:
        size = sizes[key]
        if size > budget:
            plan.streamed.append(key)
            continue
        if held + size > budget:
            plan.batches.append(batch)
            batch, held = [], 0
        batch.append(key)
        held += size
    if batch:
        plan.batches.append(batch)
    return plan


def _first_seen(sizes, layer):
    return next(i for i, key in enumerate(sizes) if key[1] == layer)
