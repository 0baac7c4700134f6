"""Shared fixtures: a session cache for the embedded digits, tiny synthetic shards, one Ray cluster per session."""

from __future__ import annotations

import os

import numpy as np
import pytest

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


def row_ids(batch_u8) -> list[int]:
    flat = np.asarray(batch_u8).reshape(len(batch_u8), -1).astype(np.int64)
    return (flat[:, 0] + 256 * flat[:, 1]).tolist()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
    """256 numbered 16x16 grayscale images in 4 shards."""
    out = tmp_path_factory.mktemp("tiny") / "shards"
    write_shards(numbered_images(256), np.arange(256, dtype=np.int32) % 10, str(out), shard_size=64)
    return str(out)


def tiny_config(data: str, storage: str, **overrides):
    """Small nets and batches: a step takes milliseconds on CPU."""
    base = {
        "data.path": data, "run.storage": storage, "run.name": "tiny",
        "model.z_dim": 8, "model.g_channels": 8, "model.d_channels": 8,
        "train.batch_size": 8, "train.steps": 6, "train.log_every": 2, "train.checkpoint_every": 3,
        "train.sample_every": 3,
    }
    base.update(overrides)
    return load_config(None, base)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole session: starting one costs 10-20 s on 2 cores. Four logical CPUs, so two
    one-CPU workers leave room for the Ray Data read tasks."""
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=True)
    yield ray
    ray.shutdown()
