"""Which datasets a run reads, and where a worker's share of each lives: resident on its device, or streamed.
Chosen per run, logged, overridable. The one reader factory, and the named datasets read side by side."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from gan_dist.config import Config, DataConfig
from gan_dist.data.reader import Batch, DataPosition, load_columns, read_manifest, resident_reader, shared_order_reader
from gan_dist.data.shards import Manifest
from gan_dist.data.stream import StreamReader

Positions = dict[str, DataPosition]  # by dataset name


class Reader(Protocol):
    def batches(self, start: DataPosition) -> Iterator[tuple[Batch, DataPosition]]: ...


@dataclass
class _Rows:
    """What a Dataset has loaded: its first rows, and how many its first load reads."""

    prefetch: int = 0
    columns: dict[str, np.ndarray] | None = None


@dataclass(frozen=True)
class Dataset:
    """One prepared dataset of a run or a command, by the name its task reads it under ("train"; "a" and "b"):
    opened once (its manifest read once) and handed to whoever needs its images, which it loads once for all of
    them (a domain classifier trained on it, its real features, SWD, the near-copy search, the images judged)."""

    uri: str
    manifest: Manifest
    # Not state: a copy (pickled to a Ray worker, dataclasses.replace) starts without the rows and loads its own.
    _rows: _Rows = field(default_factory=_Rows, init=False, repr=False, compare=False)

    @classmethod
    def open(cls, uri: str) -> Dataset:
        return cls(uri, read_manifest(uri))

    def __getstate__(self) -> dict[str, object]:
        return {"uri": self.uri, "manifest": self.manifest}

    def __setstate__(self, state: dict[str, object]) -> None:
        for name, value in {**state, "_rows": _Rows()}.items():
            object.__setattr__(self, name, value)

    def plan(self, rows: int) -> None:
        """The first load reads at least the first `rows` rows: a command sizes it to the most any of its
        consumers asks for, so that one load serves them all."""
        self._rows.prefetch = max(self._rows.prefetch, min(rows, self.manifest.count))

    def columns(self, rows: int | None = None) -> dict[str, np.ndarray]:
        """The first `rows` rows (all when None, or when the dataset has fewer), from the one load: read again
        only for more rows than were planned."""
        rows = self.manifest.count if rows is None else min(rows, self.manifest.count)
        loaded = self._rows.columns
        if loaded is None or len(loaded["image"]) < rows:
            planned = self._rows.prefetch
            loaded = load_columns(self.uri, self.manifest, range(max(rows, planned)))
            # Kept: the planned rows only. A consumer of more (a classifier training on every row) gets them without
            # the dataset holding them for the rest of a training run.
            self._rows.columns = {name: column[:planned].copy() if planned < len(column) else column
                                  for name, column in loaded.items()} if planned else None
        return {name: column[:rows] for name, column in loaded.items()}

    def images(self, rows: int | None = None) -> np.ndarray:
        """The first `rows` images: prepare wrote the rows in shuffled order, so they are a random sample."""
        return self.columns(rows)["image"]


EMBEDDED = "embedded:"  # a configured dataset `embedded:NAME`: the built-in dataset NAME (e.g. embedded:digit-edges)


def built_in(configured: str | None) -> bool:
    """Whether a configured dataset is a built-in one (none configured, or embedded:NAME): each node prepares its
    own copy into its cache."""
    return configured is None or configured.startswith(EMBEDDED)


def dataset_uri(name: str, configured: str | None) -> str:
    """The dataset's URI: the configured one, or the embedded default for its role (translation's B domain: the
    typeset digits; everything else: the handwritten digits); an embedded one is prepared once into the cache."""
    from gan_dist.data.embedded import embedded

    if configured is None:
        configured = EMBEDDED + ("typeset-digits" if name == "b" else "digits")
    return embedded(configured.removeprefix(EMBEDDED)) if configured.startswith(EMBEDDED) else configured


def describe(name: str, data: Dataset) -> str:
    m = data.manifest
    return f"{'' if name == 'train' else f'{name}: '}{m.count} images {m.resolution}x{m.resolution}x{m.channels} " \
           f"from {data.uri}"


@dataclass(frozen=True)
class Placement:
    resident: bool
    reason: str  # one line for the console: what was chosen and why


def device_memory_bytes(device: torch.device) -> int:
    """Total memory of the device the batches are used on: the GPU's, or this host's RAM for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def choose(data: DataConfig, manifest: Manifest, world_size: int, device: torch.device, name: str = "train",
           shared_by: int = 1) -> Placement:
    """Resident when a worker's share fits; `shared_by` datasets of a run split the allowance between them."""
    share_bytes = -(-manifest.count // world_size) * manifest.row_bytes  # the largest worker share
    size = f"{_gb(share_bytes)} per worker"
    what = "data" if name == "train" else f"data {name}"
    if data.placement != "auto":
        return Placement(data.placement == "resident", f"{what}: {data.placement} on {device} ({size}; data.placement)")
    memory = device_memory_bytes(device) / shared_by
    limit = f"{data.resident_max_share:.0%} of {device}'s {_gb(memory)}" + (f" / {shared_by}" if shared_by > 1 else "")
    if share_bytes <= data.resident_max_share * memory:
        return Placement(True, f"{what}: resident on {device} ({size} <= {limit})")
    return Placement(False, f"{what}: stream ({size} > {limit}; raise data.resident_max_share to keep it resident)")


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GB" if n >= 2**28 else f"{n / 2**20:.1f} MB"


def open_reader(cfg: Config, data_uri: str, manifest: Manifest, rank: int, world_size: int, device: torch.device,
                resident: bool) -> Reader:
    """A worker's reader of one dataset: its rows resident on the device (an elastic run's workers: every row, in
    one order they split), or streamed by reader processes."""
    t = cfg.train
    if resident and cfg.run.elastic:
        return shared_order_reader(data_uri, manifest, cfg.step_images(world_size),
                                   cfg.step_share(rank, world_size), t.seed, cfg.data.shuffle, device)
    if resident:
        return resident_reader(data_uri, manifest, t.real_per_step, rank, world_size, t.seed, cfg.data.shuffle, device)
    return StreamReader(data_uri, manifest, t.real_per_step, rank, world_size, t.seed, cfg.data.shuffle, device,
                        workers=cfg.data.stream_workers)


def read_together(readers: Mapping[str, Reader], names: tuple[str, ...],
                  start: Positions) -> Iterator[tuple[dict[str, Batch], Positions]]:
    """One batch of each named dataset per step, each dataset going through its own epochs."""
    streams = {name: readers[name].batches(start.get(name, DataPosition())) for name in names}
    while True:
        items = {name: next(stream) for name, stream in streams.items()}
        yield {name: batch for name, (batch, _) in items.items()}, {name: at for name, (_, at) in items.items()}
