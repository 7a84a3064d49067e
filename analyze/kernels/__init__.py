"""numpy kernels by axis: the arithmetic of the analysis, with no xarray and no dask.

Every function here takes and returns plain numpy arrays whose *trailing* axes are named in
its docstring (``(..., C, D)``: classes, features) and broadcasts over any leading axes, so
one call covers every (checkpoint, condition, ...) block at once. Results are named: a kernel
returns an array or a dict of named arrays, never positions in a flat vector.

The xarray layer (:mod:`ncprobe.analyze.stats`, :mod:`ncprobe.analyze.metrics`) calls these by
dim name; :mod:`ncprobe.analyze.blocks` holds the dask plumbing between the two.
"""
