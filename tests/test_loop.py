"""The loop in-process on CPU, through the local backend's context: no Ray."""

import json

import pytest
import torch

from gan_dist import checkpoint
from gan_dist.data.placement import Dataset
from gan_dist.data.reader import read_manifest
from gan_dist.errors import UserError
from gan_dist.train.loop import train_loop
from gan_dist.train.tasks.generation import GenerationTask
from helpers import assert_same_state, local_ctx, tiny_config


def test_training_steps_are_finite_and_move_both_nets(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, str(tmp_path))
    ctx = local_ctx(cfg, tmp_path / "run")
    task = GenerationTask(cfg, ctx.datasets, ctx.device)
    before = {k: v.clone() for k, v in _weights(task).items()}
    batches = ctx.batches(task.datasets, {})
    for step in range(3):
        out = task.train_step(next(batches)[0], step)
        assert all(torch.isfinite(v) for v in out.values()), out
    after = _weights(task)
    changed = [k for k in before if k.endswith("weight") and not torch.equal(before[k], after[k])]
    assert any(k.startswith("D.") for k in changed) and any(k.startswith("G.") for k in changed)


def _weights(task):
    return {**{"G." + k: v for k, v in task.G.state_dict().items()}, **{"D." + k: v for k, v in task.D.state_dict().items()}}


def test_checkpoint_roundtrip_restores_every_tensor_exactly(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, str(tmp_path))
    result = train_loop(local_ctx(cfg, tmp_path / "run"), cfg)
    assert result.step == 6
    latest = checkpoint.latest_complete(str(tmp_path / "run"))
    assert latest.endswith("checkpoint_000000006")
    saved = checkpoint.load_state(latest)

    fresh = GenerationTask(cfg, {"train": Dataset(tiny_data, read_manifest(tiny_data))}, torch.device("cpu"))
    fresh.load_state_dict(saved)
    restored = fresh.state_dict()
    assert {"nets", "optimizers", "ema"} <= restored.keys()
    assert_same_state({part: saved[part] for part in restored}, restored)
    assert saved["optimizers"]["G"]["state"][0]["step"] == 6  # Adam moments came along, not just weights
    meta = json.loads((tmp_path / "run" / "checkpoint_000000006" / "meta.json").read_text())
    assert meta["step"] == 6 and meta["files"]["state.pt"]["size"] > 0 and len(meta["files"]["state.pt"]["sha256"]) == 64


RESNET = {"model.arch": "resnet_sn", "model.g_channels": 16, "model.d_channels": 16, "train.loss": "hinge"}


# Every stabilizer with state or draws, on the critic loss with its gradient penalty: ADA's p adjusted across the
# resume at 3, LeCam's running means, R1 and WGAN-GP's mixing draws.
STABILIZED = {"data.placement": "resident", **RESNET, "train.loss": "wgan", "train.gp_weight": 10.0,
              "train.augment": "translation,cutout,color", "train.ada_target": 0.6, "train.ada_interval": 2,
              "train.ada_kimg": 0.5, "train.r1_gamma": 1.0, "train.r1_every": 2, "train.lecam_weight": 0.1,
              "train.n_dis": 2}


# R3GAN's recipe: the relativistic loss with R1 and R2 every update, every cosine schedule straddling the resume at
# 3 (schedule.kimg spans the 6-step run: a 3-step first half must not shorten it).
R3GAN = {"data.placement": "resident", "model.arch": "r3gan", "model.g_channels": 16, "model.d_channels": 16,
         "model.conditional": True, "train.loss": "rpgan", "train.r1_gamma": 1.0, "train.r2_gamma": 1.0,
         "train.r1_every": 1, "train.beta1": 0.0, "train.beta2": 0.9, "train.augment": "translation,color",
         "train.augment_p": 0.0, "train.ema_half_life_kimg": 0.0, "train.ema_rampup": None,
         "schedule.kimg": 0.048, "schedule.lr_g": 5e-5, "schedule.lr_d": 5e-5, "schedule.beta2": 0.99,
         "schedule.r1_gamma": 0.1, "schedule.r2_gamma": 0.1, "schedule.augment_p": 0.5,
         "schedule.ema_half_life_kimg": 0.02}


@pytest.mark.parametrize("variant", [{"data.placement": "resident"}, {"data.placement": "stream"},
                                     {"data.placement": "resident", **RESNET}, STABILIZED, R3GAN],
                         ids=["resident", "stream", "resnet_sn", "stabilizers", "r3gan"])
