"""The dask plumbing of the analysis, in one place: sum a kernel's named statistics over the
sample chunks of every block, and line inputs up by dim name.

A kernel (:mod:`ncprobe.analyze.kernels.passes`) maps one chunk of samples of one block to a
dict of additive float64 arrays. :func:`reduce_blocks` sums those dicts over the chunks of
each block and returns one array per name, (..., *shape), for every index of the leading
axes: numpy in, numpy out; dask in, dask out, with nothing per sample kept beyond a chunk.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import xarray as xr

from ncprobe.data.errors import NcprobeError


class AnalysisError(NcprobeError):
    """Input that the analysis cannot use; the message says what was expected."""


def is_dask(x) -> bool:
    return isinstance(getattr(x, "data", x), da.Array)


def _one(value, ndim):
    out = np.empty((1,) * ndim, dtype=object)
    out.flat[0] = value
    return out


def _only(block):
    """The one block of a blockwise argument whose contracted axes are single chunks (dask
    passes a nested list per contracted axis when it does not concatenate)."""
    while isinstance(block, list):
        if len(block) != 1:
            raise AssertionError(f"expected one chunk along a contracted axis, got {len(block)}")
        block = block[0]
    return block


def _add_dicts(blocks, axis, keepdims):
    """Sum the dicts held in object blocks (da.reduction's chunk, combine and aggregate)."""
    stack = [blocks]
    total = None
    while stack:
        b = stack.pop()
        if isinstance(b, list):
            stack.extend(b)
            continue
        for d in b.ravel():
            total = dict(d) if total is None else {k: total[k] + d[k] for k in total}
        ndim = b.ndim
    return _one(total, ndim if keepdims else ndim - len(axis))


#: a block's partial sums larger than this (e.g. class sums of thousands of classes) are
#: added up as the chunks finish, in FOLD_LANES chains per block, rather than one per chunk
#: for a tree reduction that holds several of them at once
FOLD_BYTES = 64 * 2**20
FOLD_LANES = 2


def _partial_bytes(shapes: dict) -> int:
    return 8 * sum(int(np.prod(s)) for s in shapes.values() if s is not None)


def _folded(kernel, sampled, consts, n_lead, n_chunks):
    """Partial sums (*lead, FOLD_LANES) as an object array: each lane of a block a chain of
    tasks, each of which reads one chunk and adds the kernel's sums of it to the lane's
    total so far. ``sampled`` are chunked along the samples (n_chunks blocks), ``consts``
    one block per index of the leading axes."""
    lead = sampled[0].numblocks[:n_lead]
    first = (0,) * n_lead

    def link(total, *chunk):
        # into the kernel's own fresh output: a link holds two sets of sums, never three
        part = kernel(*[b[first] for b in chunk])
        if total is not None:
            total = total.flat[0]
            for k, v in part.items():
                if isinstance(v, np.ndarray) and v.ndim:
                    np.add(v, total[k], out=v)
                else:  # scalars and mergeable objects (SparseCounts)
                    part[k] = v + total[k]
        return _one(part, n_lead + 1)

    chunks = [a.to_delayed(optimize_graph=False) for a in sampled]
    fixed = [c.to_delayed(optimize_graph=False) for c in consts]
    bounds = np.linspace(0, n_chunks, FOLD_LANES + 1).round().astype(int)
    meta = np.empty((0,) * (n_lead + 1), dtype=object)
    lanes = np.empty(tuple(lead) + (FOLD_LANES,), dtype=object)
    for i in np.ndindex(*lead):
        at = [c[i + (0,) * (c.ndim - n_lead)] for c in fixed]
        for lane in range(FOLD_LANES):
            total = None
            for k in range(bounds[lane], bounds[lane + 1]):
                got = [b[i + (k,) + (0,) * (b.ndim - n_lead - 1)] for b in chunks]
                total = dask.delayed(link)(total, *got, *at)
            lanes[i + (lane,)] = da.from_delayed(total, (1,) * (n_lead + 1), dtype=object,
                                                 meta=meta)
    return da.block(lanes.tolist())


def reduce_blocks(kernel, x, per_sample, consts, shapes: dict, prepare=None,
                  prepare_now: bool = False) -> dict:
    """Sum ``kernel(x_chunk, *per_sample_chunks, *consts)`` over the sample chunks of ``x``
    (..., n, D), for every index of its leading axes.

    This is where the analysis forks between numpy and dask: numpy in (every argument),
    numpy out, one kernel call per block; dask in, dask out.

    Parameters
    ----------
    kernel : returns a dict of fresh float64 arrays, one per key of ``shapes``.
    per_sample : arrays (..., n, ...) aligned with the rows of ``x``.
    consts : arrays (..., ...) passed whole to every chunk of their block.
    shapes : name -> shape of each statistic the kernel returns; None for an object that
        adds with ``+`` (e.g. sparse counts), returned as an object array (...).
    prepare : optional ``prepare(*consts) -> object``, worked out once per block (with dask,
        one task beside the pass) and passed to every chunk's kernel instead of the consts.
    prepare_now : with dask and the consts in memory (numpy), work ``prepare`` out now, one
        block after another, rather than in tasks of the pass: for objects of hundreds of MB
        (pass 2's plan at many classes), none is then built beside another, and no thread
        reads chunks ahead while another builds one.

    Returns
    -------
    dict name -> array (..., *shape). With dask: one blockwise layer over (leading axes,
    sample chunks), one tree sum of the dicts over the chunks, and one small task per name
    that stacks the blocks (so what is derived from a statistic is one task per layer, not
    one per (checkpoint, condition) block).
    """
    lead = x.shape[:-2]
    arrays = [x, *per_sample, *consts]
    if not any(isinstance(a, da.Array) for a in arrays):
        out = {k: np.empty(lead, dtype=object) if s is None else np.empty(lead + tuple(s))
               for k, s in shapes.items()}
        for i in np.ndindex(*lead):
            at = [c[i] for c in consts]
            got = kernel(np.asarray(x[i]), *[np.asarray(a[i]) for a in per_sample],
                         *([prepare(*at)] if prepare else at))
            for k in out:
                out[k][i] = got[k]
        return out
    n_lead = len(lead)
    ones = (1,) * n_lead
    if prepare is not None and prepare_now and not any(isinstance(c, da.Array) for c in consts):
        made = np.empty(lead, dtype=object)
        for i in np.ndindex(*lead):
            made[i] = prepare(*[c[i] for c in consts])
        consts = [made]
    elif prepare is not None:
        consts = [_per_block(prepare, consts, n_lead)]
    x = _rechunk(da.asarray(x), ones + (da.asarray(x).chunks[n_lead], -1))
    li = tuple(f"l{j}" for j in range(n_lead))
    args = [x, (*li, "s", "d")]
    for i, a in enumerate(per_sample):
        chunks = ones + (x.chunks[n_lead],) + tuple((n,) for n in a.shape[n_lead + 1:])
        # numpy (labels, predictions, groups read up front): sliced into the features' chunks
        # directly, one task each, where a rechunk of one whole chunk took two
        a = _rechunk(a, chunks) if isinstance(a, da.Array) else da.from_array(a, chunks=chunks)
        args += [a, (*li, "s", *(f"p{i}_{j}" for j in range(a.ndim - n_lead - 1)))]
    args += _const_args(consts, li)
    first = (0,) * n_lead
    n_chunks = len(x.chunks[n_lead])
    if _partial_bytes(shapes) > FOLD_BYTES and n_chunks > FOLD_LANES:
        arrays = args[0::2]
        parts = _folded(kernel, arrays[:1 + len(per_sample)], arrays[1 + len(per_sample):],
                        n_lead, n_chunks)
    else:
        def block(*blocks):
            return _one(kernel(*[_only(b)[first] for b in blocks]), n_lead + 1)

        # concatenate=False: every contracted axis is one chunk (rechunked above), and dask's
        # concatenation would copy each feature chunk into a new array before the kernel
        # reads it
        parts = da.blockwise(block, (*li, "s"), *args, adjust_chunks={"s": 1},
                             concatenate=False, dtype=object,
                             meta=np.empty((0,) * (n_lead + 1), dtype=object))
    summed = da.reduction(parts, _add_dicts, _add_dicts, combine=_add_dicts, axis=n_lead,
                          dtype=object, concatenate=False,
                          meta=np.empty((0,) * n_lead, dtype=object))
    summed = _rechunk(summed, -1)

    def pick(b, name, shape):
        if shape is None:
            out = np.empty(b.shape, dtype=object)
            out.ravel()[:] = [d[name] for d in b.ravel()]
            return out
        return np.stack([np.asarray(d[name], np.float64) for d in b.ravel()]).reshape(
            b.shape + shape)

    def named(k, s):
        if s is None:
            return summed.map_blocks(pick, k, None, dtype=object,
                                     meta=np.empty((0,) * n_lead, dtype=object))
        return summed.map_blocks(pick, k, tuple(s), dtype=np.float64,
                                 new_axis=list(range(n_lead, n_lead + len(s))),
                                 chunks=tuple((n,) for n in lead) + tuple((n,) for n in s),
                                 meta=np.empty((0,) * (n_lead + len(s))))

    return {k: named(k, s) for k, s in shapes.items()}


def _rechunk(a: da.Array, chunks) -> da.Array:
    """``a.rechunk(chunks)`` by dask's task method: these rechunks only merge or align small
    chunks, and leaving the method to dask imports distributed to look for a client on every
    local run (p2p is for large shuffles on a cluster)."""
    return a.rechunk(chunks, method="tasks")


def _const_args(consts, li) -> list:
    """blockwise's (array, indices) pairs for arrays whose first ``len(li)`` axes index the
    blocks: one chunk per block (a numpy array sliced into views, never chunked otherwise and
    copied back together), the other axes whole."""
    args = []
    for i, c in enumerate(consts):
        chunks = (1,) * len(li) + tuple(c.shape[len(li):])
        c = _rechunk(c, chunks) if isinstance(c, da.Array) else da.from_array(c, chunks=chunks)
        args += [c, (*li, *(f"c{i}_{j}" for j in range(c.ndim - len(li))))]
    return args


def _per_block(fn, consts, n_lead: int):
    """``fn(*consts)`` of every block, one dask task each: an object array (...), where the
    first ``n_lead`` axes of each const index the blocks."""
    first = (0,) * n_lead
    li = tuple(f"l{j}" for j in range(n_lead))
    args = _const_args(consts, li)

    def block(*blocks):
        return _one(fn(*[_only(b)[first] for b in blocks]), n_lead)

    return da.blockwise(block, li, *args, concatenate=False, dtype=object,
                        meta=np.empty((0,) * n_lead, dtype=object))


def lead_dims(features: xr.DataArray, sample_dim: str, feature_dim: str) -> tuple:
    """The dims of ``features`` that statistics broadcast over (all but sample and feature)."""
    missing = [d for d in (sample_dim, feature_dim) if d not in features.dims]
    if missing:
        raise AnalysisError(
            f"features has dims {features.dims}; expected {sample_dim!r} and {feature_dim!r} "
            "among them (pass sample_dim= and feature_dim= to name others)")
    return tuple(d for d in features.dims if d not in (sample_dim, feature_dim))


def broadcast_to_lead(arr: xr.DataArray, features: xr.DataArray, lead, core) -> xr.DataArray:
    """``arr`` with every leading dim of ``features`` (a view where it lacked one), ordered
    ``(*lead, *core)``. Positional, like the features: no coordinate alignment."""
    extra = [d for d in arr.dims if d not in lead and d not in core]
    if extra:
        raise AnalysisError(f"an input has dims {arr.dims}; dims {extra} are neither in the "
                            f"features' dims {features.dims} nor {tuple(core)}")
    for d in lead:
        if d not in arr.dims:
            arr = arr.expand_dims({d: features.sizes[d]})
        elif arr.sizes[d] != features.sizes[d]:
            raise AnalysisError(f"an input has {arr.sizes[d]} entries along {d!r}; the "
                                f"features have {features.sizes[d]}")
    return arr.transpose(*lead, *core)


def lead_coords(features, lead) -> dict:
    """The coordinates of ``features`` that live on its leading dims only."""
    return {k: v for k, v in features.coords.items() if v.dims and set(v.dims) <= set(lead)}
