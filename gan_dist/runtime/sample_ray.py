"""The Ray side of `gan-dist sample --format parquet`: actors that each load the generator once and write the blocks
handed to them. The blocks are spread over the actors up front; the driver collects them as they finish."""

from __future__ import annotations

import os
from collections.abc import Iterator

import ray
import torch

from gan_dist import storage
from gan_dist.errors import UserError
from gan_dist.runtime.ray_backend import start_ray
from gan_dist.sample import Generator, load_generator
from gan_dist.synthetic import Export, Written, write_block


class BlockWriter:
    """One worker: its generator, loaded on the first block (a load that fails is then a task error with its
    one-line message, not a dead actor)."""

    def __init__(self, export: Export, gpu: bool):
        self.export, self.device = export, torch.device("cuda" if gpu else "cpu")
        self.generator: Generator | None = None

    def write(self, block: int) -> Written:
        if self.generator is None:
            check_visible(self.export)
            self.generator = load_generator(self.export.checkpoint, self.device, self.export.raw)
        return write_block(self.generator, self.export, block, self.device)


def check_visible(export: Export) -> None:
    """A local checkpoint or --out that this worker's node does not have: a cluster needs shared storage."""
    where = f"the worker on {ray.util.get_node_ip_address()}"
    for flag, uri in (("CKPT", export.checkpoint), ("--out", export.out)):
        if not storage.is_remote(uri) and not os.path.isdir(uri):
            raise UserError(f"{flag} {uri} is a local folder that {where} cannot see; on a cluster use object "
                            f"storage (s3://...) or a filesystem every node mounts")


def write_blocks(export: Export, num_workers: int, gpu: bool, address: str | None) -> Iterator[Written]:
    """Every block of `export`, written by up to `num_workers` actors; yielded as each finishes."""
    start_ray(address, num_workers, gpu)
    if not storage.is_remote(export.out):
        os.makedirs(export.out, exist_ok=True)  # the actors check that they see it
    resources = {"num_gpus": 1} if gpu else {"num_cpus": 1}
    actor = ray.remote(BlockWriter).options(**resources)
    actors = [actor.remote(export, gpu) for _ in range(min(num_workers, export.blocks))]
    pending = [actors[block % len(actors)].write.remote(block) for block in range(export.blocks)]
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield _result(done[0])
    finally:
        for each in actors:
            ray.kill(each)


def _result(ref: ray.ObjectRef) -> Written:
    """A block's result; a worker's UserError or storage error as itself (one line), not a remote traceback."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, (UserError, OSError)):
            raise err.cause from None
        raise
