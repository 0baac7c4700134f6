"""The write half of the shard contract (data/shards.py): rows -> Parquet shards, then the manifest, last.

`gan-dist prepare` and the synthetic-data export both write through here, so a dataset is a dataset whoever made
it: shards streamed out as they fill, the manifest written last, so a half-written dataset is never taken for a
finished one.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import re

import pyarrow as pa
import pyarrow.parquet as pq

from gan_dist import storage
from gan_dist.data.images import ImageSpec
from gan_dist.data.shards import MANIFEST_NAME, PAIRED_SCHEMA, SHARD_SCHEMA, Manifest, content_hash
from gan_dist.errors import UserError

# What an interrupted write leaves in OUT: shards, temporaries of storage.write_bytes, hidden probe files.
_SHARD_FILE = re.compile(r"shard-\d+\.parquet(\.tmp)?")
_LEFTOVER = re.compile(rf"{_SHARD_FILE.pattern}|_manifest\.json\.tmp|\..*")


class ShardWriter:
    """Collects encoded rows and writes a shard each `shard_size` rows; `finish` writes the manifest. With
    `input_channels` the dataset is paired: every row also holds its input image."""

    def __init__(self, out: str, spec: ImageSpec, fmt: str, shard_size: int, input_channels: int = 0):
        check_dataset_out(out, "OUT")
        self.out, self.spec, self.fmt, self.shard_size = out, spec, fmt, shard_size
        self.input_channels = input_channels
        self.images: list[bytes] = []
        self.labels: list[int | None] = []
        self.inputs: list[bytes] = []
        self.names: list[str] = []
        self.digests: list[str] = []
        self.count = 0

    @property
    def rows(self) -> int:
        """Rows added so far, written or still pending."""
        return self.count + len(self.images)

    def add(self, data: bytes, label: int | None, input: bytes | None = None) -> None:
        if (input is not None) != (self.input_channels > 0):
            raise ValueError("a paired dataset's rows each need an input image, and only a paired dataset's")
        self.images.append(data)
        self.labels.append(label)
        if input is not None:
            self.inputs.append(input)
        if len(self.images) == self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if not self.images:
            return
        name = shard_name(len(self.names))
        self.names.append(name)
        self.digests.append(write_shard(storage.join(self.out, name), self.images, self.labels,
                                        self.inputs if self.input_channels else None))
        self.count += len(self.images)
        self.images, self.labels, self.inputs = [], [], []

    def finish(self, class_names: list[str], skipped: dict[str, int]) -> Manifest:
        """Write what is pending, then the manifest; `skipped`: inputs left out, by reason."""
        self._flush()
        if self.count == 0:
            raise UserError("the source holds no images; nothing was written")
        manifest = Manifest(resolution=self.spec.resolution, channels=self.spec.channels, count=self.count,
                            shards=self.names, format=self.fmt, class_names=class_names,
                            content_hash=content_hash(self.digests), skipped=skipped,
                            input_channels=self.input_channels)
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


def write_shard(uri: str, images: list[bytes], labels: list[int | None], inputs: list[bytes] | None = None) -> str:
    """One shard file of SHARD_SCHEMA rows (PAIRED_SCHEMA's with `inputs`); returns the SHA-256 of its bytes (for the
    manifest's content hash)."""
    columns = [pa.array(images, pa.binary()), pa.array(labels, pa.int32())]
    if inputs is None:
        table = pa.table(columns, schema=SHARD_SCHEMA)
    else:
        table = pa.table([*columns, pa.array(inputs, pa.binary())], schema=PAIRED_SCHEMA)
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
