"""Reading prepared shards: the manifest check, and the in-process reader the local backend uses."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch

from gan_dist import seeds, storage
from gan_dist.data.shards import MANIFEST_NAME, PREPARE_AGAIN, Manifest, decode_rows, empty_rows
from gan_dist.errors import UserError


# What every reader yields: one tensor per column, "image" uint8 B×H×W×C and "label" int64 B (and a paired
# dataset's "input" uint8 B×H×W×C').
Batch = dict[str, torch.Tensor]


def read_manifest(data_uri: str) -> Manifest:
    uri = storage.join(data_uri, MANIFEST_NAME)
    with storage.user_errors(data_uri, "read the dataset at"):  # endpoint down, bad credentials: with the hint
        try:
            text = storage.read_bytes(uri)
        except (FileNotFoundError, NotADirectoryError):
            fs, path = storage.resolve(data_uri)
            if fs.get_file_info(path).type == pafs.FileType.File:  # a common slip: the manifest, or a source file
                if data_uri.rstrip("/").endswith(MANIFEST_NAME):
                    raise UserError(f"{data_uri} is the manifest file; pass the dataset folder that holds "
                                    f"{MANIFEST_NAME}, not the file") from None
                raise UserError(f"{data_uri} is a file; pass a prepared dataset folder (made by `gan-dist "
                                "prepare`)") from None
            raise UserError(f"no prepared dataset at {data_uri} (missing {MANIFEST_NAME}); "
                            f"run `gan-dist prepare` first") from None
    return Manifest.from_json(text, uri)


def shard_uris(data_uri: str, manifest: Manifest) -> list[str]:
    return [storage.join(data_uri, name) for name in manifest.shards]


def shard_error(uri: str, exc: Exception) -> UserError:
    """The one message for a shard that cannot be used (both readers): it names the shard and ends with the fix."""
    if isinstance(exc, UserError):  # decoded, but not what the manifest describes; the message ends with the fix
        return UserError(f"shard {uri}: {exc}")
    detail = " ".join(str(exc).split())[:300]
    return UserError(f"cannot read shard {uri}: {detail}; restore the file or {PREPARE_AGAIN}")


def count_error(data_uri: str, held: int, manifest: Manifest) -> UserError:
    return UserError(f"{data_uri}: shards hold {held} images but the manifest says {manifest.count}; {PREPARE_AGAIN}")


def worker_rows(count: int, rank: int, world_size: int) -> range:
    """The contiguous rows a worker keeps: equal shares (±1), disjoint, together the whole dataset. Prepare writes
    the images in shuffled order, so a contiguous share is a random sample of the dataset."""
    return range(count * rank // world_size, count * (rank + 1) // world_size)


def load_columns(data_uri: str, manifest: Manifest, rows: range | None = None) -> dict[str, np.ndarray]:
    """The dataset's rows (or just `rows` of them, reading only the shards that hold them) as a batch of arrays:
    "image" uint8 N×H×W×C and "label" int64 N (NO_LABEL for unlabeled rows), and a paired dataset's "input"."""
    rows = range(manifest.count) if rows is None else rows
    parts, first = [], 0
    for uri in shard_uris(data_uri, manifest):
        fs, path = storage.resolve(uri)
        try:
            shard = pq.ParquetFile(fs.open_input_file(path))
            stop = first + shard.metadata.num_rows
            if first < rows.stop and rows.start < stop:
                lo, hi = max(rows.start, first) - first, min(rows.stop, stop) - first
                parts.append(decode_rows(shard.read(columns=list(manifest.columns)).slice(lo, hi - lo), manifest))
        except (OSError, pa.ArrowException, UserError) as exc:
            raise shard_error(uri, exc) from None
        first = stop
    if first != manifest.count:
        raise count_error(data_uri, first, manifest)
    if not parts:
        return empty_rows(manifest, 0)
    return {name: np.concatenate([part[name] for part in parts]) for name in manifest.columns}


@dataclass
class DataPosition:
    """Where the reader is: resuming from it continues with the next batch of the same epoch order."""

    epoch: int = 0
    batch: int = 0


class InMemoryReader:
    """Rows held as uint8 (and label) tensors on a worker's device; each epoch one seeded permutation of them. On a
    GPU the batches are gathered there: no host work, no copies per step.

    A fixed-size run's worker holds its own share and orders it by its rank. An elastic run's workers each hold
    every row and follow one order (`rank` 0) of batches of all workers' rows together, each taking its share
    (`take`) of every batch: the rows a step trains on are the same whatever the number of workers, so a resize
    mid-epoch neither skips a row nor repeats one."""

    def __init__(self, columns: dict[str, np.ndarray], batch_size: int, seed: int, shuffle: bool,
                 device: torch.device | str = "cpu", rank: int = 0, take: slice = slice(None)):
        self.columns = {name: torch.from_numpy(array).to(device) for name, array in columns.items()}
        self.rows = len(columns["image"])
        self.batch_size, self.seed, self.shuffle, self.rank, self.take = batch_size, seed, shuffle, rank, take
        self.batches_per_epoch = self.rows // batch_size
        if self.batches_per_epoch == 0:
            raise UserError(f"a worker holds {self.rows} images, fewer than one batch of {batch_size}; "
                            f"lower --batch-size (or use fewer workers)")

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        device = self.columns["image"].device
        if not self.shuffle:
            return torch.arange(self.rows, device=device)
        generator = torch.Generator().manual_seed(seeds.derive(self.seed, "epoch_order", self.rank, epoch))
        return torch.randperm(self.rows, generator=generator).to(device)

    def batches(self, start: DataPosition) -> Iterator[tuple[Batch, DataPosition]]:
        """Yields (batch, position after it) forever, from `start`."""
        epoch, batch = start.epoch, start.batch
        while True:
            order = self._epoch_order(epoch)
            while batch < self.batches_per_epoch:
                index = order[batch * self.batch_size : (batch + 1) * self.batch_size][self.take]
                batch += 1
                yield {name: column[index] for name, column in self.columns.items()}, DataPosition(epoch, batch)
            epoch, batch = epoch + 1, 0


def resident_reader(data_uri: str, manifest: Manifest, batch_size: int, rank: int, world_size: int, seed: int,
                    shuffle: bool, device: torch.device | str) -> InMemoryReader:
    """A worker's contiguous share of the rows, read once and kept on its device."""
    columns = load_columns(data_uri, manifest, worker_rows(manifest.count, rank, world_size))
    return InMemoryReader(columns, batch_size, seed, shuffle, device, rank)


def shared_order_reader(data_uri: str, manifest: Manifest, step_rows: int, take: slice, seed: int, shuffle: bool,
                        device: torch.device | str) -> InMemoryReader:
    """An elastic run's worker: every row kept on its device, one order for all workers, `take` of each step's
    `step_rows` its share."""
    return InMemoryReader(load_columns(data_uri, manifest), step_rows, seed, shuffle, device, 0, take)
