"""Attacks: torchattacks as an oracle, balls and boxes, loss and target behaviour."""

import numpy as np
import pytest
import torch
from torch import nn

from ncprobe.extract.attacks import (
    AttackSpecError,
    ce_objective,
    parse_attack,
    pgd,
    slice_randomness,
)
from ncprobe.extract.attacks.targets import choose_targets
from ncprobe.extract.models import build_model

torchattacks = pytest.importorskip("torchattacks")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model("mlp", (1, 8, 8), 10, (0.3,), (0.4,))
    # a few steps of training so gradients are informative
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x, y = torch.rand(256, 1, 8, 8), torch.randint(0, 10, (256,))
    for _ in range(20):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    return m.eval()


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g)


@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_identical_to_torchattacks(model, batch, targeted):
    x, y = batch
    eps, alpha, steps = 0.1, 0.02, 7
    ta = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    if targeted:
        ta.set_mode_targeted_by_function(lambda images, labels: (labels + 1) % 10)
    torch.manual_seed(123)
    start = torch.empty_like(x).uniform_(-eps, eps)
    torch.manual_seed(123)
    oracle = ta(x, y)
    obj = ce_objective((y + 1) % 10, targeted=True) if targeted else ce_objective(y)
    ours = pgd(model, x, obj, eps=eps, step_size=alpha, steps=steps, norm="linf", start=start)
    assert torch.equal(ours, oracle)


CONDITIONS = ["pgd:norm=linf,eps=0.1,steps=10", "pgd:norm=l2,eps=0.5,steps=10",
              "pgd:norm=linf,eps=0.1,steps=5,restarts=3", "fgsm:eps=0.1",
              "noise:kind=gaussian,eps=0.5", "noise:kind=sign,eps=0.05",
              "noise:kind=gaussian-sigma,eps=0.05", "pgd:norm=linf,eps=0.1,target=next"]


@pytest.mark.parametrize("text", CONDITIONS)
def test_inside_ball_and_box(model, batch, text):
    x, y = batch
    spec = parse_attack(text)
    x_adv, _, norm = spec.run(model, x, y, 10,
                                   spec.draw(x, y, 10, torch.Generator()))
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    d = (x_adv - x).flatten(1)
    measured = d.abs().amax(1) if spec.measure_norm == "linf" else d.norm(dim=1)
    torch.testing.assert_close(norm, measured)
    if getattr(spec, "noise_kind", None) != "gaussian-sigma":
        assert (measured <= spec.eps * (1 + 1e-5)).all()


@pytest.mark.parametrize("text", ["pgd:norm=linf,eps=0.1,steps=10", "pgd:norm=l2,eps=0.5",
                                  "fgsm:eps=0.1"])
def test_attack_raises_the_loss(model, batch, text):
    x, y = batch
    spec = parse_attack(text)
    x_adv, _, _ = spec.run(model, x, y, 10)
    with torch.no_grad():
        clean = nn.functional.cross_entropy(model(x), y, reduction="none")
        adv = nn.functional.cross_entropy(model(x_adv), y, reduction="none")
    assert (adv > clean).float().mean() > 0.95
    assert adv.mean() > clean.mean() + 0.3


@pytest.mark.parametrize("rule", ["next", "random", "least-likely", "3"])
def test_targeted_attack_moves_predictions_to_the_target(model, batch, rule):
    x, y = batch
    spec = parse_attack(f"pgd:norm=linf,eps=0.3,steps=20,target={rule}")
    x_adv, target, _ = spec.run(model, x, y, 10,
                                     spec.draw(x, y, 10, torch.Generator()))
    with torch.no_grad():
        before = (model(x).argmax(1) == target).float().mean()
        after = (model(x_adv).argmax(1) == target).float().mean()
    assert after > before + 0.3
    if rule == "next":
        assert torch.equal(target, (y + 1) % 10)
    if rule == "random":
        assert (target != y).all()


def test_restarts_keep_the_strongest(model, batch):
    x, y = batch
    one = parse_attack("pgd:norm=linf,eps=0.05,steps=3,restarts=1")
    many = parse_attack("pgd:norm=linf,eps=0.05,steps=3,restarts=4")
    g = torch.Generator().manual_seed(0)
    r_many = many.draw(x, y, 10, g)
    x_many, _, _ = many.run(model, x, y, 10, r_many)
    x_one, _, _ = one.run(model, x, y, 10, {"starts": r_many["starts"][:1]})
    with torch.no_grad():
        l_one = nn.functional.cross_entropy(model(x_one), y, reduction="none")
        l_many = nn.functional.cross_entropy(model(x_many), y, reduction="none")
    assert (l_many >= l_one - 1e-6).all()


