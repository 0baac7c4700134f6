"""The local backend: the loop in this process, no Ray imported. Ray Train's own local mode neither persists
checkpoints nor resumes, so this backend writes and finds checkpoints itself, in the Ray backend's layout and on
the same storage (a local path or s3://)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from gan_dist import checkpoint
from gan_dist.config import Config
from gan_dist.data import placement
from gan_dist.data.placement import Dataset, Positions
from gan_dist.data.reader import Batch
from gan_dist.errors import UserError
from gan_dist.train.loop import LoopResult


class LocalContext:
    rank = 0
    world_size = 1

    def __init__(self, cfg: Config, datasets: dict[str, Dataset], run_uri: str):
        self.cfg, self.datasets, self.run_uri = cfg, datasets, run_uri
        self.device = torch.device("cuda" if cfg.run.gpu else "cpu")
        self.placements = {name: placement.choose(cfg.data, data.manifest, 1, self.device, name, len(datasets))
                           for name, data in datasets.items()}
        self.readers = {name: placement.open_reader(cfg, data.uri, data.manifest, 0, 1, self.device,
                                                    self.placements[name].resident)
                        for name, data in datasets.items()}

    def batches(self, names: tuple[str, ...], start: Positions) -> Iterator[tuple[dict[str, Batch], Positions]]:
        return placement.read_together(self.readers, names, start)

    def latest_checkpoint(self) -> str | None:
        return checkpoint.latest_complete(self.run_uri)

    def save_checkpoint(self, step: int, state: dict[str, Any] | None, meta: dict[str, Any]) -> None:
        checkpoint.publish(self.run_uri, step, state, meta)

    def off_path_evaluations(self, cfg: Config) -> None:
        """None: evaluation runs inline here (eval.where=ray is refused)."""
        check_evaluation(cfg)


def check_local(cfg: Config) -> None:
    """What the local backend cannot do, refused before any work."""
    if cfg.run.gpu and not torch.cuda.is_available():
        raise UserError("--gpu was given but torch sees no CUDA device; drop --gpu to train on the CPU")
    check_evaluation(cfg)


def check_evaluation(cfg: Config) -> None:
    if cfg.eval.where == "ray":
        raise UserError("eval.where=ray evaluates in a Ray actor and the local backend runs no Ray; set eval.where="
                        "inline (or auto), or train with --backend ray")


def run_local(loop: Callable, cfg: Config, datasets: dict[str, Dataset], run_uri: str) -> LoopResult:
    """The loop in this process, once `check_local` has passed."""
    return loop(LocalContext(cfg, datasets, run_uri), cfg)
