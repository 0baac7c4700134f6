"""Reading prepared shards: the manifest check, and the in-process reader the local backend uses."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
import torch

from gan_dist.data.shards import MANIFEST_NAME, Manifest, decode_images
from gan_dist.errors import UserError
from gan_dist.runtime import storage


def read_manifest(data_uri: str) -> Manifest:
    uri = storage.join(data_uri, MANIFEST_NAME)
    try:
        text = storage.read_bytes(uri).decode()
    except FileNotFoundError:
        raise UserError(f"no prepared dataset at {data_uri} (missing {MANIFEST_NAME}); run `gan-dist prepare` first") from None
    except OSError as exc:
        raise UserError(f"cannot read {uri}: {exc}") from None
    return Manifest.from_json(text, uri)


def shard_uris(data_uri: str, manifest: Manifest) -> list[str]:
    return [storage.join(data_uri, name) for name in manifest.shards]


def load_images(data_uri: str, manifest: Manifest) -> np.ndarray:
    """Every image of the dataset as one uint8 N×H×W×C array."""
    parts = []
    for uri in shard_uris(data_uri, manifest):
        fs, path = storage.resolve(uri)
        try:
            table = pq.read_table(path, columns=["image"], filesystem=fs)
        except OSError as exc:
            raise UserError(f"cannot read shard {uri}: {exc}") from None
        parts.append(decode_images(table.column("image"), manifest))
    images = np.concatenate(parts) if parts else np.empty((0,), np.uint8)
    if len(images) != manifest.count:
        raise UserError(f"{data_uri}: shards hold {len(images)} images but the manifest says {manifest.count}; re-run prepare")
    return images


@dataclass
class DataPosition:
    """Where the reader is: resuming from it continues with the next batch of the same epoch order."""

    epoch: int = 0
    batch: int = 0


class InMemoryReader:
    """The dataset held as one uint8 tensor; each epoch a seeded permutation, split disjointly across ranks."""

    def __init__(self, images: np.ndarray, batch_size: int, rank: int, world_size: int, seed: int, shuffle: bool,
                 device: torch.device | str = "cpu"):
        # On a GPU the whole set lives on the device and batches are gathered there: no host work per step.
        self.images = torch.from_numpy(images).to(device)
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.batches_per_epoch = len(images) // (batch_size * world_size)
        if self.batches_per_epoch == 0:
            raise UserError(
                f"dataset of {len(images)} images is smaller than one global batch "
                f"({batch_size} x {world_size} workers); lower --batch-size"
            )

    def _epoch_rows(self, epoch: int) -> torch.Tensor:
        n = len(self.images)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        else:
            order = torch.arange(n)
        # Rank r takes every world_size-th row: disjoint across ranks, equal counts.
        return order[self.rank :: self.world_size]

    def batches(self, start: DataPosition) -> Iterator[tuple[torch.Tensor, DataPosition]]:
        """Yields (uint8 batch B×H×W×C, position after it) forever, from `start`."""
        epoch, batch = start.epoch, start.batch
        while True:
            rows = self._epoch_rows(epoch)
            while batch < self.batches_per_epoch:
                index = rows[batch * self.batch_size : (batch + 1) * self.batch_size].to(self.images.device)
                batch += 1
                yield self.images[index], DataPosition(epoch, batch)
            epoch, batch = epoch + 1, 0