def test_results_do_not_depend_on_batch_size(model, batch):
    x, y = batch
    spec = parse_attack("pgd:norm=linf,eps=0.1,steps=5,target=random")
    rand = spec.draw(x, y, 10, torch.Generator().manual_seed(5))
    whole, _, _ = spec.run(model, x, y, 10, rand)
    parts = [spec.run(model, x[i:i + 7], y[i:i + 7], 10, slice_randomness(rand, i, i + 7))[0]
             for i in range(0, 64, 7)]
    torch.testing.assert_close(torch.cat(parts), whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("text", "message"), [
    ("cw:eps=0.1", "unknown attack 'cw'"), ("pgd:eps=-0.1", "eps must be >= 0"),
    ("pgd:eps=0.1,steps=0", "steps must be >= 1"), ("pgd:eps=0.1,foo=1", "unknown parameter"),
    ("pgd:eps=abc", "not a valid number"), ("pgd:norm=l3,eps=0.1", "unknown norm"),
    ("pgd:eps=0.1,target=far", "unknown target rule"), ("pgd:steps=3", "needs eps"),
    ("noise:kind=pink,eps=0.1", "unknown noise kind")])
def test_bad_attack_strings(text, message):
    with pytest.raises(AttackSpecError, match=message):
        parse_attack(text)


def test_eps_fraction_and_names():
    s = parse_attack("pgd:norm=linf,eps=8/255,steps=10")
    assert s.eps == pytest.approx(8 / 255) and s.name == "pgd-linf-8/255"
    assert s.step_size == pytest.approx(2.5 * 8 / 255 / 10)
    assert parse_attack("pgd:eps=0.1,name=mine").name == "mine"
    y = torch.tensor([0, 9])
    assert choose_targets("next", y, 10).tolist() == [1, 0]


def test_autoattack_extra(model, batch):
    pytest.importorskip("pyautoattack")
    x, _ = batch
    with torch.no_grad():
        y = model(x).argmax(1)  # labels the model gets right, so AutoAttack attacks them all
    spec = parse_attack("autoattack:eps=0.1,version=custom,attacks=apgd-ce")
    assert spec.name == "autoattack-linf-0.1" and spec.sub_attacks == ("apgd-ce",)
    rand = spec.draw(x, y, 10, torch.Generator().manual_seed(0))
    x_adv, target, norm = spec.run(model, x, y, 10, rand)
    again, _, _ = spec.run(model, x, y, 10, rand)
    assert torch.equal(x_adv, again)  # the block's seed makes it repeatable
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and (norm <= 0.1 + 1e-6).all()
    assert (target == -1).all()
    with torch.no_grad():
        still = model(x_adv).argmax(1) == y
    assert still.float().mean() <= 0.5
    with pytest.raises(AttackSpecError, match="with version=custom and only then"):
        parse_attack("autoattack:eps=0.1,attacks=apgd-ce")
    with pytest.raises(AttackSpecError, match="unknown autoattack version"):
        parse_attack("autoattack:eps=0.1,version=fast")


def test_attacks_and_noise_stay_in_the_datasets_box_or_none():
    """Unbounded data (synthetic) is not clipped to [0, 1]: the perturbation is exactly the
    attack's, inside its eps-ball; images stay in [0, 1]."""
    from ncprobe.extract.attacks import ce_objective, noise, pgd

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 3))
    x = 5 * torch.randn(8, 6)  # far outside [0, 1]
    y = torch.randint(0, 3, (8,))
    g = torch.Generator().manual_seed(1)
    free = pgd(model, x, ce_objective(y), eps=0.3, step_size=0.1, steps=5, generator=g,
               box=None)
    assert (free - x).abs().max() <= 0.3 + 1e-6
    assert (free - x).abs().max() > 0.29  # not clipped away
    boxed = pgd(model, x, ce_objective(y), eps=0.3, step_size=0.1, steps=5, generator=g)
    assert boxed.min() >= 0 and boxed.max() <= 1
    n = noise(x, "gaussian", 0.5, torch.Generator().manual_seed(2), box=None)
    np.testing.assert_allclose((n - x).flatten(1).norm(dim=1), 0.5, rtol=1e-5)


