"""Attacks by name: ``KIND[:key=value,...]`` strings resolved to :class:`Attack` objects.

Adding an attack is one module with an :class:`~ncprobe.extract.attacks.base.Attack` subclass
and one call, ``register_attack(MyAttack)``; ``nc-extract --attack mykind:eps=...`` then runs
it like a built-in one.
"""

from __future__ import annotations

from .base import Attack, AttackSpecError

#: kind -> Attack subclass; filled by :func:`register_attack`
ATTACKS: dict[str, type[Attack]] = {}


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Make ``cls`` available by its ``kind``; returns it (usable as a class decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Attack)) or not cls.kind:
        raise AttackSpecError(f"{cls!r} is not an Attack subclass with a kind")
    if ATTACKS.get(cls.kind, cls) is not cls:
        raise AttackSpecError(f"an attack of kind {cls.kind!r} is already registered "
                              f"({ATTACKS[cls.kind].__name__})")
    ATTACKS[cls.kind] = cls
    return cls


def unregister_attack(kind: str) -> None:
    """Remove a registered kind (tests, or replacing a built-in)."""
    ATTACKS.pop(kind, None)


def parse_attack(text: str) -> Attack:
    """Parse ``KIND[:key=value,...]`` into the registered attack of that kind.

    Examples
    --------
    >>> parse_attack("pgd:norm=linf,eps=0.1,steps=20,target=next").name
    'pgd-linf-0.1-next'
    >>> parse_attack("noise:kind=gaussian,eps=0.5").measure_norm
    'l2'
    """
    kind, _, rest = text.strip().partition(":")
    cls = ATTACKS.get(kind)
    if cls is None:
        raise AttackSpecError(f"unknown attack {kind!r} in {text!r}; expected one of "
                              f"{', '.join(ATTACKS)}")
    params = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise AttackSpecError(f"attack parameter {item!r} in {text!r} is not key=value")
        if key not in cls.params:
            raise AttackSpecError(f"unknown parameter {key!r} for attack {kind!r}; expected "
                                  f"{', '.join(sorted(cls.params))}")
        params[key] = value
    return cls.from_params(params, text)


def slice_randomness(rand: dict, i: int, j: int) -> dict:
    """The rows i:j of every tensor an attack drew (:meth:`Attack.draw`; lists: of each; the
    key ``seed`` holds the block's, kept whole)."""
    return {k: v if k == "seed" else [t[i:j] for t in v] if isinstance(v, list) else v[i:j]
            for k, v in rand.items()}

