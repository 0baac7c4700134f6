"""`gan-dist prepare`: a source -> Parquet shards + manifest, encoded in parallel, bad inputs counted and skipped.
The shards are written through data/writer.py, the write half of the shard contract.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from gan_dist import storage
from gan_dist.data.images import FILTERS, ImageSpec, Skip, encode, to_square_array
from gan_dist.data.shards import FORMATS, Manifest
from gan_dist.data.sources import ArraySource, PairedArrays, PairedSource, Source, open_source
from gan_dist.data.writer import ShardWriter, check_dataset_out
from gan_dist.errors import UserError
from gan_dist.progress import Progress


@dataclass(frozen=True)
class PrepareOptions:
    spec: ImageSpec
    fmt: str = "raw"
    shard_size: int = 2048
    workers: int = 1
    limit: int | None = None
    shuffle_seed: int | None = 0  # None (or -1, as on the command line) keeps the source order
    skip: int = 0  # images of that order left out before writing: with `limit` of the same seed, disjoint splits

    def __post_init__(self) -> None:
        # Checked here, not only by the CLI's parser, so every caller gets a one-line error, not numpy's or PIL's.
        if self.fmt not in FORMATS:
            raise UserError(f"unknown --format '{self.fmt}'; use one of {', '.join(FORMATS)}")
        if self.spec.channels not in (1, 3, None):
            raise UserError(f"--channels must be 1 or 3, got {self.spec.channels}")
        if self.spec.crop not in ("center", "none"):
            raise UserError(f"unknown --crop '{self.spec.crop}'; use center or none")
        if self.spec.resize_filter not in FILTERS:
            raise UserError(f"unknown --resize-filter '{self.spec.resize_filter}'; use one of {', '.join(FILTERS)}")
        for flag, value, low in (("--resolution", self.spec.resolution, 1), ("--min-size", self.spec.min_size, 0),
                                 ("--shard-size", self.shard_size, 1), ("--workers", self.workers, 1),
                                 ("--limit", 1 if self.limit is None else self.limit, 1), ("--skip", self.skip, 0)):
            if value < low:
                raise UserError(f"{flag} must be at least {low}, got {value}")
        if self.shuffle_seed is not None and self.shuffle_seed < -1:
            raise UserError(f"--shuffle-seed must be a seed >= 0, or -1 to keep the source order; "
                            f"got {self.shuffle_seed}")
        if self.shuffle_seed == -1:
            object.__setattr__(self, "shuffle_seed", None)  # frozen dataclass: normalise once, here


@dataclass
class SkipReport:
    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def add(self, what: str, reason: str) -> None:
        self.counts[reason] += 1
        if len(self.examples) < 5:
            self.examples.append(f"{what} ({reason})")

    def summary(self, total: int) -> str:
        if not self.counts:
            return f"skipped 0 of {total} inputs"
        return f"skipped {sum(self.counts.values())} of {total} inputs: {self.reasons()}"

    def reasons(self, examples: int = 5) -> str:
        by_reason = ", ".join(f"{n} {reason}" for reason, n in self.counts.most_common())
        return f"{by_reason}; first: {'; '.join(self.examples[:examples])}"


# The source and options live in module globals in the workers: forked processes inherit them instead of
# unpickling a possibly large source per task.
_SOURCE: Source | None = None
_OPTIONS: PrepareOptions | None = None
_INPUT_SPEC: ImageSpec | None = None  # a paired source's inputs' (the targets' resolution, their own channels)

Encoded = tuple[bytes, bytes | None]  # a row's image, and its input where the source is paired


def _encode_one(index: int) -> tuple[int, Encoded | None, str | None]:
    try:
        array = to_square_array(_SOURCE.load(index), _OPTIONS.spec)
        paired = None
        if _INPUT_SPEC is not None:
            paired = encode(to_square_array(_SOURCE.load_input(index, array), _INPUT_SPEC), _OPTIONS.fmt)
        return index, (encode(array, _OPTIONS.fmt), paired), None
    except Skip as skip:
        return index, None, str(skip)


ENCODE_SLICE = 512  # inputs handed to the workers at a time


def _encoded(pool: multiprocessing.pool.Pool | None,
             order: list[int]) -> Iterator[tuple[int, Encoded | None, str | None]]:
    """(index, encoded row or None, skip reason) in `order`, a slice at a time. Each slice's results are all
    collected before the caller sees them, so when --limit stops early no task is left in flight: tearing a pool
    down mid-imap (Pool.terminate) deadlocked now and then, on a worker killed while it held the task queue's lock.
    A --limit costs at most one slice of extra encoding."""
    for start in range(0, len(order), ENCODE_SLICE):
        part = order[start:start + ENCODE_SLICE]
        yield from pool.map(_encode_one, part, chunksize=16) if pool else map(_encode_one, part)


def input_spec(source: Source, spec: ImageSpec) -> ImageSpec | None:
    """How a paired source's inputs are prepared: as the targets, in one channel where no input has colour."""
    if not isinstance(source, PairedSource):
        return None
    return replace(spec, channels=1 if source.input_grayscale() else 3)


