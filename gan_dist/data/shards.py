"""The shard contract: Parquet files (`image` binary, `label` int32) + `_manifest.json`, and the one decode function.

Images are stored as raw uint8 H×W×C bytes: at GPU speeds a per-image PNG decode would starve the step.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from gan_dist.errors import UserError

FORMATS = ("raw", "png", "jpeg")
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
    skipped: dict[str, int] = field(default_factory=dict)  # inputs left out by `prepare`, by reason
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


def _decode_encoded(rows: list[bytes], manifest: Manifest) -> np.ndarray:
    """PNG/JPEG rows -> uint8 N×H×W×C through torchvision's decoders (several times faster than PIL)."""
    import torch
    from torchvision.io import ImageReadMode, decode_image

    mode = ImageReadMode.GRAY if manifest.channels == 1 else ImageReadMode.RGB
    shape = (manifest.channels, manifest.resolution, manifest.resolution)
    out = np.empty((len(rows), manifest.resolution, manifest.resolution, manifest.channels), np.uint8)
    with warnings.catch_warnings():  # deprecated in favour of torchcodec; still the fastest decoder installed
        warnings.simplefilter("ignore", DeprecationWarning)
        for i, row in enumerate(rows):
            image = decode_image(torch.frombuffer(bytearray(row), dtype=torch.uint8), mode=mode)
            if tuple(image.shape) != shape:
                raise UserError(f"a shard image is {tuple(image.shape)}, the manifest says {shape}; re-run prepare")
            out[i] = image.permute(1, 2, 0).numpy()
    return out


def decode_images(column: pa.Array | pa.ChunkedArray | np.ndarray, manifest: Manifest) -> np.ndarray:
    """A column of image bytes -> uint8 array N×H×W×C. Raw rows take no per-row Python work for Arrow input."""
    if manifest.format not in FORMATS:
        raise UserError(f"unknown image format '{manifest.format}' in the manifest; re-run prepare")
    if manifest.format != "raw":
        rows = column.tolist() if isinstance(column, np.ndarray) else column.to_pylist()
        return _decode_encoded(rows, manifest)
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
