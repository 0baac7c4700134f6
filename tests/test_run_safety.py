"""Nothing lost, nothing cryptic: checkpoints, run directories and `train` under bad input, on real files (and
the console script where the user meets the message)."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from gan_dist import checkpoint
from gan_dist.data.prepare import write_shards
from gan_dist.errors import UserError
from gan_dist.runtime.launch import train
from helpers import GAN_DIST, free_port, numbered_images, run, tiny_config


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under a folder with its bytes: what 'nothing was changed' is checked against."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(done: subprocess.CompletedProcess, expected: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "weights_only" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert expected in done.stderr, done.stderr


def tear(run_dir: Path, step: int) -> Path:
    """A checkpoint folder as a killed upload leaves it: a short state.pt and no meta.json."""
    folder = run_dir / checkpoint.checkpoint_name(step)
    folder.mkdir()
    (folder / "state.pt").write_bytes(b"\0" * 100)
    return folder


def garble(path: Path) -> None:
    """Garbage of exactly the right size: a size check cannot tell."""
    path.write_bytes(np.random.default_rng(1).bytes(path.stat().st_size))


@pytest.fixture
def two_checkpoints(tiny_data, tmp_path):
    """A run 'tiny' with complete checkpoints at steps 2 and 4."""
    train(tiny_config(tiny_data, str(tmp_path), **{"train.steps": 4, "train.checkpoint_every": 2}))
    return tmp_path / "tiny"


def test_retention_counts_complete_checkpoints_only(tiny_data, tmp_path, two_checkpoints):
    run_dir = two_checkpoints
    torn = tear(run_dir, 10)
    result = train(tiny_config(tiny_data, str(tmp_path), **{"train.steps": 6, "train.checkpoint_every": 2,
                                                           "run.keep_checkpoints": 1, "run.resume": True}))
    assert (result.resumed_from, result.step) == (4, 6)
    # The newest complete checkpoint survives; the torn folder past this run's step is left for the run to
    # overwrite when it gets there, and never counted as one of the kept.
    assert checkpoint.list_checkpoints(str(run_dir)) == [6, 10]
    assert checkpoint.is_complete(str(run_dir / "checkpoint_000000006"))
    assert (torn / "state.pt").read_bytes() == b"\0" * 100


def test_prune_never_deletes_the_newest_complete_checkpoint(two_checkpoints):
    run_dir = two_checkpoints
    (run_dir / "checkpoint_000000004" / "meta.json").unlink()  # 4 is torn now: 2 is the newest complete
    assert checkpoint.prune(str(run_dir), keep_last=1, current_step=4) == [2]
    assert checkpoint.list_checkpoints(str(run_dir)) == [2, 4]


def test_resume_over_only_incomplete_checkpoints_refuses_and_changes_nothing(tiny_data, tmp_path):
    run_dir = tmp_path / "tiny"
    run_dir.mkdir()
    tear(run_dir, 3)
    (run_dir / "metrics.jsonl").write_text('{"step": 2, "loss_D": 1.0}\n')
    before = snapshot(run_dir)
    with pytest.raises(UserError, match=r"no complete checkpoint to resume \(checkpoint_000000003: no meta\.json"):
        train(tiny_config(tiny_data, str(tmp_path), **{"run.resume": True}))
    assert snapshot(run_dir) == before


def test_a_run_stopped_before_its_first_checkpoint_is_not_reused(tiny_data, tmp_path):
    run_dir = tmp_path / "tiny"
    (run_dir / "samples").mkdir(parents=True)
    (run_dir / "samples" / "step_000000003.png").write_bytes(b"old grid")
    (run_dir / "metrics.jsonl").write_text('{"step": 2, "loss_D": 1.0}\n')
    before = snapshot(run_dir)
    with pytest.raises(UserError, match=r"already exists \(metrics but no checkpoint yet\); pass --resume"):
        train(tiny_config(tiny_data, str(tmp_path)))
    assert snapshot(run_dir) == before
    # --resume starts it again from step 0, after what it wrote before.
    result = train(tiny_config(tiny_data, str(tmp_path), **{"run.resume": True}))
    assert (result.resumed_from, result.step) == (None, 6)
    assert (run_dir / "metrics.jsonl").read_text().startswith('{"step": 2, "loss_D": 1.0}\n{"step": 2,')


def test_ray_markers_alone_do_not_make_a_run(tiny_data, tmp_path):
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / ".validate_storage_marker").touch()  # what a Ray run that failed at start leaves
    assert train(tiny_config(tiny_data, str(tmp_path))).step == 6


def test_resume_skips_a_damaged_newest_checkpoint_and_says_so(tiny_data, tmp_path, two_checkpoints, capsys):
    garble(two_checkpoints / "checkpoint_000000004" / "state.pt")
    result = train(tiny_config(tiny_data, str(tmp_path), **{"train.steps": 6, "train.checkpoint_every": 2,
                                                           "run.resume": True}))
    assert (result.resumed_from, result.step) == (2, 6)
    out = capsys.readouterr().out
    assert "warning: skipping" in out and "checkpoint_000000004: state.pt does not match its checksum" in out
    assert checkpoint.load_state(str(two_checkpoints / "checkpoint_000000004"))["train"]["step"] == 4  # rewritten


@pytest.mark.parametrize("damage", ["garbage", "meta"])
def test_resume_when_no_checkpoint_loads_refuses_and_changes_nothing(tiny_data, tmp_path, damage):
    train(tiny_config(tiny_data, str(tmp_path), **{"train.steps": 3}))
    newest = tmp_path / "tiny" / "checkpoint_000000003"
    if damage == "garbage":
        garble(newest / "state.pt")
    else:
        (newest / "meta.json").write_text('{"step": 3, "files": {"state.pt": ')
    before = snapshot(tmp_path / "tiny")
    with pytest.raises(UserError) as err:
        train(tiny_config(tiny_data, str(tmp_path), **{"run.resume": True}))
    assert "nothing was" in str(err.value) and "weights_only" not in str(err.value)
    assert snapshot(tmp_path / "tiny") == before


@pytest.mark.parametrize(
    "damage, from_sample, from_resume",
    [
        ("garbage-state", None, "state.pt does not match its checksum"),
        ("garbage-generator", "generator.safetensors does not match its checksum", "generator.safetensors does not"),
        ("truncated", "generator.safetensors does not match its checksum", "generator.safetensors has 64 of"),
        ("meta", "meta.json is not valid JSON", "meta.json is not valid JSON"),
        ("no-meta", "no meta.json", "no meta.json"),
    ],
)
@pytest.mark.slow
def test_damaged_checkpoints_are_one_line_for_sample_and_resume_from(tiny_data, tmp_path, damage, from_sample,
                                                                     from_resume):
    train(tiny_config(tiny_data, str(tmp_path), **{"train.steps": 3}))
    ckpt = tmp_path / "tiny" / "checkpoint_000000003"
    if damage == "garbage-state":
        garble(ckpt / "state.pt")
    elif damage == "garbage-generator":
        garble(ckpt / "generator.safetensors")
    elif damage == "truncated":
        with open(ckpt / "generator.safetensors", "r+b") as f:
            f.truncate(64)
    elif damage == "meta":
        (ckpt / "meta.json").write_text("{not json")
    else:
        (ckpt / "meta.json").unlink()
    if from_sample:  # sample reads the generator only
        one_line_error(run("sample", str(ckpt), "--num", "2", "--out", str(tmp_path / "out")), from_sample)
        assert not (tmp_path / "out").exists()
    one_line_error(run("train", "--data", tiny_data, "--storage", str(tmp_path), "--name", "other",
                       "--resume-from", str(ckpt), "--steps", "4"), from_resume)
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_sample_from_a_run_falls_back_past_a_damaged_newest_checkpoint(tiny_data, tmp_path, two_checkpoints):
    garble(two_checkpoints / "checkpoint_000000004" / "generator.safetensors")
    done = run("sample", str(two_checkpoints), "--num", "2", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "skipping" in done.stderr and "checkpoint_000000004" in done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sample_00000.png", "sample_00001.png"]


def test_resuming_with_another_model_or_image_shape_names_the_mismatch(tiny_data, tmp_path, two_checkpoints):
    with pytest.raises(UserError, match=r"model\.g_channels=8 \(this run: 16\); resume with the same model"):
        train(tiny_config(tiny_data, str(tmp_path), **{"run.resume": True, "model.g_channels": 16}))
    rgb = tmp_path / "rgb"
    write_shards(numbered_images(64, channels=3), None, str(rgb))
    with pytest.raises(UserError, match=r"images 16x16x1 \(this run: 16x16x3\)"):
        train(tiny_config(str(rgb), str(tmp_path), **{"run.name": "new", "run.resume_from": str(two_checkpoints)}))
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_a_dataset_no_model_takes_is_refused_at_prepare_and_at_train(tmp_path):
    one_line_error(run("prepare", "digits", str(tmp_path / "d48"), "--resolution", "48"),
                   "no model can train on 48x48 images (resolutions each model takes: dcgan: 8, 16, 32")
    assert not (tmp_path / "d48").exists()
    write_shards(numbered_images(16, resolution=48), None, str(tmp_path / "arrays48"))
    one_line_error(run("train", "--data", str(tmp_path / "arrays48"), "--storage", str(tmp_path / "runs")),
                   "model.arch=dcgan cannot train on 48x48 images")
    # Under Ray too, refused by the driver before any worker starts, and with no advice to --resume.
    done = run("train", "--data", str(tmp_path / "arrays48"), "--storage", str(tmp_path / "runs"),
               "--num-workers", "2", "--set", "model.arch=resnet_sn")
    one_line_error(done, "model.arch=resnet_sn cannot train on 48x48 images")
    assert "--resume" not in done.stderr and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_an_unreachable_ray_address_is_one_line_within_seconds(tmp_path):
    started = time.monotonic()
    done = run("train", "--address", f"127.0.0.1:{free_port()}", "--num-workers", "2", "--storage", str(tmp_path))
    one_line_error(done, "cannot reach the Ray cluster at 127.0.0.1:")
    assert time.monotonic() - started < 60  # Ray alone retries for minutes


def test_a_best_metric_that_is_never_logged_warns_at_start(tiny_data, tmp_path, capsys):
    train(tiny_config(tiny_data, str(tmp_path), **{"run.keep_best": "fid"}))
    assert "warning: run.keep_best='fid' is never logged (logged: step, images_seen" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["file", "under-file"])
def test_a_storage_that_is_a_file_is_refused_before_any_work(tmp_path, kind):
    (tmp_path / "runs").write_text("not a folder")
    storage = tmp_path / "runs" if kind == "file" else tmp_path / "runs" / "deeper"
    one_line_error(run("train", "--storage", str(storage)), f"--storage {storage} is not a folder")
    assert (tmp_path / "runs").read_text() == "not a folder"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) to mount a read-only folder")
def test_a_read_only_storage_is_refused_before_any_work(tmp_path):
    storage = tmp_path / "ro"
    storage.mkdir()
    script = f"mount -t tmpfs -o ro tmpfs {storage} && exec {GAN_DIST} train --storage {storage}"
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], capture_output=True,
                          text=True, timeout=300)
    if "mount:" in done.stderr:
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")
    one_line_error(done, f"--storage {storage} cannot be written (Read-only file system)")


@pytest.mark.slow
def test_storage_in_a_missing_bucket_or_behind_a_dead_endpoint_is_one_line(s3_server, tmp_path):
    one_line_error(run("train", "--backend", "ray", "--storage", "s3://no-such-bucket/runs"),
                   "bucket 'no-such-bucket' of s3://no-such-bucket/runs does not exist")
    env = dict(os.environ, AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    done = run("train", "--backend", "ray", "--storage", "s3://runs/here", env=env)
    one_line_error(done, "cannot reach s3://runs/here")
    assert "AWS_ENDPOINT_URL" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_gpu_on_a_machine_without_one_is_one_line_not_a_wait(tmp_path, workers):
    # Under Ray (2 workers, a local Ray started for the run) Ray Train would wait for GPUs forever.
    done = run("train", "--gpu", "--num-workers", workers, "--storage", str(tmp_path))
    one_line_error(done, "drop --gpu to")
    assert "run '" not in done.stdout  # refused before the run starts


@pytest.mark.slow
def test_object_storage_behind_a_dead_endpoint_is_one_line_for_the_local_backend_too(tmp_path, s3_server):
    # The local backend writes to s3:// as well (tests/test_local_object_storage.py); it checks the endpoint first.
    env = dict(os.environ, AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    done = run("train", "--backend", "local", "--storage", "s3://bucket/runs", env=env)
    one_line_error(done, "cannot reach s3://bucket/runs")
    assert "run '" not in done.stdout


@pytest.mark.parametrize("args, expected", [
    (["prepare", "digits", ""], "OUT is empty; pass a folder path"),
    (["train", "--storage", ""], "--storage is empty; pass a folder path"),
    (["sample", "runs/x", "--out", ""], "--out is empty; pass a folder path"),
    (["prepare", "digits", "s3://"], "s3:// names no bucket; pass s3://BUCKET/PATH"),
    (["train", "--backend", "ray", "--storage", "s3://"], "s3:// names no bucket"),
])
@pytest.mark.slow
def test_an_empty_output_or_one_without_a_bucket_is_refused(args, expected, tmp_path):
    done = run(*args, cwd=tmp_path)  # '' would have meant this folder
    one_line_error(done, expected)
    assert not list(tmp_path.iterdir())


def test_resume_warns_about_a_torn_checkpoint_past_the_newest_complete_one(tiny_data, tmp_path, two_checkpoints,
                                                                          capsys):
    (two_checkpoints / "checkpoint_000000004" / "meta.json").write_text("{torn")
    result = train(tiny_config(tiny_data, str(tmp_path), **{"train.steps": 3, "train.checkpoint_every": 2,
                                                           "run.resume": True}))
    assert (result.resumed_from, result.step) == (2, 3)
    assert ("warning: checkpoint_000000004 is incomplete (meta.json is not valid JSON); resuming from step 2, and "
            "checkpoint_000000004 is replaced when the run reaches step 4") in capsys.readouterr().err
    assert (two_checkpoints / "checkpoint_000000004" / "meta.json").read_text() == "{torn"  # not reached: kept


def test_a_resume_with_nothing_left_to_train_says_so(tiny_data, tmp_path, two_checkpoints, capsys):
    before = snapshot(two_checkpoints)
    result = train(tiny_config(tiny_data, str(tmp_path), **{"train.steps": 3, "run.resume": True}))
    assert (result.resumed_from, result.step) == (4, 4)
    assert "run 'tiny' is at step 4 already (--steps 3); nothing to train" in capsys.readouterr().out
    assert snapshot(two_checkpoints) == before
    with pytest.raises(UserError, match=r"--resume-from .*checkpoint_000000004 is at step 4, not below --steps 4"):
        train(tiny_config(tiny_data, str(tmp_path), **{"train.steps": 4, "run.name": "new",
                                                      "run.resume_from": str(two_checkpoints)}))
    assert not (tmp_path / "new").exists()


def test_resuming_a_run_on_another_dataset_of_the_same_shape_is_refused(tmp_path, tiny_data, two_checkpoints):
    other = tmp_path / "other"
    write_shards(numbered_images(64)[::-1].copy(), None, str(other))  # 16x16x1 as well, other images
    with pytest.raises(UserError, match=r"was trained on another dataset .*resume with the run's own --data"):
        train(tiny_config(str(other), str(tmp_path), **{"run.resume": True, "train.steps": 6}))
    # A new run may start from that checkpoint on other data: that is what --resume-from is for.
    result = train(tiny_config(str(other), str(tmp_path), **{"run.name": "finetune", "train.steps": 6,
                                                            "run.resume_from": str(two_checkpoints)}))
    assert (result.resumed_from, result.step) == (4, 6)


@pytest.mark.slow
def test_a_batch_larger_than_a_workers_share_is_refused_before_any_worker_starts(tmp_path):
    write_shards(numbered_images(1), None, str(tmp_path / "one"))
    done = run("train", "--data", str(tmp_path / "one"), "--num-workers", "2", "--batch-size", "4",
               "--storage", str(tmp_path / "runs"))
    one_line_error(done, "each of 2 worker(s) gets 0 of the dataset's 1 images, fewer than one batch of 4")
    assert not (tmp_path / "runs").exists()


def test_a_folder_of_other_files_is_not_taken_for_a_run(tiny_data, tmp_path):
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "notes.txt").write_text("mine")
    for resume in (False, True):
        with pytest.raises(UserError, match=r"tiny holds other files \(notes.txt\), not a gan-dist run"):
            train(tiny_config(tiny_data, str(tmp_path), **{"run.resume": resume}))
    assert snapshot(tmp_path / "tiny") == {"notes.txt": b"mine"}


def test_a_state_that_loads_but_is_not_this_tasks_is_skipped_like_a_damaged_one(tiny_data, tmp_path,
                                                                               two_checkpoints, capsys):
    import hashlib

    import torch

    newest = two_checkpoints / "checkpoint_000000004"
    torch.save({}, newest / "state.pt")  # a valid file with a matching checksum, but no nets in it
    meta = json.loads((newest / "meta.json").read_text())
    data = (newest / "state.pt").read_bytes()
    meta["files"]["state.pt"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (newest / "meta.json").write_text(json.dumps(meta))
    result = train(tiny_config(tiny_data, str(tmp_path), **{"train.steps": 6, "train.checkpoint_every": 2,
                                                           "run.resume": True}))
    assert result.resumed_from == 2
    assert "state.pt does not hold this run's nets and optimizers" in capsys.readouterr().out
