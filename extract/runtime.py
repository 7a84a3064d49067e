"""Device and thread choices, made deliberately (measured: 2 threads ran a tiny MLP 15x slower
than 1 on a 2-core machine)."""

from __future__ import annotations

import logging
import os

import torch

from ncprobe.data.errors import NcprobeError

log = logging.getLogger("ncprobe.extract")

#: below this many parameters intra-op parallelism costs more than it saves on CPU
SMALL_MODEL_PARAMS = 2_000_000


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise NcprobeError(f"unknown `device` {name!r}; expected auto, cpu, cuda or cuda:N") \
            from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NcprobeError(f"`device` {name!r} requested but CUDA is not available here; use "
                           "`device` cpu or auto")
    return dev


def set_threads(model: torch.nn.Module, device: torch.device, threads: int | None) -> int:
    """Set torch's CPU thread count: ``threads`` if given, else 1 for small models on the CPU
    and all cores otherwise. Returns the count used."""
    if threads is None:
        n_params = sum(p.numel() for p in model.parameters())
        threads = 1 if (device.type == "cpu" and n_params < SMALL_MODEL_PARAMS) else \
            (os.cpu_count() or 1)
    if threads < 1:
        raise NcprobeError(f"`threads` must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    log.debug("torch threads: %d", threads)
    return threads


def versions() -> dict:
    from importlib import metadata

    out = {"torch": torch.__version__}
    for pkg in ("ncprobe", "numpy", "zarr", "xarray"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out
