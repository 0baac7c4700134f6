"""The loop in-process on CPU, through the local backend's context: no Ray."""

import json

import torch

from conftest import tiny_config
from gan_dist import checkpoint
from gan_dist.data.reader import DataPosition, read_manifest
from gan_dist.runtime.local import LocalContext
from gan_dist.train.loop import train_loop
from gan_dist.train.task import GenerationTask


def local_ctx(cfg, run_dir):
    return LocalContext(cfg, read_manifest(cfg.data.path), cfg.data.path, str(run_dir))


def test_training_steps_are_finite_and_move_both_nets(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, str(tmp_path))
    ctx = local_ctx(cfg, tmp_path / "run")
    task = GenerationTask(cfg, 16, 1, ctx.device, distributed=False)
    before = {k: v.clone() for k, v in _weights(task).items()}
    batches = ctx.batches(DataPosition())
    for step in range(3):
        out = task.step(next(batches)[0], step, rank=0)
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

    fresh = GenerationTask(cfg, 16, 1, torch.device("cpu"), distributed=False)
    fresh.load_state_dict(saved)
    restored = fresh.state_dict()
    for part in ("nets", "optimizers"):
        for name in ("G", "D"):
            flat_saved, flat_restored = _tensors(saved[part][name]), _tensors(restored[part][name])
            assert flat_saved.keys() == flat_restored.keys() and flat_saved
            for key in flat_saved:
                assert torch.equal(flat_saved[key], flat_restored[key]), (part, name, key)
    assert saved["optimizers"]["G"]["state"][0]["step"] == 6  # Adam moments came along, not just weights
    meta = json.loads((tmp_path / "run" / "checkpoint_000000006" / "meta.json").read_text())
    assert meta["step"] == 6 and meta["files"]["state.pt"] > 0


def _tensors(tree, prefix=""):
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else []
    out = {}
    for key, value in items:
        out.update(_tensors(value, f"{prefix}/{key}"))
    return out


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tiny_data, tmp_path):
    straight = tiny_config(tiny_data, str(tmp_path), **{"run.name": "straight"})
    train_loop(local_ctx(straight, tmp_path / "straight"), straight)

    first = tiny_config(tiny_data, str(tmp_path), **{"train.steps": 3})
    train_loop(local_ctx(first, tmp_path / "split"), first)
    second = tiny_config(tiny_data, str(tmp_path), **{"run.resume": True})
    result = train_loop(local_ctx(second, tmp_path / "split"), second)
    assert result.resumed_from == 3 and result.step == 6

    a = checkpoint.load_state(str(tmp_path / "straight" / "checkpoint_000000006"))
    b = checkpoint.load_state(str(tmp_path / "split" / "checkpoint_000000006"))
    for name in ("G", "D"):
        for key, tensor in a["nets"][name].items():
            assert torch.equal(tensor, b["nets"][name][key]), (name, key)
    assert a["train"] == b["train"]


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
