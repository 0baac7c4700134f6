"""Shared fixtures: a session cache for the embedded digits, tiny synthetic shards, one Ray cluster per session."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from gan_dist.config import load_config
from gan_dist.data.prepare import write_shards

# Ray Train polls its workers every 2 s by default, which makes each checkpoint report take ~2 s on 2 cores;
# a hang in a collective becomes an error instead of a stuck suite.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_TRAIN_COLLECTIVE_TIMEOUT_S", "120")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(scope="session", autouse=True)
def gan_dist_cache(tmp_path_factory):
    """The embedded-digits cache, shared by the whole session (in-process and console-script tests)."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["GAN_DIST_CACHE"] = str(path)
    return path


def numbered_images(n: int, resolution: int = 16, channels: int = 1) -> np.ndarray:
    """Random uint8 images whose first two bytes spell their row number, so a test can tell rows apart."""
    images = np.random.default_rng(0).integers(0, 256, (n, resolution, resolution, channels), dtype=np.uint8)
    flat = images.reshape(n, -1)
    flat[:, 0], flat[:, 1] = np.arange(n) % 256, np.arange(n) // 256
    return images


def interrupted_prepare(out: str, shard_size: int, at_row: int = 25) -> None:
    """A prepare of 40 blank 8x8 images into `out` that a Ctrl-C stops at row `at_row`: what it leaves behind."""
    from gan_dist.data.images import ImageSpec
    from gan_dist.data.prepare import PrepareOptions, write_dataset
    from gan_dist.data.sources import ArraySource

    class Interrupting(ArraySource):
        def label(self, index):
            if index == at_row:
                raise KeyboardInterrupt
            return None

    options = PrepareOptions(ImageSpec(8, 1), shard_size=shard_size, shuffle_seed=None)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(Interrupting(np.zeros((40, 8, 8, 1), np.uint8), None, [], "arrays"), out, options, progress=False)