def test_interrupted_and_resumed_run_ends_with_the_same_weights(variant, tiny_data, tmp_path):
    straight = tiny_config(tiny_data, str(tmp_path), **{"run.name": "straight", **variant})
    train_loop(local_ctx(straight, tmp_path / "straight"), straight)

    first = tiny_config(tiny_data, str(tmp_path), **{"train.steps": 3, **variant})
    train_loop(local_ctx(first, tmp_path / "split"), first)
    second = tiny_config(tiny_data, str(tmp_path), **{"run.resume": True, **variant})
    result = train_loop(local_ctx(second, tmp_path / "split"), second)
    assert result.resumed_from == 3 and result.step == 6

    a = checkpoint.load_state(str(tmp_path / "straight" / "checkpoint_000000006"))
    b = checkpoint.load_state(str(tmp_path / "split" / "checkpoint_000000006"))
    # every tensor: nets, the EMA generator, Adam's moments and the schedules' last rates and beta2, what the
    # stabilizers keep, the RNG states, the data positions
    assert_same_state(a, b)


def test_only_complete_checkpoints_are_resumed_from(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, str(tmp_path))
    train_loop(local_ctx(cfg, tmp_path / "run"), cfg)
    newest = tmp_path / "run" / "checkpoint_000000006"
    with open(newest / "state.pt", "r+b") as f:  # a torn upload: shorter than meta.json says
        f.truncate(100)
    assert checkpoint.latest_complete(str(tmp_path / "run")).endswith("checkpoint_000000003")
    (tmp_path / "run" / "checkpoint_000000009").mkdir()  # a directory with no meta.json at all
    assert checkpoint.latest_complete(str(tmp_path / "run")).endswith("checkpoint_000000003")


def test_sample_grids_are_written_on_schedule(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, str(tmp_path))
    train_loop(local_ctx(cfg, tmp_path / "run"), cfg)
    grids = sorted(p.name for p in (tmp_path / "run" / "samples").iterdir())
    assert grids == ["step_000000003.png", "step_000000006.png"]
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [2, 4, 6]
    assert {"loss_D", "loss_G", "D_real", "D_fake", "img_per_s", "images_seen"} <= lines[-1].keys()
    assert lines[-1]["images_seen"] == 6 * 8


class PoisonedBatches:
    """Wraps a context so that the n-th batches it hands out (counting across restarts) carry NaN pixels: what
    a corrupt input or an overflow does to a real step."""

    def __init__(self, ctx, poisoned: set[int]):
        self.ctx, self.poisoned, self.handed_out = ctx, poisoned, 0

    def __getattr__(self, name):
        return getattr(self.ctx, name)

    def batches(self, names, start):
        for batches, positions in self.ctx.batches(names, start):
            self.handed_out += 1
            if self.handed_out in self.poisoned:
                image = batches["train"]["image"].float()
                image[0, 0, 0, 0] = float("nan")
                batches = {"train": {**batches["train"], "image": image}}
            yield batches, positions


def test_nonfinite_gradient_skips_the_update(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, str(tmp_path))
    ctx = PoisonedBatches(local_ctx(cfg, tmp_path / "run"), poisoned={2})
    task = GenerationTask(cfg, ctx.datasets, ctx.device)
    batches = ctx.batches(task.datasets, {})
    task.train_step(next(batches)[0], 0)
    before = {k: v.clone() for k, v in task.D.state_dict().items()}
    adam_steps = task.opt_d.state[task.D.net[0].weight]["step"].clone()
    out = task.train_step(next(batches)[0], 1)
    assert not torch.isfinite(out["grad_norm_D"])
    assert all(torch.equal(v, task.D.state_dict()[k]) for k, v in before.items() if k.endswith("weight"))
    assert torch.equal(task.opt_d.state[task.D.net[0].weight]["step"], adam_steps)
    assert task.nonfinite.total.item() == 1 and task.nonfinite.streak.item() == 1
    task.train_step(next(batches)[0], 2)
    assert task.nonfinite.streak.item() == 0 and all(torch.isfinite(p).all() for p in task.D.parameters())


