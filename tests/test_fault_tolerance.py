"""Recovery under Ray Train, on a loopback S3 endpoint: a worker killed with SIGKILL, checkpoints in the bucket."""

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import helpers
import pytest
import ray.cloudpickle
import torch

from gan_dist import checkpoint
from gan_dist.data.reader import DataPosition
from gan_dist.errors import UserError
from gan_dist.runtime.launch import train
from gan_dist.train.loop import train_loop
from helpers import s3_client, tiny_config

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
ray.cloudpickle.register_pickle_by_value(helpers)

pytestmark = pytest.mark.ray


def make_faulty_loop(marker_dir: str, fault_rank: int, fault_before_step: int, fault):
    """The project's loop; on the first attempt only, rank `fault_rank` calls `fault()` just before it trains
    step `fault_before_step`. Every attempt records the checkpoint it picked and where its data started."""

    def faulty_loop(ctx, cfg):
        attempt = len(list(Path(marker_dir).glob(f"start-rank{ctx.rank}-*.json")))
        read, latest = ctx.batches, ctx.latest_checkpoint
        first_step = [1]

        def latest_checkpoint():
            uri = latest()
            if uri:
                first_step[0] = int(uri.rstrip("/").rsplit("_", 1)[1]) + 1
                Path(marker_dir, f"picked-rank{ctx.rank}-{attempt}.txt").write_text(uri)
            return uri

        def batches(names, start):
            at = start.get("train", DataPosition())
            Path(marker_dir, f"start-rank{ctx.rank}-{attempt}.json").write_text(
                json.dumps({"epoch": at.epoch, "batch": at.batch}))
            for step, (batch, position) in enumerate(read(names, start), first_step[0]):
                if attempt == 0 and ctx.rank == fault_rank and step == fault_before_step:
                    Path(marker_dir, "fault").touch()
                    fault()
                yield batch, position

        ctx.batches, ctx.latest_checkpoint = batches, latest_checkpoint
        return train_loop(ctx, cfg)

    return faulty_loop


def kill_myself():
    os.kill(os.getpid(), signal.SIGKILL)


