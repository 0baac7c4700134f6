"""`--space KEY=SPEC`: each form parses to what Tune draws from, and every way it can be wrong is one line naming
the key, before any trial starts."""

from __future__ import annotations

import pytest

from gan_dist.config import load_config, override_config
from gan_dist.errors import UserError
from gan_dist.search_space import Spec, grid_only, parse_space


@pytest.fixture(scope="module")
def base():
    return load_config(None, {"run.storage": "/tmp/unused"})


def test_each_form_parses_to_its_bounds_or_values(base):
    space = parse_space(["train.lr_g=loguniform(1e-5, 1e-3)", "train.r1_gamma=uniform(0,1)",
                         "train.loss=choice(hinge,nonsaturating)", "train.n_dis=grid(1,2)"], base)
    assert space == {"train.lr_g": Spec("loguniform", 1e-5, 1e-3), "train.r1_gamma": Spec("uniform", 0.0, 1.0),
                     "train.loss": Spec("choice", values=("hinge", "nonsaturating")),
                     "train.n_dis": Spec("grid", values=("1", "2"))}
    assert not grid_only(space)
    assert grid_only({"train.n_dis": space["train.n_dis"]})


def test_a_drawn_list_value_is_read_as_set_reads_it(base):
    """choice/grid values travel as typed and are read by the key's type in the trial, as --set would."""
    spec = parse_space(["train.lr_d=choice(1e-4,4e-4)"], base)["train.lr_d"]
    cfg = override_config(base, {"train.lr_d": spec.override("4e-4")})
    assert cfg.train.lr_d == 4e-4
    assert spec.examples() == ["1e-4", "4e-4"]


def test_a_range_is_checked_at_both_ends_and_inside(base):
    assert Spec("loguniform", 1e-4, 1e-2).examples() == pytest.approx([1e-4, 10 ** (-4 + 0.37 * 2), 1e-2])
    # the interior point is not whole: a key that takes whole numbers refuses a range
    with pytest.raises(UserError, match=r"--space train.n_dis=uniform\(1,4\).*train.n_dis"):
        parse_space(["train.n_dis=uniform(1,4)"], base)


@pytest.mark.parametrize("text, message", [
    ("train.lr_x=loguniform(1e-5,1e-3)", r"--space train.lr_x=.*unknown config key 'train.lr_x'"),
    ("train.lr_g=normal(0,1)", r"bad --space train.lr_g=normal\(0,1\): expected loguniform\(LOW,HIGH\)"),
    ("train.lr_g=loguniform(1e-3)", r"bad --space .*\(two numbers\)"),
    ("train.lr_g=uniform(a,b)", r"bad --space .*\(two numbers\)"),
    ("train.lr_g=uniform(1e-3,1e-4)", "LOW must be below HIGH"),
    ("train.lr_g=loguniform(0,1e-3)", "loguniform needs LOW > 0"),
    ("train.lr_g=uniform(-1,1e-3)", r"--space train.lr_g=uniform\(-1,1e-3\): .*train.lr_g"),
    ("train.loss=choice(hinge,,wgan)", r"\(an empty value\)"),
    ("train.loss=choice(hinge,hinge)", "a value is listed twice"),
    ("train.loss=choice(hinge,nope)", r"--space train.loss=choice\(hinge,nope\): .*train.loss"),
    ("train.lr_g", "expected KEY=SPEC"),
    ("train.steps=grid(10,20)", r"--space train.steps: the tune command sets it .*--budget-steps"),
    ("run.num_workers=grid(1,2)", r"--space run.num_workers: the tune command sets it"),
    ("eval.where=choice(inline,ray)", r"--space eval.where: the tune command sets it"),
])
def test_bad_space_is_one_line_naming_the_key(base, text, message):
    with pytest.raises(UserError, match=message) as caught:
        parse_space([text], base)
    assert "\n" not in str(caught.value)


def test_a_key_given_twice_is_refused(base):
    with pytest.raises(UserError, match="--space train.lr_g is given twice"):
        parse_space(["train.lr_g=uniform(1e-4,2e-4)", "train.lr_g=choice(1e-4)"], base)


def test_pbt_refuses_a_key_a_resume_cannot_change(base):
    """PBT changes a running trial's values: only keys a resume applies (RETUNABLE) can be searched."""
    assert parse_space(["train.lr_g=loguniform(1e-5,1e-3)"], base, retunable_only=True)
    with pytest.raises(UserError, match=r"--space model.g_channels: PBT .* use --scheduler asha"):
        parse_space(["model.g_channels=choice(16,32)"], base, retunable_only=True)
    assert parse_space(["model.g_channels=choice(16,32)"], base)  # ASHA starts every trial afresh: any key
