"""Options objects that check themselves when built: declarative constraints, one message.

In the style of scikit-learn's parameter validation: each options dataclass declares
``_constraints = {"name": constraint, ...}`` and calls :func:`check_params` from
``__post_init__``, so a Python caller and a command-line user get the same one-line error,
``\\`dense_limit\\` must be an int >= 1; got 0`` (the CLI writes the parameter as its flag).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from .errors import NcprobeError


class ParameterError(NcprobeError):
    """An options object was given a value outside what its parameter accepts."""


@dataclass(frozen=True)
class Interval:
    """A number of ``kind`` (int or float) in [low, high] (None: unbounded); ``open_low``
    excludes ``low`` itself (a learning rate > 0)."""

    kind: type
    low: float | None = None
    high: float | None = None
    open_low: bool = False

    def accepts(self, value) -> bool:
        kind = numbers.Integral if self.kind is int else numbers.Real  # numpy's numbers too
        if isinstance(value, bool) or not isinstance(value, kind) or math.isnan(value):
            return False
        above = self.low is None or (value > self.low if self.open_low else value >= self.low)
        return above and (self.high is None or value <= self.high)

    def __str__(self) -> str:
        name = {int: "an int", float: "a number"}[self.kind]
        if self.low is not None and self.high is not None:
            return f"{name} in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return f"{name} {'>' if self.open_low else '>='} {self.low:g}"
        return f"{name} <= {self.high:g}" if self.high is not None else name


@dataclass(frozen=True)
class OneOf:
    """One of the given values."""

    values: tuple

    def accepts(self, value) -> bool:
        return any(value == v and type(value) is type(v) for v in self.values)

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class Instance:
    """An instance of ``kind`` (bool is not an int here)."""

    kind: type | tuple
    description: str

    def accepts(self, value) -> bool:
        return isinstance(value, self.kind) and not (isinstance(value, bool) and
                                                     self.kind is not bool)

    def __str__(self) -> str:
        return self.description


@dataclass(frozen=True)
class StrList:
    """A list (or tuple) of strings."""

    def accepts(self, value) -> bool:
        return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)

    def __str__(self) -> str:
        return "a list of names"


@dataclass(frozen=True)
class Optional:
    """None, or what ``inner`` accepts."""

    inner: object

    def accepts(self, value) -> bool:
        return value is None or self.inner.accepts(value)

    def __str__(self) -> str:
        return f"{self.inner}, or unset (None)"


def check_params(obj, constraints: dict) -> None:
    """Raise :class:`ParameterError` for the first field of ``obj`` its constraint refuses.

    >>> try:
    ...     check_params(type("Options", (), {"n": 0})(), {"n": Interval(int, 1)})
    ... except ParameterError as e:
    ...     print(e)
    `n` must be an int >= 1; got 0
    """
    check_values({name: getattr(obj, name) for name in constraints}, constraints)


def check_values(values: dict, constraints: dict) -> None:
    """:func:`check_params` for a function's arguments: ``values`` maps name -> value.

    >>> try:
    ...     check_values({"out": 3}, {"out": Instance(str, "a path")})
    ... except ParameterError as e:
    ...     print(e)
    `out` must be a path; got 3
    """
    for name, constraint in constraints.items():
        value = values[name]
        if not constraint.accepts(value):
            raise ParameterError(f"`{name}` must be {constraint}; got {value!r}")
