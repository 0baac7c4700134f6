"""The shard contract: Parquet files (`image` binary, `label` int32) + `_manifest.json`, and the one decode function.

Images are stored as raw uint8 H×W×C bytes: at GPU speeds a per-image PNG decode would starve the step.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from gan_dist.errors import UserError

MANIFEST_NAME = "_manifest.json"
MANIFEST_VERSION = 1
SHARD_SCHEMA = pa.schema([("image", pa.binary()), ("label", pa.int32())])


@dataclass
class Manifest:
    resolution: int
    channels: int
    count: int
    shards: list[str]
    format: str = "raw"
    class_names: list[str] = field(default_factory=list)
    content_hash: str = ""
    version: int = MANIFEST_VERSION

    @property
    def image_bytes(self) -> int:
        return self.resolution * self.resolution * self.channels

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str, where: str) -> "Manifest":
        try:
            raw = json.loads(text)
            return cls(**raw)
        except (json.JSONDecodeError, TypeError) as exc:
            raise UserError(f"{where} is not a valid gan-dist manifest ({exc}); re-run `gan-dist prepare`") from None


def content_hash(shard_digests: list[str]) -> str:
    """One hash over the shards' own digests, in shard order: keys cached real-image statistics."""
    return hashlib.sha256("".join(shard_digests).encode()).hexdigest()


def decode_images(column: pa.Array | pa.ChunkedArray | np.ndarray, manifest: Manifest) -> np.ndarray:
    """A column of raw image bytes -> uint8 array N×H×W×C, without per-row Python work for Arrow input."""
    if manifest.format != "raw":
        raise UserError(f"image format '{manifest.format}' is not readable by this version; prepare with --format raw")
    size = manifest.image_bytes
    if isinstance(column, np.ndarray):  # Ray Data hands numpy object arrays of bytes
        flat = np.frombuffer(b"".join(column.tolist()), dtype=np.uint8)
        n = len(column)
    else:
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        n = len(column)
        offsets = np.frombuffer(column.buffers()[1], dtype=np.int32, count=n + 1, offset=column.offset * 4)
        if not np.all(np.diff(offsets) == size):
            raise UserError(f"shard rows are not {size}-byte raw images; the manifest does not match its shards")
        flat = np.frombuffer(column.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    if flat.size != n * size:
        raise UserError(f"shard rows are not {size}-byte raw images; the manifest does not match its shards")
    return flat.reshape(n, manifest.resolution, manifest.resolution, manifest.channels)