def test_repeated_nonfinite_steps_restore_the_checkpoint_with_lower_learning_rates(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, str(tmp_path), **{"train.steps": 10, "train.log_every": 1,
                                                   "train.checkpoint_every": 4, "train.nonfinite_patience": 3})
    ctx = PoisonedBatches(local_ctx(cfg, tmp_path / "run"), poisoned={5, 6, 7})
    result = train_loop(ctx, cfg)
    assert result.step == 10
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    events = [l for l in lines if "event" in l]
    assert [(e["event"], e["step"]) for e in events] == [
        ("nonfinite_skip", 5), ("nonfinite_skip", 6), ("nonfinite_skip", 7), ("nonfinite_restore", 7)]
    assert events[-1]["restored_step"] == 4 and events[-1]["lr_D"] == pytest.approx(cfg.train.lr_d / 2)
    # after the restore, steps 5..10 ran again from checkpoint 4 with clean data
    assert [l["step"] for l in lines if "event" not in l][-6:] == [5, 6, 7, 8, 9, 10]
    final = checkpoint.load_state(str(tmp_path / "run" / "checkpoint_000000010"))
    assert final["optimizers"]["D"]["param_groups"][0]["lr"] == pytest.approx(cfg.train.lr_d / 2)
    assert all(torch.isfinite(v).all() for v in final["nets"]["G"].values() if v.is_floating_point())


def test_divergence_before_the_first_checkpoint_is_a_clear_error(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, str(tmp_path), **{"train.log_every": 1, "train.checkpoint_every": 100,
                                                   "train.steps": 10})
    ctx = PoisonedBatches(local_ctx(cfg, tmp_path / "run"), poisoned={1, 2, 3})
    with pytest.raises(UserError, match="diverged .* before the first checkpoint; lower the learning rates"):
        train_loop(ctx, cfg)


def test_checkpoint_holds_the_ema_generator_for_inference_and_every_rank_rng(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, str(tmp_path))
    train_loop(local_ctx(cfg, tmp_path / "run"), cfg)
    uri = str(tmp_path / "run" / "checkpoint_000000006")
    weights = checkpoint.load_export(uri)
    state = checkpoint.load_state(uri)
    assert weights.keys() == state["ema"]["G"].keys() == state["nets"]["G"].keys()
    assert all(torch.equal(weights[k], state["ema"]["G"][k]) for k in weights)
    # the average trails the trained weights: it is not a copy of them
    assert any(not torch.equal(weights[k], state["nets"]["G"][k]) for k in weights if k.endswith("weight"))
    assert len(state["rng"]) == 1 and state["rng"][0]["cpu"].dtype == torch.uint8
    meta = json.loads((tmp_path / "run" / "checkpoint_000000006" / "meta.json").read_text())
    assert set(meta["files"]) == {"state.pt", "generator.safetensors"}


def test_without_ema_the_checkpoint_exports_the_trained_generator(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, str(tmp_path), **{"train.ema": False})
    train_loop(local_ctx(cfg, tmp_path / "run"), cfg)
    uri = str(tmp_path / "run" / "checkpoint_000000006")
    weights, state = checkpoint.load_export(uri), checkpoint.load_state(uri)
    assert "ema" not in state and all(torch.equal(weights[k], state["nets"]["G"][k]) for k in weights)


def test_retention_keeps_the_newest_and_the_best(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, str(tmp_path), **{"train.steps": 12, "train.checkpoint_every": 2,
                                                   "run.keep_checkpoints": 2, "run.keep_best": "loss_D"})
    train_loop(local_ctx(cfg, tmp_path / "run"), cfg)
    logged = {l["step"]: l["loss_D"] for l in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())}
    best = min(range(2, 13, 2), key=lambda step: logged[step])
    assert checkpoint.list_checkpoints(str(tmp_path / "run")) == sorted({10, 12, best})


def test_resume_from_starts_a_new_run_from_another_runs_checkpoint(tiny_data, tmp_path):
    from gan_dist.runtime.launch import train

    first = tiny_config(tiny_data, str(tmp_path), **{"run.name": "first"})
    train(first)
    second = tiny_config(tiny_data, str(tmp_path), **{"run.name": "second", "train.steps": 8,
                                                      "run.resume_from": str(tmp_path / "first")})
    result = train(second)
    assert (result.resumed_from, result.step) == (6, 8)
    assert checkpoint.list_checkpoints(str(tmp_path / "first")) == [3, 6]
    assert checkpoint.list_checkpoints(str(tmp_path / "second")) == [8]