def write_dataset(source: Source, out: str, options: PrepareOptions, progress: bool = True) -> tuple[Manifest, SkipReport]:
    global _SOURCE, _OPTIONS, _INPUT_SPEC
    inputs = input_spec(source, options.spec)
    writer = ShardWriter(out, options.spec, options.fmt, options.shard_size, inputs.channels if inputs else 0)
    order = np.arange(len(source))
    if options.shuffle_seed is not None:  # mix classes across shards, so any prefix of the shards is a fair sample
        order = np.random.default_rng(options.shuffle_seed).permutation(order)
    report, bar = SkipReport(), Progress(len(order)) if progress else None
    _SOURCE, _OPTIONS, _INPUT_SPEC = source, options, inputs
    pool = multiprocessing.get_context("fork").Pool(options.workers) if options.workers > 1 else None
    done = good = 0  # inputs read; images among them, --skip's included
    limited = False
    try:
        for index, row, reason in _encoded(pool, order.tolist()):
            done += 1
            if row is None:
                # A bad input among those --skip leaves out is the other split's: the reports add up to the whole's.
                if good >= options.skip:
                    report.add(source.describe(index), reason)
            else:
                good += 1
                if good > options.skip:
                    writer.add(row[0], source.label(index), row[1])
                    if options.limit and good - options.skip >= options.limit:
                        limited = True
                        break
            if bar:
                bar.update(done)
    except BaseException:
        if pool:  # an error or Ctrl-C: nothing more is wanted from the workers
            pool.terminate()
        raise
    finally:
        _SOURCE = _OPTIONS = _INPUT_SPEC = None
    if pool:
        pool.close()
        pool.join()
    if options.skip and good <= options.skip:
        raise UserError(f"--skip {options.skip} leaves no images: the source has {good} usable of {done} inputs; "
                        f"lower --skip")
    if bar:
        note = (f", first {options.skip} left out by --skip" if options.skip else "") + (
            f", --limit {options.limit} reached" if limited else "")
        bar.update(done, final=True, note=note, total=done if limited else None)
    if writer.rows == 0 and report.counts:  # the CLI prints the skip summary only after success, so the reasons go here
        hint = "; lower --min-size to keep small images" if "too small" in report.counts else ""
        raise UserError(f"every input was skipped, nothing was written: {report.reasons(examples=1)}{hint}")
    return writer.finish(source.class_names, dict(report.counts)), report


def prepare(source: str, out: str, options: PrepareOptions, root: str | None = None, download: bool = False,
            progress: bool = True, inputs: str | None = None) -> tuple[Manifest, SkipReport]:
    """SOURCE -> a dataset in OUT; with `inputs`, a paired one (SOURCE the targets' folder, `inputs` the inputs')."""
    with storage.user_errors(out, "write the dataset to"):
        check_dataset_out(out, "OUT")  # a bad OUT fails before any reading
        opened = open_source(source, root, download, inputs)
        if options.spec.channels is None:  # auto: one channel where no image has colour
            options = replace(options, spec=replace(options.spec, channels=1 if opened.grayscale() else 3))
        return write_dataset(opened, out, options, progress)


def write_shards(images: np.ndarray, labels: np.ndarray | None, out: str, *, shard_size: int = 512,
                 class_names: list[str] | None = None, inputs: np.ndarray | None = None) -> Manifest:
    """Arrays already at their final size (square uint8 N×R×R×C) -> raw shards, in order, nothing skipped; with
    `inputs` (N×R×R×C'), a paired dataset."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != images.shape[2]:
        raise ValueError(f"expected uint8 images N×R×R×C, got {images.dtype} {images.shape}")
    spec = ImageSpec(resolution=images.shape[1], channels=images.shape[3])
    options = PrepareOptions(spec=spec, shard_size=shard_size, shuffle_seed=None)
    names = list(class_names or [])
    source = ArraySource(images, labels, names, "arrays") if inputs is None else \
        PairedArrays(images, inputs, labels, names, "arrays")
    manifest, _ = write_dataset(source, out, options, progress=False)
    return manifest
