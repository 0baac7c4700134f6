"""A resume with changed hyper-parameters trains with them (PBT's exploit step, a person lowering a rate): the
optimizers' rates and betas are retuned to the resumed run's config, the parts read theirs from it, and what the
run learned (moments, the non-finite recovery's cuts) carries over. No Ray: the loop and the task in-process."""

import functools
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from gan_dist import checkpoint
from gan_dist.config import RETUNABLE, Config
from gan_dist.train.loop import train_loop
from gan_dist.train.tasks.generation import GenerationTask
from helpers import assert_same_state, local_ctx, straight_and_resumed, tiny_config

RATES_A = {"train.lr_g": 1e-3, "train.lr_d": 2e-3}  # the checkpoint's
RATES_B = {"train.lr_g": 4e-4, "train.lr_d": 3e-3}  # the resume's
COSINE_END = 1e-4

# The rate of step 3 of 6 (24 of the run's 48 images seen), from the configured rate: the linear decay from 30% of
# the steps is at 1 - 3/6 there, the cosine halfway from the configured rate to its end.
SCHEDULES = {
    "linear": ({"train.lr_decay_start": 0.3}, lambda rate: rate / 2),
    "cosine": ({"schedule.lr_g": COSINE_END, "schedule.lr_d": COSINE_END}, lambda rate: (rate + COSINE_END) / 2),
}


def _train(tiny_data, tmp_path, name: str, **overrides) -> None:
    cfg = tiny_config(tiny_data, str(tmp_path), **{"run.name": name, **overrides})
    train_loop(local_ctx(cfg, tmp_path / name), cfg)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_a_resume_with_new_learning_rates_trains_at_them_times_the_schedule(schedule, tiny_data, tmp_path):
    overrides, at_step_3 = SCHEDULES[schedule]
    _train(tiny_data, tmp_path, "first", **RATES_A, **overrides)
    _train(tiny_data, tmp_path, "second", **RATES_B, **overrides, **{
        "train.log_every": 1, "run.resume_from": str(tmp_path / "first" / "checkpoint_000000003")})

    lines = [json.loads(line) for line in (tmp_path / "second" / "metrics.jsonl").read_text().splitlines()]
    first_resumed = next(line for line in lines if "event" not in line and line["step"] == 4)  # after step 3
    assert first_resumed["lr_G"] == pytest.approx(at_step_3(RATES_B["train.lr_g"]), rel=1e-12)
    assert first_resumed["lr_D"] == pytest.approx(at_step_3(RATES_B["train.lr_d"]), rel=1e-12)
    # what the next resume compares its config with
    groups = checkpoint.load_state(str(tmp_path / "second" / "checkpoint_000000006"))["optimizers"]
    assert [groups[name]["param_groups"][0]["configured_lr"] for name in ("G", "D")] == list(RATES_B.values())


# ---- the task: a few steps, its state, a task of the changed config loading it ------------------------------------

def _trained_state(cfg: Config, tmp_path: Path,
                   before_saving: Callable[[GenerationTask], None] = lambda task: None) -> tuple[GenerationTask, dict]:
    """A task of `cfg` after steps 0 and 1 (then `before_saving`), and its checkpoint state."""
    task = _task_stepped(cfg, tmp_path / "trained", range(2))
    before_saving(task)
    return task, task.state_dict()


def _resumed(cfg: Config, tmp_path: Path, state: dict) -> GenerationTask:
    """A task of `cfg` resumed from `state`, after its first resumed step, 2 (the schedules set for it)."""
    return _task_stepped(cfg, tmp_path / "resumed", range(2, 3), state)


def _task_stepped(cfg: Config, run_dir: Path, steps: range, state: dict | None = None) -> GenerationTask:
    ctx = local_ctx(cfg, run_dir)
    task = GenerationTask(cfg, ctx.datasets, ctx.device)
    if state is not None:
        task.load_state_dict(state)
    batches = ctx.batches(task.datasets, {})
    for step in steps:
        task.step(next(batches)[0], step, step * cfg.step_images(1))
    return task


def _groups(task: GenerationTask) -> list[dict]:
    return [task.optimizers[name].param_groups[0] for name in ("G", "D")]


def test_new_betas_on_resume_are_the_optimizers_betas(tiny_data, tmp_path):
    _, state = _trained_state(tiny_config(tiny_data, str(tmp_path)), tmp_path)
    resumed = _resumed(tiny_config(tiny_data, str(tmp_path), **{"train.beta1": 0.2, "train.beta2": 0.95}),
                       tmp_path, state)
    assert [group["betas"] for group in _groups(resumed)] == [(0.2, 0.95)] * 2
    assert state["optimizers"]["G"]["param_groups"][0]["betas"] == (0.5, 0.999)  # the checkpoint's: the defaults