def row_ids(batch) -> list[int]:
    """The row numbers `numbered_images` wrote into a batch's images (a reader's batch, or its image tensor)."""
    images = batch["image"] if isinstance(batch, dict) else batch
    flat = np.asarray(images).reshape(len(images), -1).astype(np.int64)
    return (flat[:, 0] + 256 * flat[:, 1]).tolist()


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: on a busy 2-core machine two threads wait on each other (a step ~3x
    slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
    """256 numbered 16x16 grayscale images in 4 shards, labeled row % 10 (classes "0".."9")."""
    out = tmp_path_factory.mktemp("tiny") / "shards"
    write_shards(numbered_images(256), np.arange(256, dtype=np.int32) % 10, str(out), shard_size=64,
                 class_names=[str(k) for k in range(10)])
    return str(out)


def tiny_config(data: str, storage: str, **overrides):
    """Small nets and batches: a step takes milliseconds on CPU."""
    base = {
        "data.path": data, "run.storage": storage, "run.name": "tiny",
        "model.z_dim": 8, "model.g_channels": 8, "model.d_channels": 8,
        "model.conditional": False,  # the default preset's auto would condition on tiny_data's classes
        "train.batch_size": 8, "train.steps": 6, "train.log_every": 2, "train.checkpoint_every": 3,
        "train.sample_every": 3, "eval.features": "off",  # tests of evaluation turn it on
    }
    base.update(overrides)
    return load_config(None, base)


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    """One local Ray for the whole session: starting one costs 10-20 s on 2 cores. Four logical CPUs, so two
    one-CPU workers leave room for the Ray Data read tasks. The loopback S3 endpoint and its keys reach the
    workers through the job's runtime_env, as `gan-dist train` passes them."""
    import ray

    aws = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=True, runtime_env={"env_vars": aws})
    yield ray
    ray.shutdown()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process, seconds: float) -> bool:
    """Whether `process` came to listen on 127.0.0.1:`port` within `seconds` (False once it has exited)."""
    import socket
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 endpoint on loopback (moto's server) that checks credentials: the first IAM calls are free and
    create the one user whose keys the session uses; every request after them must be signed with those keys."""
    import subprocess
    import sys

    import boto3

    port = _free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")
    log = open(tmp_path_factory.mktemp("moto") / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, env=env)
    if not wait_for_port(port, server, 60):
        server.kill()
        pytest.fail("moto's S3 server did not start; see its log")
    endpoint = f"http://127.0.0.1:{port}"
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
    iam.create_user(UserName="gan-dist")
    iam.put_user_policy(UserName="gan-dist", PolicyName="s3", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="gan-dist")["AccessKey"]
    saved = {k: os.environ.get(k) for k in _S3_ENV}
    os.environ.update({
        "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
    })
    yield S3Server(endpoint, server.pid)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.terminate()
    server.wait(timeout=30)
    log.close()


@dataclass
class S3Server:
    endpoint: str
    pid: int  # SIGSTOP/SIGCONT it to take the endpoint down and bring it back with its objects intact


_S3_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_REGION",
           "AWS_EC2_METADATA_DISABLED")


def s3_client():
    """An independent client (boto3) to check what the code under test wrote."""
    import boto3

    return boto3.client("s3")


@pytest.fixture
def bucket(s3_server, request):
    name = "gan-dist-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    s3_client().create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def tiny_domain_b(tmp_path_factory) -> str:
    """A second tiny domain beside tiny_data: 96 numbered 16x16 grayscale images (another size of dataset),
    labeled row % 10."""
    out = tmp_path_factory.mktemp("tiny-b") / "shards"
    images = numbered_images(96)
    images[:, 0, 2:] = 255 - images[:, 0, 2:]  # not tiny_data's rows: the row number stays readable
    write_shards(images, np.arange(96, dtype=np.int32) % 10, str(out), shard_size=32,
                 class_names=[str(k) for k in range(10)])
    return str(out)


def tiny_translation_config(a: str, b: str, storage: str, kind: str = "cyclegan", **overrides):
    """A translation preset at the smallest widths: a step takes milliseconds on CPU."""
    base = {
        "data.a": a, "data.b": b, "run.storage": storage, "run.name": "tiny", "model.g_channels": 4,
        "model.d_channels": 4, "model.blocks": 1, "model.d_layers": 1, "train.batch_size": 4, "train.steps": 6,
        "train.log_every": 2, "train.checkpoint_every": 3, "train.sample_every": 3, "eval.features": "off",
        **({"task.pool_size": 6} if kind == "cyclegan" else {"task.num_patches": 16}),
    }
    base.update(overrides)
    return load_config(f"{kind}-digits", base)


def tiny_inpaint_config(data: str, storage: str, **overrides):
    """The inpainting preset at the smallest widths: a step takes milliseconds on CPU."""
    base = {"data.path": data, "run.storage": storage, "run.name": "tiny", "model.g_channels": 4,
            "model.d_channels": 4, "model.blocks": 1, "model.d_layers": 1, "train.batch_size": 4, "train.steps": 6,
            "train.log_every": 2, "train.checkpoint_every": 3, "train.sample_every": 3, "eval.features": "off"}
    base.update(overrides)
    return load_config("inpaint-digits", base)


def assert_same_state(a: dict, b: dict) -> None:
    """Two checkpoint states (state.pt) hold the same nets, optimizers and per-rank state, bit for bit."""
    for name, net in a["nets"].items():
        for key, tensor in net.items():
            assert torch.equal(tensor, b["nets"][name][key]), (name, key)
    for name, optimizer in a["optimizers"].items():
        assert optimizer["param_groups"] == b["optimizers"][name]["param_groups"]  # the schedule's rates too
        for index, moments in optimizer["state"].items():
            for key, tensor in moments.items():
                assert torch.equal(tensor, b["optimizers"][name]["state"][index][key]), (name, index, key)
    assert len(a["ranks"]) == len(b["ranks"])
    for mine, theirs in zip(a["ranks"], b["ranks"]):  # CycleGAN's image pools, per rank
        for domain, pool in mine.get("pools", {}).items():
            assert pool["count"] == theirs["pools"][domain]["count"]
            assert torch.equal(pool["images"], theirs["pools"][domain]["images"]), domain
