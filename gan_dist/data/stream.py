"""The streaming reader, for datasets too large to keep on the device: Parquet row groups are read and decoded in
DataLoader worker processes into fixed-shape uint8 batches; the training process only pins, copies and steps.

Order. The units of work are the row groups of all shards. Each epoch they are put in a seeded order (file order
without shuffle); rank r takes units r::world_size and its loader worker w takes units w::workers of those. A
worker reads its units in turn, permutes each unit's rows (seeded by seed, epoch and unit), and cuts the stream of
rows into batches, carrying the rest of a unit into the next batch; it drops only its final partial batch. The
DataLoader hands the workers' batches over in strict rotation (worker 0, 1, ..., skipping workers that have
finished), so an epoch's batch sequence is a function of (seed, epoch, rank, world_size, workers) alone. Every
rank's epoch is cut to the same number of batches (the smallest over the ranks, known from the row counts in the
shard footers), so one DataPosition means the same place on every rank.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from gan_dist import seeds, storage
from gan_dist.data.prefetch import to_device_ahead
from gan_dist.data.reader import Batch, DataPosition, count_error, shard_error, shard_uris
from gan_dist.data.shards import Manifest, decode_rows, empty_rows
from gan_dist.errors import UserError

FOOTER_THREADS = 16  # shard footers are read once, at construction; on s3:// each is a round trip


@dataclass(frozen=True)
class Unit:
    """One row group of one shard: what a loader worker reads at a time."""

    uri: str
    group: int
    rows: int


@dataclass(frozen=True)
class WorkerTask:
    """What one loader worker does in one epoch: read `units` (indexes into the unit list) in turn, skip the first
    `skip_rows` rows of that stream, then hand over `batches` batches."""

    units: tuple[int, ...]
    skip_rows: int
    batches: int


class _Failure:
    """Sent by a worker in place of a batch: the main process raises it as a one-line UserError (an exception
    raised in the worker would arrive wrapped in a multi-line traceback)."""

    def __init__(self, message: str):
        self.message = message


def _row_counts(uri: str) -> list[int]:
    fs, path = storage.resolve(uri)
    try:
        with fs.open_input_file(path) as file:
            meta = pq.ParquetFile(file).metadata
            return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    except (OSError, pa.ArrowException) as exc:
        raise shard_error(uri, exc) from None


def read_units(data_uri: str, manifest: Manifest) -> list[Unit]:
    """Every non-empty row group of the dataset, in file order, from the shard footers."""
    uris = shard_uris(data_uri, manifest)
    with ThreadPoolExecutor(max(1, min(FOOTER_THREADS, len(uris)))) as pool:
        counts = list(pool.map(_row_counts, uris))
    units = [Unit(uri, group, rows) for uri, rows_per_group in zip(uris, counts)
             for group, rows in enumerate(rows_per_group) if rows]
    total = sum(unit.rows for unit in units)
    if total != manifest.count:
        raise count_error(data_uri, total, manifest)
    return units


def read_unit(unit: Unit, manifest: Manifest) -> dict[str, np.ndarray]:
    """One row group -> the manifest's columns (through the project's one decode function)."""
    fs, path = storage.resolve(unit.uri)
    try:
        with fs.open_input_file(path) as file:
            table = pq.ParquetFile(file).read_row_group(unit.group, columns=list(manifest.columns))
        return decode_rows(table, manifest)
    except (OSError, pa.ArrowException, UserError) as exc:
        raise shard_error(unit.uri, exc) from None


def round_robin_taken(counts: list[int], k: int) -> tuple[list[int], int]:
    """The DataLoader's in-order rotation over workers that hold counts[w] batches: how many of each worker's
    batches are among the first k handed over, and which worker hands over the one after them."""
    taken, left, done = [0] * len(counts), k, 0  # done: full rounds so far
    while left > 0:
        active = [w for w, n in enumerate(counts) if n > done]
        if not active:
            break
        rounds = min(min(counts[w] for w in active) - done, left // len(active))
        if rounds == 0:  # a partial round: the first `left` active workers hand over one more each
            for w in active[:left]:
                taken[w] += 1
            return taken, active[left]
        for w in active:
            taken[w] += rounds
        done, left = done + rounds, left - rounds * len(active)
    return taken, 0


class EpochDataset(IterableDataset):
    """One epoch of one rank, as the DataLoader's workers see it; picklable (plain data only).

    DataLoader worker i plays logical worker (i + rotation) % len(tasks): a resume that starts in the middle of a
    rotation starts it at the right worker.
    """

    def __init__(self, units: list[Unit], manifest: Manifest, tasks: list[WorkerTask], rotation: int,
                 batch_size: int, seed: int, epoch: int, shuffle: bool):
        self.units, self.manifest, self.tasks, self.rotation = units, manifest, tasks, rotation
        self.batch_size, self.seed, self.epoch, self.shuffle = batch_size, seed, epoch, shuffle

    def __iter__(self) -> Iterator[Batch | _Failure]:
        info = get_worker_info()
        task = self.tasks[((info.id if info else 0) + self.rotation) % len(self.tasks)]
        if task.batches <= 0:
            return
        batch, filled, handed, skip = self._empty_batch(), 0, 0, task.skip_rows
        for index in task.units:
            unit = self.units[index]
            if skip >= unit.rows:  # a resume skips whole units without reading them
                skip -= unit.rows
                continue
            try:
                columns = read_unit(unit, self.manifest)
            except UserError as exc:
                yield _Failure(str(exc))
                return
            if len(columns["image"]) != unit.rows:
                yield _Failure(f"shard {unit.uri} changed while it was being read ({len(columns['image'])} rows in "
                               f"row group {unit.group}, {unit.rows} when training started); restart training")
                return
            order = None
            if self.shuffle:  # seeded by the unit, not by where it falls: the same rows under any split
                order = np.random.default_rng(seeds.derive(self.seed, "unit_rows", self.epoch, index)).permutation(
                    unit.rows)
            start, skip = skip, 0
            while start < unit.rows:
                take = min(self.batch_size - filled, unit.rows - start)
                # Straight into the batch: one copy per row, no per-row Python.
                for name, column in columns.items():
                    if order is None:
                        batch[name][filled : filled + take] = column[start : start + take]
                    else:
                        np.take(column, order[start : start + take], axis=0, out=batch[name][filled : filled + take],
                                mode="clip")
                filled, start = filled + take, start + take
                if filled == self.batch_size:
                    yield {name: torch.from_numpy(array) for name, array in batch.items()}
                    handed += 1
                    if handed == task.batches:
                        return
                    batch, filled = self._empty_batch(), 0

    def _empty_batch(self) -> dict[str, np.ndarray]:
        return empty_rows(self.manifest, self.batch_size)


class StreamReader:
    """The dataset streamed from its shards, batches built in loader worker processes. Same interface as
    `InMemoryReader`: `batches(start)` yields (batch on the device, position after it) forever."""

    def __init__(self, data_uri: str, manifest: Manifest, batch_size: int, rank: int, world_size: int, seed: int,
                 shuffle: bool, device: torch.device | str = "cpu", workers: int = 2, prefetch: int = 2):
        if batch_size < 1 or workers < 0 or prefetch < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad StreamReader arguments: batch_size={batch_size} workers={workers} "
                             f"prefetch={prefetch} rank={rank} world_size={world_size}")
        self.data_uri, self.manifest, self.batch_size = data_uri, manifest, batch_size
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.device = torch.device(device)
        self.workers, self.prefetch = workers, prefetch
        self.loader_workers = max(1, workers)  # workers=0 reads in this process, as one worker
        self.units = read_units(data_uri, manifest)
        self._check_every_rank_has_a_batch()

    # -- the plan of an epoch (cheap: row counts only) -------------------------------------------------------

    def _order(self, epoch: int) -> np.ndarray:
        if self.shuffle:
            return np.random.default_rng(seeds.derive(self.seed, "unit_order", epoch)).permutation(len(self.units))
        return np.arange(len(self.units))

    def _split(self, order: np.ndarray, rank: int) -> list[list[int]]:
        mine = order[rank :: self.world_size].tolist()
        return [mine[w :: self.loader_workers] for w in range(self.loader_workers)]

    def _worker_batches(self, split: list[list[int]]) -> list[int]:
        return [sum(self.units[i].rows for i in units) // self.batch_size for units in split]

    def batches_per_epoch(self, epoch: int) -> int:
        """The same on every rank: the smallest rank's count, so positions agree across ranks."""
        order = self._order(epoch)
        return min(sum(self._worker_batches(self._split(order, rank))) for rank in range(self.world_size))

    def _check_every_rank_has_a_batch(self) -> None:
        n_units = len(self.units)
        fix = "lower --batch-size, use fewer loader workers or fewer ranks, or prepare smaller shards (--shard-size)"
        if n_units < self.world_size:
            raise UserError(f"{self.data_uri} has {n_units} row groups for {self.world_size} ranks, so a rank would "
                            f"get none; use at most {n_units} ranks or prepare smaller shards (--shard-size)")
        if not self.shuffle:  # the order is fixed: check it exactly
            enough = self.batches_per_epoch(0) > 0
        else:  # any order may come: a worker's fewest rows are those of as many of the smallest units
            sizes = sorted(unit.rows for unit in self.units)

            def fewest_batches(rank: int) -> int:
                count = len(range(rank, n_units, self.world_size))
                return sum(sum(sizes[: len(range(w, count, self.loader_workers))]) // self.batch_size
                           for w in range(self.loader_workers))

            enough = all(fewest_batches(rank) > 0 for rank in range(self.world_size))
        if not enough:
            raise UserError(f"{self.data_uri}: {self.manifest.count} images in {n_units} row groups over "
                            f"{self.world_size} ranks x {self.loader_workers} loader workers can leave a rank without "
                            f"one full batch of {self.batch_size} (each loader worker fills its own); {fix}")

    def _epoch_dataset(self, epoch: int, skip: int) -> tuple[EpochDataset, int]:
        """This rank's epoch from batch `skip` on, and the epoch's length in batches."""
        order = self._order(epoch)
        length = self.batches_per_epoch(epoch)  # > 0: checked at construction
        split = self._split(order, self.rank)
        quota, _ = round_robin_taken(self._worker_batches(split), length)
        skipped, rotation = round_robin_taken(quota, min(skip, length))
        tasks = [WorkerTask(tuple(units), done * self.batch_size, n - done)
                 for units, n, done in zip(split, quota, skipped)]
        return EpochDataset(self.units, self.manifest, tasks, rotation, self.batch_size, self.seed, epoch,
                            self.shuffle), length

    # -- reading ------------------------------------------------------------------------------------------------

    def batches(self, start: DataPosition) -> Iterator[tuple[Batch, DataPosition]]:
        """Yields (batch on the device, position after it) forever, from `start`."""
        return to_device_ahead(self._host_batches(start), self.device)

    def _host_batches(self, start: DataPosition) -> Iterator[tuple[Batch, DataPosition]]:
        epoch, skip = start.epoch, start.batch
        while True:
            yield from self._epoch_batches(epoch, skip)
            epoch, skip = epoch + 1, 0

    def _epoch_batches(self, epoch: int, skip: int) -> Iterator[tuple[Batch, DataPosition]]:
        # A resume skips cheaply: the workers start at the skipped rows' unit without reading the units before it.
        dataset, length = self._epoch_dataset(epoch, skip)
        if skip >= length:
            return
        # Its own generator: the workers' base seed drawn from the global one would leave a resumed run's global RNG
        # a draw ahead of the uninterrupted run's (the workers' shuffles come from seeds.derive, not from torch).
        loader = DataLoader(dataset, batch_size=None, num_workers=self.workers, in_order=True,
                            generator=torch.Generator(), pin_memory=self.device.type == "cuda",
                            prefetch_factor=self.prefetch if self.workers else None)
        handed = iter(loader)
        try:
            for index in range(skip + 1, length + 1):
                item = next(handed, None)
                if isinstance(item, _Failure):
                    raise UserError(item.message)
                if item is None:
                    raise RuntimeError(f"stream reader: epoch {epoch} ended after {index - 1} of {length} batches")
                yield item, DataPosition(epoch, index)
        finally:
            # The only reference to the loader's iterator: dropping it stops its worker processes, here rather
            # than whenever a closed or abandoned generator is collected.
            del handed