def test_a_nonfinite_cut_carries_over_as_a_fraction_of_the_new_rate(tiny_data, tmp_path):
    _, state = _trained_state(tiny_config(tiny_data, str(tmp_path), **RATES_A), tmp_path,
                              before_saving=lambda task: task.scale_learning_rates(0.5))
    doubled = {key: 2 * rate for key, rate in RATES_A.items()}
    resumed = _resumed(tiny_config(tiny_data, str(tmp_path), **doubled), tmp_path, state)
    for group, rate in zip(_groups(resumed), doubled.values()):
        assert group["lr"] == pytest.approx(rate * 0.5, rel=1e-12)
        assert group["base_lr"] == pytest.approx(rate * 0.5, rel=1e-12)
        assert group["configured_lr"] == rate


def test_a_checkpoint_without_configured_rates_resumes_at_its_own_rates(tiny_data, tmp_path):
    _, state = _trained_state(tiny_config(tiny_data, str(tmp_path), **RATES_A), tmp_path)
    for optimizer in state["optimizers"].values():  # as written before the configured rate was kept
        for group in optimizer["param_groups"]:
            del group["configured_lr"]
    resumed = _resumed(tiny_config(tiny_data, str(tmp_path), **RATES_B), tmp_path, state)
    assert [group["lr"] for group in _groups(resumed)] == list(RATES_A.values())


def test_a_resume_with_nothing_changed_matches_the_uninterrupted_run_bit_for_bit(tiny_data, tmp_path):
    straight, resumed = straight_and_resumed(functools.partial(tiny_config, tiny_data, str(tmp_path)), tmp_path)
    assert_same_state(straight, resumed)
    defaults = tiny_config(tiny_data, str(tmp_path)).train
    assert [resumed["optimizers"][name]["param_groups"][0]["configured_lr"] for name in ("G", "D")] == \
        [defaults.lr_g, defaults.lr_d]


# ---- every RETUNABLE key ------------------------------------------------------------------------------------------

# Every part a RETUNABLE key sets, switched on (with state that moves: ADA's p, LeCam's means, the EMA).
EVERY_PART = {"train.augment": "translation", "train.ada_target": 0.6, "train.ada_interval": 1,
              "train.r1_gamma": 1.0, "train.r2_gamma": 1.0, "train.r1_every": 1, "train.gp_weight": 10.0,
              "train.lecam_weight": 0.1, "train.ema_half_life_kimg": 1.0}

# For each key: a value other than EVERY_PART's (or the default), and where a task holds the value in effect.
IN_EFFECT = {
    "train.lr_g": (5e-4, lambda task: [task.opt_g.param_groups[0]["lr"]]),
    "train.lr_d": (5e-4, lambda task: [task.opt_d.param_groups[0]["lr"]]),
    "train.beta1": (0.1, lambda task: [group["betas"][0] for group in _groups(task)]),
    "train.beta2": (0.9, lambda task: [group["betas"][1] for group in _groups(task)]),
    "train.r1_gamma": (0.25, lambda task: [task.adversary.gammas[0].item()]),
    "train.r2_gamma": (0.25, lambda task: [task.adversary.gammas[1].item()]),
    "train.gp_weight": (2.0, lambda task: [task.adversary.t.gp_weight]),  # what each D update reads
    "train.ada_target": (0.3, lambda task: [task.adversary.ada.target]),
    "train.lecam_weight": (0.5, lambda task: [task.adversary.lecam.weight]),
    "train.ema_half_life_kimg": (4.0, lambda task: [task.ema.half_life_kimg]),
}


@pytest.mark.parametrize("key", RETUNABLE)
def test_every_retunable_key_changed_on_resume_is_in_effect(key, tiny_data, tmp_path):
    new, in_effect = IN_EFFECT[key]
    trained, state = _trained_state(tiny_config(tiny_data, str(tmp_path), **EVERY_PART), tmp_path)
    resumed = _resumed(tiny_config(tiny_data, str(tmp_path), **{**EVERY_PART, key: new}), tmp_path, state)
    assert in_effect(trained) != pytest.approx([new] * len(in_effect(trained)))
    assert in_effect(resumed) == pytest.approx([new] * len(in_effect(resumed)), rel=1e-12)
    assert resumed.adversary.lecam.seen.item() == trained.adversary.lecam.seen.item() + 1  # LeCam's means came along
