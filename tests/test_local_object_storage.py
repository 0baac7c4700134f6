"""The local backend on object storage (moto's S3 server on loopback): checkpoints, metrics and sample grids in
the bucket, retention, an exact resume from the bucket, and `gan-dist sample` of such a run."""

import json

import pytest

from gan_dist import checkpoint
from gan_dist.cli import main
from gan_dist.runtime.launch import train
from helpers import assert_same_state, run, s3_client, tiny_config

pytestmark = pytest.mark.slow  # a console-script run on object storage for every test

TINY = ["--set", "model.z_dim=8", "--set", "model.g_channels=8", "--set", "model.d_channels=8",
        "--set", "train.batch_size=8", "--set", "train.log_every=2", "--set", "train.sample_every=3",
        "--set", "train.checkpoint_every=2", "--set", "run.keep_checkpoints=2"]


def keys(bucket: str, prefix: str) -> set[str]:
    listed = s3_client().list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"].removeprefix(prefix) for o in listed}


@pytest.fixture(scope="module")
def s3_run(s3_server, tiny_data) -> tuple[str, str]:
    """(bucket, run URI) of `gan-dist train --backend local` to s3://, 6 steps, a checkpoint every 2, 2 kept."""
    bucket = "gan-dist-local-backend"
    s3_client().create_bucket(Bucket=bucket)
    done = run("train", "--backend", "local", "--data", tiny_data, "--storage", f"s3://{bucket}/runs", "--name", "r",
               "--steps", "6", *TINY)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "done: step 6" in done.stdout
    return bucket, f"s3://{bucket}/runs/r"


def test_checkpoints_metrics_and_grids_land_in_the_bucket_and_only_the_newest_are_kept(s3_run):
    bucket, run_uri = s3_run
    files = keys(bucket, "runs/r/")
    assert {"checkpoint_000000004/", "checkpoint_000000006/"} == {k[:21] for k in files if k.startswith("checkp")}
    for step in (4, 6):  # step 2 was pruned: keep_checkpoints=2
        assert {f"checkpoint_{step:09d}/{name}" for name in ("state.pt", "generator.safetensors", "meta.json")} <= files
        assert checkpoint.is_complete(f"{run_uri}/checkpoint_{step:09d}")
    assert {"samples/step_000000003.png", "samples/step_000000006.png", "metrics.jsonl"} <= files
    body = s3_client().get_object(Bucket=bucket, Key="runs/r/metrics.jsonl")["Body"].read().decode()
    assert [json.loads(line)["step"] for line in body.splitlines()] == [2, 4, 6]


def test_sample_reads_the_newest_checkpoint_of_the_s3_run(s3_run, tmp_path, capsys):
    assert main(["sample", s3_run[1], "--num", "4", "--out", str(tmp_path)]) == 0, capsys.readouterr().err
    # the default preset conditions on tiny_data's classes: labels.csv names each sample's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv"] + [f"sample_{i:05d}.png" for i in range(4)]


def test_resume_from_the_bucket_ends_with_an_uninterrupted_runs_weights(s3_run, tiny_data):
    bucket = s3_run[0]
    storage = f"s3://{bucket}/resume"
    train(tiny_config(tiny_data, storage, **{"run.backend": "local", "run.name": "straight"}))
    train(tiny_config(tiny_data, storage, **{"run.backend": "local", "run.name": "split", "train.steps": 4}))
    # A torn checkpoint_6 left by a crash: the resume must replace the folder whole, not write into it.
    for name in ("state.pt", "stale.bin"):
        s3_client().put_object(Bucket=bucket, Key=f"resume/split/checkpoint_000000006/{name}", Body=b"torn")
    result = train(tiny_config(tiny_data, storage, **{"run.backend": "local", "run.name": "split", "run.resume": True}))
    assert (result.resumed_from, result.step) == (4, 6)

    assert "checkpoint_000000006/stale.bin" not in keys(bucket, "resume/split/")
    a = checkpoint.load_state(f"{storage}/straight/checkpoint_000000006")
    b = checkpoint.load_state(f"{storage}/split/checkpoint_000000006")
    assert_same_state(a, b)
