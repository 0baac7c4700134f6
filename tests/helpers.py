"""What the tests share besides fixtures: tiny data and configs, the exact-resume comparison, the console script,
loopback ports and the S3 client. Test modules import from here, never from conftest or from each other."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from gan_dist.config import Config, load_config

# ---- tiny data ----------------------------------------------------------------------------------------------------


def count_dataset_reads(monkeypatch) -> Counter:
    """Counts, from now on, each read of a dataset's manifest and each load of its rows, by (reader function,
    dataset URI), wherever gan_dist imported the reader functions."""
    from gan_dist.data import reader

    reads: Counter = Counter()
    for name in ("read_manifest", "load_columns"):
        original = getattr(reader, name)

        def counted(uri, *args, _original=original, _name=name, **kwargs):
            reads[_name, str(uri)] += 1
            return _original(uri, *args, **kwargs)

        for module in [m for m in sys.modules.values() if m.__name__.startswith("gan_dist")]:
            if getattr(module, name, None) is original:
                monkeypatch.setattr(module, name, counted)
    return reads



def numbered_images(n: int, resolution: int = 16, channels: int = 1) -> np.ndarray:
    """Random uint8 images whose first two bytes spell their row number, so a test can tell rows apart."""
    images = np.random.default_rng(0).integers(0, 256, (n, resolution, resolution, channels), dtype=np.uint8)
    flat = images.reshape(n, -1)
    flat[:, 0], flat[:, 1] = np.arange(n) % 256, np.arange(n) // 256
    return images


def row_ids(batch) -> list[int]:
    """The row numbers `numbered_images` wrote into a batch's images (a reader's batch, or its image tensor)."""
    images = batch["image"] if isinstance(batch, dict) else batch
    flat = np.asarray(images).reshape(len(images), -1).astype(np.int64)
    return (flat[:, 0] + 256 * flat[:, 1]).tolist()


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


# ---- tiny configs -------------------------------------------------------------------------------------------------

_TINY_SCHEDULE = {"train.steps": 6, "train.log_every": 2, "train.checkpoint_every": 3, "train.sample_every": 3,
                  "eval.features": "off"}  # tests of evaluation turn it on


def tiny_config(data: str, storage: str, **overrides) -> Config:
    """Small nets and batches: a step takes milliseconds on CPU."""
    base = {
        "data.path": data, "run.storage": storage, "run.name": "tiny",
        "model.z_dim": 8, "model.g_channels": 8, "model.d_channels": 8,
        "model.conditional": False,  # the default preset's auto would condition on tiny_data's classes
        "train.batch_size": 8, **_TINY_SCHEDULE,
    }
    base.update(overrides)
    return load_config(None, base)


_TINY_TRANSLATOR = {"run.name": "tiny", "model.g_channels": 4, "model.d_channels": 4, "model.blocks": 1,
                    "model.d_layers": 1, "train.batch_size": 4, **_TINY_SCHEDULE}


def tiny_translation_config(a: str, b: str, storage: str, kind: str = "cyclegan", **overrides) -> Config:
    """A translation preset at the smallest widths: a step takes milliseconds on CPU."""
    base = {"data.a": a, "data.b": b, "run.storage": storage, **_TINY_TRANSLATOR,
            **({"task.pool_size": 6} if kind == "cyclegan" else {"task.num_patches": 16})}
    base.update(overrides)
    return load_config(f"{kind}-digits", base)


def tiny_inpaint_config(data: str, storage: str, **overrides) -> Config:
    """The inpainting preset at the smallest widths: a step takes milliseconds on CPU."""
    base = {"data.path": data, "run.storage": storage, **_TINY_TRANSLATOR}
    base.update(overrides)
    return load_config("inpaint-digits", base)


# Every stabilizer a generation step can switch on at once.
EVERY_SWITCH = {"train.augment": "translation,cutout,color", "train.ada_target": 0.6, "train.ada_interval": 2,
                "train.r1_gamma": 1.0, "train.r1_every": 2, "train.lecam_weight": 0.1, "train.n_dis": 2}


def local_ctx(cfg: Config, run_dir):
    """The local backend's worker context over `cfg.data.path`, writing into `run_dir`: the loop in this process."""
    # imported here: conftest imports this module, and a test session should not need the whole loop to import
    from gan_dist.data.placement import Dataset
    from gan_dist.data.reader import read_manifest
    from gan_dist.runtime.local import LocalContext

    return LocalContext(cfg, {"train": Dataset(cfg.data.path, read_manifest(cfg.data.path))}, str(run_dir))


