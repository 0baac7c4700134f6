"""The local backend: the loop in this process, no Ray imported. Ray Train's own local mode neither persists
checkpoints nor resumes, so this backend writes and finds checkpoints itself, in the Ray backend's layout."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from gan_dist import checkpoint
from gan_dist.config import Config
from gan_dist.data import placement
from gan_dist.data.reader import DataPosition, InMemoryReader, resident_reader
from gan_dist.data.stream import StreamReader
from gan_dist.data.shards import Manifest
from gan_dist.errors import UserError
from gan_dist import storage
from gan_dist.train.loop import LoopResult


class LocalContext:
    rank = 0
    world_size = 1

    def __init__(self, cfg: Config, manifest: Manifest, data_uri: str, run_uri: str):
        self.cfg, self.manifest, self.run_uri = cfg, manifest, run_uri
        self.device = torch.device("cuda" if cfg.run.gpu else "cpu")
        self.placement = placement.choose(cfg.data, manifest, 1, self.device)
        t = cfg.train
        self.reader: InMemoryReader | StreamReader
        if self.placement.resident:
            self.reader = resident_reader(data_uri, manifest, t.batch_size, 0, 1, t.seed, cfg.data.shuffle,
                                          self.device)
        else:
            self.reader = StreamReader(data_uri, manifest, t.batch_size, 0, 1, t.seed, cfg.data.shuffle, self.device,
                                       workers=cfg.data.stream_workers)

    def batches(self, start: DataPosition) -> Iterator[tuple[torch.Tensor, DataPosition]]:
        return self.reader.batches(start)

    def latest_checkpoint(self) -> str | None:
        return checkpoint.latest_complete(self.run_uri)

    def save_checkpoint(self, step: int, state: dict[str, Any] | None, meta: dict[str, Any]) -> None:
        checkpoint.publish_local(self.run_uri, step, state, meta)


def check_local(cfg: Config) -> None:
    """What the local backend cannot do, refused before any work."""
    if storage.is_remote(cfg.run.storage):
        raise UserError("the local backend writes checkpoints to a local --storage path; use --backend ray for s3://")
    if cfg.run.gpu and not torch.cuda.is_available():
        raise UserError("--gpu was given but torch sees no CUDA device; drop --gpu to train on the CPU")


def run_local(loop: Callable, cfg: Config, manifest: Manifest, data_uri: str, run_uri: str) -> LoopResult:
    """The loop in this process, once `check_local` has passed."""
    return loop(LocalContext(cfg, manifest, data_uri, run_uri), cfg)
