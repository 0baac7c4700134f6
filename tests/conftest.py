"""Fixtures and hooks only (shared helpers live in helpers.py): a session cache for the embedded digits, tiny
synthetic shards, a loopback S3 endpoint, and one Ray cluster started only for the tests that ask for it."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from gan_dist.data.prepare import write_shards
from helpers import S3Server, free_port, numbered_images, s3_client, wait_for_port

# Ray Train polls its workers every 2 s by default, which makes each checkpoint report take ~2 s on 2 cores;
# a hang in a collective becomes an error instead of a stuck suite.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_TRAIN_COLLECTIVE_TIMEOUT_S", "120")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_MODE", "disabled")


def pytest_collection_modifyitems(items):
    """A test that asks for the Ray cluster is a Ray test, marked or not: `-m "not ray"` never starts Ray."""
    for item in items:
        if "ray_cluster" in getattr(item, "fixturenames", ()) and item.get_closest_marker("ray") is None:
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session", autouse=True)
def gan_dist_cache(tmp_path_factory):
    """The embedded-digits cache, shared by the whole session (in-process and console-script tests)."""
    path = tmp_path_factory.mktemp("cache")
    os.environ["GAN_DIST_CACHE"] = str(path)
    return path


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


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    """One local Ray for the whole session, started by the first test that asks for it (those tests are marked
    `ray`): starting one costs 10-20 s on 2 cores. Four logical CPUs, so two one-CPU workers leave room for the Ray
    Data read tasks. The loopback S3 endpoint and its keys reach the workers through the job's runtime_env, as
    `gan-dist train` passes them."""
    import ray

    aws = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    # The dashboard serves the State API, which Ray Train's cleaner asks before it frees the workers of a run whose
    # controller was killed (a tune trial stopped by its scheduler).
    ray.init(num_cpus=4, include_dashboard=True, log_to_driver=True, runtime_env={"env_vars": aws})
    yield ray
    ray.shutdown()


_S3_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_REGION",
           "AWS_EC2_METADATA_DISABLED")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 endpoint on loopback (moto's server) that checks credentials: the first IAM calls are free and
    create the one user whose keys the session uses; every request after them must be signed with those keys."""
    import subprocess
    import sys

    import boto3

    port = free_port()
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


@pytest.fixture
def bucket(s3_server, request):
    name = "gan-dist-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    s3_client().create_bucket(Bucket=name)
    return name