# ---- exact resume -------------------------------------------------------------------------------------------------


# What a resume test turns on, so that every part of the state has moved by the compared step: the linear LR
# decay, augmentation with ADA's p (moved at step 4, half an interval observed at 6), LeCam's running means.
RESUME_STABILIZERS = {"train.lr_decay_start": 0.3, "train.augment": "translation,cutout", "train.ada_target": 0.2,
                      "train.ada_interval": 4, "train.ada_kimg": 0.1, "train.lecam_weight": 0.1}


def straight_and_resumed(config: Callable[..., Config], storage: Path) -> tuple[dict, dict]:
    """A tiny run's 6 steps straight, and 6 steps of a run started from the straight run's step-3 checkpoint, both
    with RESUME_STABILIZERS (`config(**overrides)` builds the task's tiny config): their step-6 states."""
    from gan_dist import checkpoint
    from gan_dist.runtime.launch import train

    train(config(**RESUME_STABILIZERS, **{"run.name": "straight"}))
    result = train(config(**RESUME_STABILIZERS, **{
        "run.name": "halves", "run.resume_from": str(storage / "straight" / "checkpoint_000000003")}))
    assert result.resumed_from == 3
    return tuple(checkpoint.load_state(str(storage / run / "checkpoint_000000006")) for run in ("straight", "halves"))


def assert_same_state(a: Any, b: Any, path: str = "state") -> None:
    """Two task states (a checkpoint's state.pt) are the same bit for bit: every tensor (nets, optimizers, EMA, image
    pools, adversary state such as ADA's p and LeCam's means, RNG states) and every other value (step, data
    positions, the optimizers' rates), recursively. Fails naming the key path of the first difference, and when a
    dict's keys or a list's length differ, so state that one run has and the other lacks is caught too."""
    if isinstance(a, dict) and isinstance(b, dict):
        only_a, only_b = a.keys() - b.keys(), b.keys() - a.keys()
        assert not only_a and not only_b, f"{path}: keys only in the first {sorted(only_a, key=repr)}, " \
                                          f"only in the second {sorted(only_b, key=repr)}"
        for key in a:
            assert_same_state(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        assert len(a) == len(b), f"{path}: {len(a)} items against {len(b)}"
        for index, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{path}/{index}")
    elif isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), f"{path}: {a.dtype} {tuple(a.shape)} against " \
                                                         f"{b.dtype} {tuple(b.shape)}"
        differ = (_bits(a) != _bits(b)).any(dim=1).nonzero().flatten()
        if len(differ):
            first = int(differ[0])
            raise AssertionError(f"{path}: {len(differ)} of {a.numel()} elements differ, the first at flat index "
                                 f"{first}: {a.flatten()[first].item()!r} against {b.flatten()[first].item()!r}")
    else:
        assert type(a) is type(b) and a == b, f"{path}: {a!r} against {b!r}"


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """One row of bytes per element: equal NaNs are equal and -0.0 is not 0.0, as a bit-exact resume means."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).reshape(flat.numel(), -1)


# ---- the console script -------------------------------------------------------------------------------------------

# The script installed beside this interpreter (the venv need not be on PATH).
_BESIDE = Path(sys.executable).parent / "gan-dist"
GAN_DIST = str(_BESIDE) if _BESIDE.exists() else shutil.which("gan-dist")


def run(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    """`gan-dist ARGS` as a user runs it: a real process, its exit code and output (tests that call it are slow)."""
    assert GAN_DIST, "the gan-dist console script is not installed (pip install -e .)"
    return subprocess.run([GAN_DIST, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


# ---- loopback services --------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process, seconds: float) -> bool:
    """Whether `process` came to listen on 127.0.0.1:`port` within `seconds` (False once it has exited)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


@dataclass
class S3Server:
    endpoint: str
    pid: int  # SIGSTOP/SIGCONT it to take the endpoint down and bring it back with its objects intact


def s3_client():
    """An independent client (boto3) to check what the code under test wrote."""
    import boto3

    return boto3.client("s3")
