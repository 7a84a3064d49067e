"""Attack conditions as strings: ``clean``, ``pgd:norm=linf,eps=8/255,steps=10,target=next``.

A condition is one way of perturbing the inputs; its name is the ``condition`` coordinate of
the store and its resolved settings go into the store's root attributes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction

import torch

from ncprobe.data.errors import NcprobeError

from .noise import NOISE_KINDS, noise
from .pgd import NORMS, UNIT_BOX, ce_objective, perturbation_norm, pgd, random_start
from .targets import TARGET_RULES, choose_targets

KINDS = ("clean", "pgd", "fgsm", "noise", "autoattack")
_KEYS = {
    "clean": {"name"},
    "pgd": {"norm", "eps", "steps", "step", "restarts", "target", "random_start", "name", "seed"},
    "fgsm": {"eps", "target", "name"},
    "noise": {"kind", "eps", "name", "seed"},
    "autoattack": {"norm", "eps", "version", "attacks", "name", "seed"},
}
AUTOATTACK_VERSIONS = ("standard", "plus", "rand", "custom")
AUTOATTACK_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")


class AttackSpecError(NcprobeError):
    """An attack string that cannot be used; the message lists what is accepted."""


@dataclass(frozen=True)
class AttackSpec:
    """Resolved settings of one condition (stored as a dict in the store's root attrs)."""

    name: str
    attack: str
    norm: str | None = None
    eps: float = 0.0
    steps: int = 0
    step_size: float = 0.0
    targeted: bool = False
    target_rule: str | int | None = None
    restarts: int = 0
    seed: int = 0
    noise_kind: str | None = None
    random_start: bool = False
    version: str | None = None
    sub_attacks: tuple = ()

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def measure_norm(self) -> str:
        """The norm in which the perturbation is measured and stored."""
        if self.attack == "noise":
            return "linf" if self.noise_kind == "sign" else "l2"
        return self.norm or "linf"


def _number(key, text, kind=float):
    try:
        v = float(Fraction(text)) if kind is float else int(text)
    except (ValueError, ZeroDivisionError):
        raise AttackSpecError(f"attack parameter {key}={text!r} is not a valid "
                              f"{'number' if kind is float else 'integer'}") from None
    return v


def parse_attack(text: str) -> AttackSpec:
    """Parse ``KIND[:key=value,...]`` into an :class:`AttackSpec`.

    Examples
    --------
    >>> parse_attack("pgd:norm=linf,eps=0.1,steps=20,target=next").name
    'pgd-linf-0.1-next'
    >>> parse_attack("noise:kind=gaussian,eps=0.5").measure_norm
    'l2'
    """
    kind, _, rest = text.strip().partition(":")
    if kind not in KINDS:
        raise AttackSpecError(f"unknown attack {kind!r} in {text!r}; expected one of "
                              f"{', '.join(KINDS)}")
    params = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise AttackSpecError(f"attack parameter {item!r} in {text!r} is not key=value")
        if key not in _KEYS[kind]:
            raise AttackSpecError(f"unknown parameter {key!r} for attack {kind!r}; expected "
                                  f"{', '.join(sorted(_KEYS[kind]))}")
        params[key] = value
    if kind == "clean":
        return AttackSpec(name=params.get("name", "clean"), attack="clean")
    eps_text = params.get("eps")
    if eps_text is None:
        raise AttackSpecError(f"attack {text!r} needs eps=...")
    eps = _number("eps", eps_text)
    if eps < 0:
        raise AttackSpecError(f"eps must be >= 0, got {eps_text} in {text!r}")
    seed = _number("seed", params.get("seed", "0"), int)
    if kind == "autoattack":
        return _autoattack_spec(params, eps, eps_text, seed)
    if kind == "noise":
        nk = params.get("kind", "gaussian")
        if nk not in NOISE_KINDS:
            raise AttackSpecError(f"unknown noise kind {nk!r}; expected {', '.join(NOISE_KINDS)}")
        return AttackSpec(name=params.get("name", f"noise-{nk}-{eps_text}"), attack="noise",
                          eps=eps, noise_kind=nk, seed=seed)
    norm = params.get("norm", "linf") if kind == "pgd" else "linf"
    if norm not in NORMS:
        raise AttackSpecError(f"unknown norm {norm!r}; expected {', '.join(NORMS)}")
    steps = _number("steps", params.get("steps", "20"), int) if kind == "pgd" else 1
    if steps < 1:
        raise AttackSpecError(f"steps must be >= 1, got {steps} in {text!r}")
    step = (_number("step", params["step"]) if "step" in params
            else (eps if kind == "fgsm" else 2.5 * eps / steps))
    if step <= 0 and eps > 0:
        raise AttackSpecError(f"step must be > 0, got {params.get('step')} in {text!r}")
    restarts = _number("restarts", params.get("restarts", "1"), int) if kind == "pgd" else 0
    if restarts < 1 and kind == "pgd":
        raise AttackSpecError(f"restarts must be >= 1, got {restarts} in {text!r}")
    rs = params.get("random_start", "true" if kind == "pgd" else "false").lower()
    if rs not in ("true", "false", "1", "0"):
        raise AttackSpecError(f"random_start must be true or false, got {rs!r}")
    target = params.get("target")
    rule = None
    if target is not None:
        rule = int(target) if target.lstrip("-").isdigit() else target
        if isinstance(rule, str) and rule not in TARGET_RULES:
            raise AttackSpecError(f"unknown target rule {target!r}; expected "
                                  f"{', '.join(TARGET_RULES)} or a class index")
    default_name = f"{kind}-{norm}-{eps_text}" + (f"-{target}" if target is not None else "")
    return AttackSpec(name=params.get("name", default_name), attack=kind, norm=norm, eps=eps,
                      steps=steps, step_size=step, targeted=rule is not None, target_rule=rule,
                      restarts=restarts, seed=seed, random_start=rs in ("true", "1"))


def _autoattack_spec(params, eps, eps_text, seed) -> AttackSpec:
    norm = params.get("norm", "linf")
    if norm not in NORMS:
        raise AttackSpecError(f"unknown norm {norm!r}; expected {', '.join(NORMS)}")
    version = params.get("version", "standard")
    if version not in AUTOATTACK_VERSIONS:
        raise AttackSpecError(f"unknown autoattack version {version!r}; expected "
                              f"{', '.join(AUTOATTACK_VERSIONS)}")
    subs = tuple(a for a in params.get("attacks", "").split("+") if a)
    bad = [a for a in subs if a not in AUTOATTACK_ATTACKS]
    if bad or (version == "custom") != bool(subs):
        raise AttackSpecError(f"autoattack attacks= must list {'+'.join(AUTOATTACK_ATTACKS)} "
                              "members (e.g. attacks=apgd-ce+apgd-t), with version=custom and "
                              "only then")
    return AttackSpec(name=params.get("name", f"autoattack-{norm}-{eps_text}"),
                      attack="autoattack", norm=norm, eps=eps, seed=seed, version=version,
                      sub_attacks=subs)


def _autoattack(model, x, y, spec: AttackSpec, seed: int):
    """AutoAttack (Croce and Hein 2020) through the optional ``pyautoattack`` package."""
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        raise AttackSpecError("attack 'autoattack' needs the optional package pyautoattack: "
                              "pip install 'ncprobe[autoattack]'") from None
    aa = AutoAttack(model, norm={"linf": "Linf", "l2": "L2"}[spec.norm], eps=spec.eps,
                    version=spec.version, attacks=list(spec.sub_attacks) or None,
                    device=x.device, seed=seed)
    x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=len(x))
    return x_adv.to(x.device, x.dtype)