def test_sigkilled_worker_resumes_from_the_newest_complete_checkpoint(ray_cluster, tiny_data, bucket, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    storage = f"s3://{bucket}/runs"
    cfg = tiny_config(tiny_data, storage, **{"run.num_workers": 2, "run.name": "killed", "run.max_failures": 2,
                                             "train.steps": 12, "train.checkpoint_every": 4, "train.log_every": 4})
    # Step 9 is the first step after checkpoint 8 was reported: a crash there must lose nothing.
    result = train(cfg, loop=make_faulty_loop(str(markers), fault_rank=1, fault_before_step=9, fault=kill_myself))

    assert (result.resumed_from, result.step) == (8, 12)
    assert (markers / "fault").exists()
    picked = (markers / "picked-rank1-1.txt").read_text()
    assert picked.endswith("killed/checkpoint_000000008")
    client = s3_client()
    saved = torch.load(io.BytesIO(client.get_object(Bucket=bucket, Key="runs/killed/checkpoint_000000008/state.pt")
                                  ["Body"].read()), weights_only=True)
    # The second attempt started its data where checkpoint 8 left it.
    for rank in (0, 1):
        assert json.loads((markers / f"start-rank{rank}-1.json").read_text()) == saved["train"]["positions"]["train"]
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="runs/killed/")["Contents"]}
    for step in (8, 12):
        for name in ("state.pt", "generator.safetensors", "meta.json"):
            assert f"runs/killed/checkpoint_{step:09d}/{name}" in keys
    final = torch.load(io.BytesIO(client.get_object(Bucket=bucket, Key="runs/killed/checkpoint_000000012/state.pt")
                                  ["Body"].read()), weights_only=True)
    assert final["train"]["step"] == 12
    assert final["optimizers"]["G"]["state"][0]["step"] == 12  # no update lost, none applied twice
    assert len(final["rng"]) == 2  # both ranks' RNG states

    # The restore was exact: the killed-and-resumed run ends bit-identical to one that was never interrupted.
    cfg.run.name, cfg.run.storage = "straight", str(tmp_path / "runs")
    train(cfg)
    straight = torch.load(tmp_path / "runs" / "straight" / "checkpoint_000000012" / "state.pt", weights_only=True)
    for part in ("nets", "optimizers"):
        for name in ("G", "D"):
            assert _equal(straight[part][name], final[part][name]), (part, name)


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_storage_outage_mid_run_never_resumes_from_a_partial_checkpoint(ray_cluster, s3_server, tiny_data, bucket,
                                                                        tmp_path):
    """The S3 endpoint stops answering for 20 s (SIGSTOP: connections hang, objects survive). The run either
    rides it out through Ray's restarts or stops with a one-line error; `--resume` then finishes it."""
    markers = tmp_path / "markers"
    markers.mkdir()
    pid = s3_server.pid

    def outage():
        os.kill(pid, signal.SIGSTOP)
        subprocess.Popen(["sh", "-c", f"sleep 20; kill -CONT {pid}"], start_new_session=True)

    cfg = tiny_config(tiny_data, f"s3://{bucket}/runs", **{
        "run.num_workers": 2, "run.name": "outage", "run.max_failures": 3,
        "train.steps": 30, "train.checkpoint_every": 5, "train.log_every": 5})
    loop = make_faulty_loop(str(markers), fault_rank=0, fault_before_step=12, fault=outage)
    try:
        try:
            result = train(cfg, loop=loop)
        except UserError as err:
            assert "rerun with --resume" in str(err) and "\n" not in str(err)
            cfg.run.resume = True
            result = train(cfg, loop=loop)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert (markers / "fault").exists()
    assert result.step == 30
    # Whichever way it went (requests waited the outage out, or workers restarted, or a --resume), a resume
    # only ever picked complete checkpoints and the bucket holds no partial one.
    picked = [p.read_text() for p in markers.glob("picked-*.txt")]
    assert all(checkpoint.is_complete(uri) for uri in picked)
    run = f"s3://{bucket}/runs/outage"
    kept = checkpoint.list_checkpoints(run)
    assert kept[-1] == 30 and all(checkpoint.is_complete(f"{run}/{checkpoint.checkpoint_name(s)}") for s in kept)


def test_partial_checkpoints_in_the_bucket_are_never_picked(tiny_data, bucket, tmp_path):
    """What an upload cut off mid-way leaves behind: files missing, or shorter than meta.json says."""
    cfg = tiny_config(tiny_data, str(tmp_path))
    train(cfg)  # checkpoints 3 and 6, locally
    client, run = s3_client(), "runs/partial"
    for step in (3, 6, 9):
        for name in ("state.pt", "generator.safetensors", "meta.json"):
            source = tmp_path / "tiny" / f"checkpoint_{min(step, 6):09d}" / name
            body = source.read_bytes()
            if step == 6 and name == "state.pt":
                body = body[: len(body) // 2]  # torn upload
            if step == 9 and name != "meta.json":
                continue  # only meta.json made it
            client.put_object(Bucket=bucket, Key=f"{run}/checkpoint_{step:09d}/{name}", Body=body)
    assert checkpoint.latest_complete(f"s3://{bucket}/{run}").endswith("checkpoint_000000003")


def failing_loop(ctx, cfg):
    raise RuntimeError("a bug in the loop")


def test_a_run_that_fails_before_its_first_checkpoint_does_not_advise_resume(ray_cluster, tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, str(tmp_path), **{"run.num_workers": 2, "run.name": "broken"})
    with pytest.raises(UserError) as err:
        train(cfg, loop=failing_loop)
    message = str(err.value)
    assert "a bug in the loop" in message and "before its first checkpoint; nothing to resume" in message
    assert "--resume" not in message and "\n" not in message
