"""`gan-dist prepare`: a source -> Parquet shards + manifest, encoded in parallel, bad inputs counted and skipped.

Shards are streamed out as they fill; the manifest is written last, so a half-written dataset is never taken for
a finished one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import multiprocessing
import multiprocessing.pool
import os
import posixpath
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gan_dist import storage
from gan_dist.data.images import FILTERS, ImageSpec, Skip, encode, to_square_array
from gan_dist.data.shards import FORMATS, MANIFEST_NAME, SHARD_SCHEMA, Manifest, content_hash
from gan_dist.data.sources import EMBEDDED_SOURCES, ArraySource, Source, open_source
from gan_dist.errors import UserError


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


# What an interrupted prepare leaves in OUT: shards, temporaries of storage.write_bytes, hidden probe files.
_SHARD_FILE = re.compile(r"shard-\d+\.parquet(\.tmp)?")
_LEFTOVER = re.compile(rf"{_SHARD_FILE.pattern}|_manifest\.json\.tmp|\..*")


class ShardWriter:
    """Collects encoded rows and writes a shard each `shard_size` rows; `finish` writes the manifest."""

    def __init__(self, out: str, spec: ImageSpec, fmt: str, shard_size: int):
        check_dataset_out(out, "OUT")
        self.out, self.spec, self.fmt, self.shard_size = out, spec, fmt, shard_size
        self.images: list[bytes] = []
        self.labels: list[int | None] = []
        self.names: list[str] = []
        self.digests: list[str] = []
        self.count = 0

    def add(self, data: bytes, label: int | None) -> None:
        self.images.append(data)
        self.labels.append(label)
        if len(self.images) == self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if not self.images:
            return
        name = shard_name(len(self.names))
        self.names.append(name)
        self.digests.append(write_shard(storage.join(self.out, name), self.images, self.labels))
        self.count += len(self.images)
        self.images, self.labels = [], []

    def finish(self, class_names: list[str], report: SkipReport) -> Manifest:
        self._flush()
        if self.count == 0 and not report.counts:
            raise UserError("the source holds no images; nothing was written")
        if self.count == 0:  # the CLI prints the skip summary only after success, so the reasons go here
            hint = "; lower --min-size to keep small images" if "too small" in report.counts else ""
            raise UserError(f"every input was skipped, nothing was written: {report.reasons(examples=1)}{hint}")
        manifest = Manifest(resolution=self.spec.resolution, channels=self.spec.channels, count=self.count,
                            shards=self.names, format=self.fmt, class_names=class_names,
                            content_hash=content_hash(self.digests), skipped=dict(report.counts))
        publish_manifest(self.out, manifest)
        return manifest


def check_dataset_out(out: str, flag: str) -> None:
    """Refuse, before any work, an OUT that cannot take a new dataset: unwritable, holding a finished dataset, or
    holding other files (shards among them would mix with them; a source folder given as OUT by mistake). What
    an interrupted earlier write left there is allowed: it is replaced."""
    storage.check_output_dir(out, flag)
    if storage.exists(storage.join(out, MANIFEST_NAME)):
        raise UserError(f"{out} already holds a prepared dataset; choose another {flag} or delete it first")
    others = [name for name in storage.list_dir(out) if not _LEFTOVER.fullmatch(name)]
    if others:
        raise UserError(f"{flag} {out} is not empty ({len(others)} other entries, e.g. {others[0]}); choose "
                        f"another {flag} or empty it first")


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def write_shard(uri: str, images: list[bytes], labels: list[int | None]) -> str:
    """One shard file of SHARD_SCHEMA rows; returns the SHA-256 of its bytes (for the manifest's content hash)."""
    table = pa.table([pa.array(images, pa.binary()), pa.array(labels, pa.int32())], schema=SHARD_SCHEMA)
    buffer = io.BytesIO()
    # Uncompressed: raw pixels barely compress and decompression would cost the reader CPU.
    pq.write_table(table, buffer, compression="none", row_group_size=len(images))
    storage.write_bytes(uri, buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def publish_manifest(out: str, manifest: Manifest) -> None:
    """Write the manifest, last of all files: until then OUT is no dataset. Then delete the shards an interrupted
    earlier write into OUT left beyond this one's (a crash here still leaves a sound dataset)."""
    storage.write_bytes(storage.join(out, MANIFEST_NAME), manifest.to_json().encode())
    fs, path = storage.resolve(out)
    for name in storage.list_dir(out):
        if _SHARD_FILE.fullmatch(name) and name not in manifest.shards:
            fs.delete_file(posixpath.join(path, name))


class Progress:
    """A progress line with rate and ETA on stderr: redrawn in place on a terminal, a line every 10 s otherwise."""

    def __init__(self, total: int, stream=sys.stderr, label: str = "prepare"):
        self.total, self.stream, self.tty, self.label = total, stream, stream.isatty(), label
        self.start = self.last = time.perf_counter()

    def update(self, done: int, final: bool = False, limit: int | None = None, skip: int = 0) -> None:
        """`limit`: the final line of a run stopped by --limit, where what was read is the whole job. `skip`: the
        final line of a run whose first images --skip left out (read, counted in `done`, not written)."""
        now = time.perf_counter()
        if not final and now - self.last < (0.5 if self.tty else 10.0):
            return
        self.last = now
        total = done if limit else self.total
        rate = done / max(now - self.start, 1e-9)
        eta = (total - done) / rate if rate > 0 else 0.0
        tail = f", first {skip} left out by --skip" if skip else ""
        tail += f", --limit {limit} reached" if limit else ("" if final else f" ETA {eta:,.0f}s")
        line = f"{self.label}: {done}/{total} ({100 * done / max(total, 1):.0f}%) {rate:,.0f}/s{tail}"
        self.stream.write(("\r" + line + ("\n" if final else "")) if self.tty else line + "\n")
        self.stream.flush()


# The source and options live in module globals in the workers: forked processes inherit them instead of
# unpickling a possibly large source per task.
_SOURCE: Source | None = None
_OPTIONS: PrepareOptions | None = None


def _encode_one(index: int) -> tuple[int, bytes | None, str | None]:
    try:
        array = to_square_array(_SOURCE.load(index), _OPTIONS.spec)
        return index, encode(array, _OPTIONS.fmt), None
    except Skip as skip:
        return index, None, str(skip)


ENCODE_SLICE = 512  # inputs handed to the workers at a time


def _encoded(pool: multiprocessing.pool.Pool | None,
             order: list[int]) -> Iterator[tuple[int, bytes | None, str | None]]:
    """(index, encoded image or None, skip reason) in `order`, a slice at a time. Each slice's results are all
    collected before the caller sees them, so when --limit stops early no task is left in flight: tearing a pool
    down mid-imap (Pool.terminate) deadlocked now and then, on a worker killed while it held the task queue's lock.
    A --limit costs at most one slice of extra encoding."""
    for start in range(0, len(order), ENCODE_SLICE):
        part = order[start:start + ENCODE_SLICE]
        yield from pool.map(_encode_one, part, chunksize=16) if pool else map(_encode_one, part)


def write_dataset(source: Source, out: str, options: PrepareOptions, progress: bool = True) -> tuple[Manifest, SkipReport]:
    return _write(source, ShardWriter(out, options.spec, options.fmt, options.shard_size), options, progress)


def _write(source: Source, writer: ShardWriter, options: PrepareOptions, progress: bool) -> tuple[Manifest, SkipReport]:
    global _SOURCE, _OPTIONS
    order = np.arange(len(source))
    if options.shuffle_seed is not None:  # mix classes across shards, so any prefix of the shards is a fair sample
        order = np.random.default_rng(options.shuffle_seed).permutation(order)
    report, bar = SkipReport(), Progress(len(order)) if progress else None
    _SOURCE, _OPTIONS = source, options
    pool = multiprocessing.get_context("fork").Pool(options.workers) if options.workers > 1 else None
    done = good = 0  # inputs read; images among them, --skip's included
    limited = False
    try:
        for index, data, reason in _encoded(pool, order.tolist()):
            done += 1
            if data is None:
                # A bad input among those --skip leaves out is the other split's: the reports add up to the whole's.
                if good >= options.skip:
                    report.add(source.describe(index), reason)
            else:
                good += 1
                if good > options.skip:
                    writer.add(data, source.label(index))
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
        _SOURCE = _OPTIONS = None
    if pool:
        pool.close()
        pool.join()
    if options.skip and good <= options.skip:
        raise UserError(f"--skip {options.skip} leaves no images: the source has {good} usable of {done} inputs; "
                        f"lower --skip")
    if bar:
        bar.update(done, final=True, limit=options.limit if limited else None, skip=options.skip)
    return writer.finish(source.class_names, report), report


def prepare(source: str, out: str, options: PrepareOptions, root: str | None = None, download: bool = False,
            progress: bool = True) -> tuple[Manifest, SkipReport]:
    with storage.user_errors(out, "write the dataset to"):
        check_dataset_out(out, "OUT")  # a bad OUT fails before any reading
        opened = open_source(source, root, download)
        if options.spec.channels is None:  # auto: one channel where no image has colour
            options = replace(options, spec=replace(options.spec, channels=1 if opened.grayscale() else 3))
        writer = ShardWriter(out, options.spec, options.fmt, options.shard_size)
        return _write(opened, writer, options, progress)


def write_shards(images: np.ndarray, labels: np.ndarray | None, out: str, *, shard_size: int = 512,
                 class_names: list[str] | None = None) -> Manifest:
    """Arrays already at their final size (square uint8 N×R×R×C) -> raw shards, in order, nothing skipped."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != images.shape[2]:
        raise ValueError(f"expected uint8 images N×R×R×C, got {images.dtype} {images.shape}")
    spec = ImageSpec(resolution=images.shape[1], channels=images.shape[3])
    options = PrepareOptions(spec=spec, shard_size=shard_size, shuffle_seed=None)
    manifest, _ = write_dataset(ArraySource(images, labels, list(class_names or []), "arrays"), out, options, progress=False)
    return manifest


def cache_dir() -> Path:
    base = os.environ.get("GAN_DIST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "gan-dist"
    )
    return Path(base)


def embedded(name: str, resolution: int = 32) -> str:
    """A built-in dataset (a name in EMBEDDED_SOURCES), prepared once into the cache and reused while it verifies.
    Written into a private folder and renamed into place, so processes preparing it at once (Ray workers on one
    node) never see each other's halves."""
    out = cache_dir() / f"{name}-{resolution}"
    if _sound(out, resolution):
        return str(out)
    damaged = out.exists()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
        try:
            write_dataset(EMBEDDED_SOURCES[name](), str(staging),
                          PrepareOptions(spec=ImageSpec(resolution, 1), shard_size=512), progress=False)
            _install(staging, out, resolution, name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        # The user never named this folder: the fix is the variable that moves it.
        raise UserError(f"cannot write the dataset cache {cache_dir()} ({exc.strerror or exc}); set GAN_DIST_CACHE "
                        f"to a writable folder") from None
    if damaged:
        print(f"warning: the embedded {name} cache at {out} was damaged; prepared it again", file=sys.stderr)
    return str(out)


def embedded_digits(resolution: int = 32) -> str:
    """scikit-learn's handwritten digits, prepared into the cache (see `embedded`)."""
    return embedded("digits", resolution)


def embedded_typeset_digits(resolution: int = 32) -> str:
    """2,000 digits typeset in matplotlib's fonts, prepared into the cache (see `embedded`)."""
    return embedded("typeset-digits", resolution)


def _sound(out: Path, resolution: int) -> bool:
    """The cache as prepare wrote it: a valid manifest of the right size whose content_hash matches the shards'
    bytes (a few MB to hash). Anything else (a garbage or truncated shard, an edited manifest) is rebuilt."""
    try:
        manifest = Manifest.from_json((out / MANIFEST_NAME).read_bytes(), str(out))
        shards = [(out / name).read_bytes() for name in manifest.shards]
        rows = sum(pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows for data in shards)
    except (OSError, UserError, pa.ArrowException):
        return False
    return ((manifest.resolution, manifest.channels, manifest.count) == (resolution, 1, rows)
            and manifest.content_hash == content_hash([hashlib.sha256(data).hexdigest() for data in shards]))


def _install(staging: Path, out: Path, resolution: int, name: str) -> None:
    """Rename the staged copy to `out`. A damaged copy there is first renamed aside (never deleted in place, so no
    reader sees half of it); a sound copy, another process's, is kept: the copies are the same."""
    aside = staging.with_name(staging.name + "-damaged")  # private: the staging name is unique
    for _ in range(5):  # a few rounds of racing processes at most
        try:
            os.rename(staging, out)  # atomic; refused while `out` is a non-empty folder
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        if _sound(out, resolution):  # re-checked right before replacing: another process may have won
            return
        try:
            os.rename(out, aside)
        except FileNotFoundError:  # another process moved it aside first
            continue
        if _sound(aside, resolution):  # lost a race after all: that was a fresh copy, so put it back
            with contextlib.suppress(OSError):
                os.rename(aside, out)
        shutil.rmtree(aside, ignore_errors=True)
    raise UserError(f"other processes keep replacing the embedded {name} cache at {out}; run the command again")