def draw_randomness(spec: AttackSpec, x: torch.Tensor, y: torch.Tensor, n_classes: int,
                    generator: torch.Generator, box=UNIT_BOX) -> dict:
    """All random numbers a condition needs for a block of samples, drawn at once on the CPU.
    ``box`` is the dataset's valid input range (None: unbounded), for noise conditions.

    Drawing per block (not per batch) makes the result independent of the batch size and of
    where an interrupted run resumes; slice the tensors with :func:`slice_randomness`.
    """
    out = {}
    if spec.attack == "autoattack":
        # AutoAttack seeds torch's global generator itself: give it one seed per block
        out["seed"] = torch.randint(0, 2**31 - 1, (1,), generator=generator)
    elif spec.attack == "noise":
        out["noised"] = noise(x, spec.noise_kind, spec.eps, generator, box)
    elif spec.attack in ("pgd", "fgsm"):
        if spec.random_start:
            out["starts"] = [random_start(x, spec.eps, spec.norm, generator)
                             for _ in range(max(spec.restarts, 1))]
        else:  # every restart starts at x: random_start=false means no random draw at all
            out["starts"] = [torch.zeros_like(x)] * max(spec.restarts, 1)
        if spec.target_rule == "random":
            out["targets"] = choose_targets("random", y, n_classes, generator=generator)
    return out