def test_pgd_restarts_and_no_random_start_draw_only_from_the_given_generator():
    from ncprobe.extract.attacks import parse_attack

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4))
    x, y = torch.rand(6, 1, 4, 4), torch.randint(0, 4, (6,))
    for text in ("pgd:eps=0.1,steps=3,restarts=3", "pgd:eps=0.1,steps=3,restarts=3,"
                 "random_start=false"):
        spec = parse_attack(text)
        runs = []
        for global_seed in (1, 2):
            torch.manual_seed(global_seed)  # must not matter
            rand = spec.draw(x, y, 4, torch.Generator().manual_seed(7))
            runs.append(spec.run(model, x, y, 4, rand)[0])
        torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
        if "false" in text:
            assert all(torch.equal(s, torch.zeros_like(x)) for s in rand["starts"])
            assert len(rand["starts"]) == 3
    with pytest.raises(ValueError, match="random starts need a seeded generator"):
        from ncprobe.extract.attacks import ce_objective, pgd

        pgd(model, x, ce_objective(y), eps=0.1, step_size=0.05, steps=1, restarts=2)


def test_a_registered_attack_runs_through_nc_extract(tmp_path, digits_checkpoints):
    """Adding an attack is one class and one registry call; the CLI then runs it, stores its
    record and its measured norms, and draws its numbers from the block's generator."""
    from dataclasses import dataclass
    from typing import ClassVar

    import xarray as xr

    from ncprobe.extract.attacks import Attack, register_attack, unregister_attack
    from ncprobe.extract.attacks.base import eps_param
    from ncprobe.extract.cli import main

    @dataclass(frozen=True)
    class Jitter(Attack):
        eps: float = 0.0
        kind: ClassVar[str] = "jitter"
        params: ClassVar[frozenset] = frozenset({"eps", "name", "seed"})

        @classmethod
        def from_params(cls, params, text):
            eps, eps_text = eps_param(params, text)
            return cls(name=params.get("name", f"jitter-{eps_text}"), eps=eps)

        def draw(self, x, y, n_classes, generator, box=None):
            return {"signs": torch.randint(0, 2, x.shape, generator=generator) * 2 - 1}

        def perturb(self, model, x, y, n_classes, rand, box=None):
            x_adv = (x + self.eps * rand["signs"].to(x.dtype)).clamp(*box)
            return x_adv, torch.full_like(y, -1)

    register_attack(Jitter)
    try:
        with pytest.raises(AttackSpecError, match="already registered"):
            register_attack(type("Other", (Jitter,), {}))
        runs = []
        for i, batch in enumerate(("64", "7")):
            out = tmp_path / f"s{i}.zarr"
            assert main(["--checkpoint", str(digits_checkpoints / "epoch-0002.pt"), "--out",
                         str(out), "--attack", "clean", "--attack", "jitter:eps=0.05",
                         "--limit", "40", "--batch-size", batch, "--no-progress"]) == 0
            runs.append(out)
        tree = xr.open_datatree(runs[0], engine="zarr")
        record = tree.attrs["conditions"][1]
        assert (record["name"], record["attack"], record["eps"]) == ("jitter-0.05", "jitter",
                                                                     0.05)
        outs = [xr.open_zarr(r, group="train/outputs") for r in runs]
        norm = outs[0]["perturbation_norm"].sel(condition="jitter-0.05").values
        assert np.all((norm > 0) & (norm <= 0.05 + 1e-6))
        # the block's generator, not the batch, decides the numbers: the perturbations are the
        # same bit for bit; the logits to float32 rounding, since a BLAS may block a matrix
        # product by the batch's size (on this VM's CPU, 679 of 800 logits differed in the
        # last bits between batches of 64 and 7)
        np.testing.assert_array_equal(outs[0]["perturbation_norm"].values,
                                      outs[1]["perturbation_norm"].values)
        np.testing.assert_allclose(outs[0]["logits"].values, outs[1]["logits"].values,
                                   rtol=1e-5, atol=1e-5)
    finally:
        unregister_attack("jitter")
    with pytest.raises(AttackSpecError, match="unknown attack 'jitter'"):
        parse_attack("jitter:eps=0.1")
