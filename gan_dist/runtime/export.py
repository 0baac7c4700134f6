"""The driver side of `gan-dist sample`: who draws the images, this process or Ray actors (as launch.train
dispatches training). PNGs are written by this process alone; a dataset (--format parquet) by either."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from gan_dist import synthetic
from gan_dist.data.shards import Manifest
from gan_dist.errors import UserError


@dataclass(frozen=True)
class Workers:
    """Who writes the blocks: this process (local), or Ray actors, one GPU or one CPU each."""

    backend: str = "auto"  # auto: ray when num_workers > 1 or an address is given, else local
    num_workers: int = 1
    gpu: bool = False
    address: str | None = None

    @property
    def resolved(self) -> str:
        if self.backend != "auto":
            return self.backend
        return "ray" if self.num_workers > 1 or self.address else "local"


def check_workers(workers: Workers) -> None:
    """Workers that cannot run: several in one process, or GPUs this machine (or a local Ray) does not have."""
    if workers.resolved == "local":
        if workers.num_workers > 1:
            raise UserError("the local backend runs one process; use --backend ray for --num-workers > 1")
        if workers.gpu and not torch.cuda.is_available():
            raise UserError("--gpu was given but torch sees no CUDA device; drop --gpu to sample on the CPU")
        return
    from gan_dist.runtime.ray_backend import check_ray  # Ray is imported only when it is used

    check_ray(workers.address, workers.num_workers, workers.gpu)


def export_dataset(checkpoint_uri: str, out: str, num: int, workers: Workers = Workers(),
                   **options: Any) -> Manifest:
    """synthetic.export_dataset with its blocks written by `workers`: this process (on its GPU with `gpu`), or
    Ray actors that each load the generator (the driver's copy, on the CPU, only describes the dataset)."""
    check_workers(workers)
    if workers.resolved == "ray":
        from gan_dist.runtime.sample_ray import write_blocks

        writer = partial(write_blocks, num_workers=workers.num_workers, gpu=workers.gpu, address=workers.address)
        return synthetic.export_dataset(checkpoint_uri, out, num, writer=writer, **options)
    return synthetic.export_dataset(checkpoint_uri, out, num, device="cuda" if workers.gpu else "cpu", **options)