def slice_randomness(rand: dict, i: int, j: int) -> dict:
    """The rows i:j of every tensor drawn by :func:`draw_randomness`."""
    return {k: ([t[i:j] for t in v] if isinstance(v, list) else v if k == "seed" else v[i:j])
            for k, v in rand.items()}


def run_condition(model, x, y, spec: AttackSpec, n_classes: int, rand: dict | None = None,
                  box=UNIT_BOX):
    """Perturb a batch for one condition; the model must already be in eval mode.

    ``rand`` holds this batch's rows of :func:`draw_randomness` (drawn here when omitted);
    ``box`` is the dataset's valid input range (None: unbounded), which attacks stay inside.

    Returns
    -------
    x_adv : Tensor like x; target : (n,) int64, -1 when untargeted; norm : (n,) measured
    perturbation norm in ``spec.measure_norm``.
    """
    if rand is None:
        rand = draw_randomness(spec, x.cpu(), y.cpu(), n_classes, torch.Generator(), box)
    untargeted = torch.full_like(y, -1)
    if spec.attack == "clean":
        return x, untargeted, torch.zeros(len(x), device=x.device)
    if spec.attack == "noise":
        x_adv = rand["noised"].to(x.device, x.dtype)
        return x_adv, untargeted, perturbation_norm(x_adv, x, spec.measure_norm)
    if spec.attack == "autoattack":
        if box != UNIT_BOX:
            raise AttackSpecError(f"autoattack works in the [0, 1] pixel box; this dataset's "
                                  f"valid range is {box}")
        x_adv = _autoattack(model, x, y, spec, int(rand["seed"]))
        return x_adv, untargeted, perturbation_norm(x_adv, x, spec.measure_norm)
    if isinstance(spec.target_rule, int) and not 0 <= spec.target_rule < n_classes:
        raise AttackSpecError(f"target class {spec.target_rule} outside 0..{n_classes - 1}")
    target = untargeted
    objective = ce_objective(y)
    if spec.targeted:
        if spec.target_rule == "random":
            target = rand["targets"].to(y.device)
        else:
            clean_logits = None
            if spec.target_rule == "least-likely":
                with torch.no_grad():
                    clean_logits = model(x)
            target = choose_targets(spec.target_rule, y, n_classes, clean_logits)
        objective = ce_objective(target, targeted=True)
    x_adv = pgd(model, x, objective, eps=spec.eps, step_size=spec.step_size, steps=spec.steps,
                norm=spec.norm, start=rand["starts"], restarts=spec.restarts, box=box)
    return x_adv, target, perturbation_norm(x_adv, x, spec.measure_norm)
