"""The Ray backend's streamed data: the shards as a Ray Data dataset decoded in Ray Data tasks, and a worker's
training batches cut from its shard of it. Imported only where Ray runs."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import ray
import torch
from ray.data import DataIterator
from ray.data.collate_fn import NumpyBatchCollateFn

from gan_dist import seeds, storage
from gan_dist.config import Config
from gan_dist.data.prefetch import to_device_ahead
from gan_dist.data.reader import Batch, DataPosition, shard_uris
from gan_dist.data.shards import Manifest, decode_rows

# Rows buffered per worker for the local shuffle; the file order is also shuffled per epoch.
SHUFFLE_BUFFER_ROWS = 4096
# Rows per Ray Data block decoded in its tasks, and per batch the worker fetches: Ray's cost is per batch handed
# over, so the worker takes ~this many rows at a time and slices training batches out of them.
STREAM_CHUNK_ROWS = 1024


def decode_block(batch: pa.Table, manifest: Manifest) -> dict[str, np.ndarray]:
    """Runs in Ray Data tasks, outside the training process: shard rows -> fixed-shape uint8 N×H×W×C + labels."""
    return decode_rows(batch, manifest)


class _BatchCollate(NumpyBatchCollateFn):
    def __call__(self, batch: dict[str, np.ndarray]) -> Batch:
        # Already decoded: no per-row work here. Ray may hand over read-only arrays (the labels); torch wants its own.
        return {name: torch.from_numpy(np.require(column, requirements="W")) for name, column in batch.items()}


def shard_dataset(cfg: Config, manifest: Manifest, data_uri: str) -> ray.data.Dataset:
    """The shards as a Ray Data dataset of decoded images and labels; the decoding runs in Ray Data tasks."""
    return ray.data.read_parquet(
        shard_uris(storage.absolute_uri(data_uri), manifest),
        # File order seeded, and reseeded on every execution (epoch) of the pipeline.
        shuffle=ray.data.FileShuffleConfig(seed=_ray_seed(cfg.train.seed, "ray_files")) if cfg.data.shuffle else None,
    ).select_columns(list(manifest.columns)).map_batches(decode_block, fn_kwargs={"manifest": manifest},
                                                batch_format="pyarrow", batch_size=STREAM_CHUNK_ROWS)


def _ray_seed(seed: int, purpose: str, *indexes: int) -> int:
    return seeds.derive(seed, purpose, *indexes) % 2**32  # Ray hands its seeds to numpy's legacy 32-bit RNG


def stream_batches(shard: DataIterator, cfg: Config, rank: int, world_size: int, device: torch.device,
                   start: DataPosition) -> Iterator[tuple[Batch, DataPosition]]:
    """Training batches from a Ray Data iterator, epoch after epoch, on `device`: pinned and copied ahead on a GPU.
    Ray Data does not replay an epoch's order, so a resume starts the next epoch rather than skipping into a
    different order of the interrupted one."""
    def host_batches() -> Iterator[tuple[Batch, DataPosition]]:
        epoch = start.epoch + (1 if start.batch else 0)
        share = cfg.step_share(rank, world_size)
        size = share.stop - share.start
        per_chunk = max(1, STREAM_CHUNK_ROWS // size)
        while True:
            seed = _ray_seed(cfg.train.seed, "ray_shuffle", rank, epoch)
            shuffle = {}
            if cfg.data.shuffle:
                shuffle = dict(local_shuffle_buffer_size=SHUFFLE_BUFFER_ROWS, local_shuffle_seed=seed)
            chunks = shard.iter_torch_batches(batch_size=size * per_chunk, collate_fn=_BatchCollate(), device="cpu",
                                              pin_memory=device.type == "cuda", prefetch_batches=2, **shuffle)
            index = 0
            for chunk in chunks:
                for offset in range(0, len(chunk["image"]) - size + 1, size):  # drop_last, per chunk
                    index += 1
                    batch = {name: column[offset : offset + size] for name, column in chunk.items()}
                    yield batch, DataPosition(epoch, index)
            epoch += 1

    return to_device_ahead(host_batches(), device)


class RayStreamReader:
    """A worker's shard of a Ray Data dataset, with the readers' `batches(start)`."""

    def __init__(self, shard: DataIterator, cfg: Config, rank: int, world_size: int, device: torch.device):
        self.shard, self.cfg, self.rank, self.world_size, self.device = shard, cfg, rank, world_size, device

    def batches(self, start: DataPosition) -> Iterator[tuple[Batch, DataPosition]]:
        return stream_batches(self.shard, self.cfg, self.rank, self.world_size, self.device, start)
