"""The built-in datasets (scikit-learn's handwritten digits, the typeset digits), prepared once into a cache folder
and reused while they verify: the data every preset trains on when no dataset is named, with no download."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from gan_dist.data.images import ImageSpec
from gan_dist.data.prepare import PrepareOptions, write_dataset
from gan_dist.data.shards import MANIFEST_NAME, Manifest, content_hash
from gan_dist.data.sources import EMBEDDED_SOURCES
from gan_dist.errors import UserError


def cache_dir() -> Path:
    """Where the built-in datasets are kept: $GAN_DIST_CACHE, else the user's cache folder."""
    base = os.environ.get("GAN_DIST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "gan-dist"
    )
    return Path(base)


def embedded(name: str, resolution: int = 32) -> str:
    """A built-in dataset (a name in EMBEDDED_SOURCES), prepared once into the cache and reused while it verifies.
    Written into a private folder and renamed into place, so processes preparing it at once (Ray workers on one
    node) never see each other's halves."""
    if name not in EMBEDDED_SOURCES:
        raise UserError(f"no built-in dataset '{name}'; the built-in ones are {', '.join(EMBEDDED_SOURCES)}")
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
