"""The shard contract: Parquet files (`image` binary, `label` int32; a paired dataset's rows also hold `input`, the
image a paired translator takes, `image` being what it should make) + `_manifest.json`, and the one decode function.

Images are stored as raw uint8 H×W×C bytes: at GPU speeds a per-image PNG decode would starve the step.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

import numpy as np
import pyarrow as pa

from gan_dist.errors import UserError

FORMATS = ("raw", "png", "jpeg")
MANIFEST_NAME = "_manifest.json"
MANIFEST_VERSION = 1
PREPARE_AGAIN = "re-run `gan-dist prepare`"  # the fix for a dataset whose manifest and shards disagree
SHARD_SCHEMA = pa.schema([("image", pa.binary()), ("label", pa.int32())])
INPUT = "input"  # a paired dataset's second image column: same resolution and format, its own channel count
PAIRED_SCHEMA = SHARD_SCHEMA.append(pa.field(INPUT, pa.binary()))
COLUMNS = ("image", "label")  # what every reader hands the task, by these names (and INPUT where paired)
NO_LABEL = -1  # a batch's label where the dataset has none


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
    origin: dict[str, Any] = field(default_factory=dict)  # a synthetic dataset's provenance (`gan-dist sample`)
    input_channels: int = 0  # a paired dataset's INPUT column's channels; 0: no such column
    version: int = MANIFEST_VERSION

    @property
    def image_bytes(self) -> int:
        return self.resolution * self.resolution * self.channels

    @property
    def paired(self) -> bool:
        return self.input_channels > 0

    @property
    def columns(self) -> tuple[str, ...]:
        """The shard columns every reader reads and hands over, by these names."""
        return COLUMNS + ((INPUT,) if self.paired else ())

    def channels_of(self, column: str) -> int:
        return self.input_channels if column == INPUT else self.channels

    @property
    def row_bytes(self) -> int:
        """A decoded row's pixels, every image column's: what a resident copy of a row costs."""
        return self.resolution * self.resolution * (self.channels + self.input_channels)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> "Manifest":
        """Parse and check a manifest: a hand-edited field is refused here, in one line, not deep in a reader."""
        def invalid(why: str) -> UserError:
            return UserError(f"{where} is not a valid gan-dist manifest ({why}); {PREPARE_AGAIN}")

        try:
            raw = json.loads(text)
        except ValueError as exc:  # bad JSON, or bytes that are not text
            raise invalid(" ".join(str(exc).split())[:200]) from None
        if not isinstance(raw, dict):
            raise invalid(f"expected a JSON object, got {type(raw).__name__}")
        if unknown := sorted(set(raw) - {f.name for f in fields(cls)}):
            raise invalid(f"unknown field '{unknown[0]}'")
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        if missing := [name for name in required if name not in raw]:
            raise invalid(f"missing field '{missing[0]}'")
        for name, (rule, ok) in _FIELD_CHECKS.items():
            if name in raw and not ok(raw[name]):
                raise invalid(f"{name} must be {rule}, got {json.dumps(raw[name])[:80]}")
        if raw.get("version", MANIFEST_VERSION) > MANIFEST_VERSION:
            raise UserError(f"{where} was written by a newer gan-dist (manifest version {raw['version']}; this "
                            f"one reads up to {MANIFEST_VERSION}); upgrade gan-dist, or {PREPARE_AGAIN} "
                            "with this one")
        return cls(**raw)


def _whole(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low  # JSON true is not a number


def _shard_name(value: Any) -> bool:
    # A plain name inside the dataset folder: a path could point a reader outside it.
    return isinstance(value, str) and value not in ("", ".", "..") and not any(c in value for c in "/\\")


# field -> (what it must be, the check): the manifest is hand-editable, so every field is checked before use.
_FIELD_CHECKS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "resolution": ("a whole number ≥ 1", lambda v: _whole(v, 1)),
    "channels": ("1 or 3", lambda v: _whole(v, 1) and v in (1, 3)),
    "count": ("a whole number ≥ 1", lambda v: _whole(v, 1)),
    "shards": ("a non-empty list of shard file names (no '/')",
               lambda v: isinstance(v, list) and bool(v) and all(map(_shard_name, v))),
    "format": (f"one of {', '.join(FORMATS)}", lambda v: isinstance(v, str) and v in FORMATS),
    "class_names": ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v)),
    "content_hash": ("a string", lambda v: isinstance(v, str)),
    "skipped": ("an object of counts", lambda v: isinstance(v, dict) and all(_whole(n, 0) for n in v.values())),
    "origin": ("an object", lambda v: isinstance(v, dict)),
    "input_channels": ("0, 1 or 3", lambda v: _whole(v, 0) and v in (0, 1, 3)),
    "version": ("a whole number ≥ 1", lambda v: _whole(v, 1)),
}


def _not_raw(size: int) -> UserError:
    return UserError(f"rows are not {size}-byte raw images, so the manifest does not match its shards; {PREPARE_AGAIN}")


def content_hash(shard_digests: list[str]) -> str:
    """One hash over the shards' own digests, in shard order: keys cached real-image statistics."""
    return hashlib.sha256("".join(shard_digests).encode()).hexdigest()


def _decode_encoded(rows: list[bytes], manifest: Manifest, channels: int) -> np.ndarray:
    """PNG/JPEG rows -> uint8 N×H×W×C through torchvision's decoders (several times faster than PIL)."""
    import torch
    from torchvision.io import ImageReadMode, decode_image

    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    shape = (channels, manifest.resolution, manifest.resolution)
    out = np.empty((len(rows), manifest.resolution, manifest.resolution, channels), np.uint8)
    with warnings.catch_warnings():  # deprecated in favour of torchcodec; still the fastest decoder installed
        warnings.simplefilter("ignore", DeprecationWarning)
        for i, row in enumerate(rows):
            image = decode_image(torch.frombuffer(bytearray(row), dtype=torch.uint8), mode=mode)
            if tuple(image.shape) != shape:
                raise UserError(f"an image is {tuple(image.shape)} but the manifest says {shape}, so the manifest "
                                f"does not match its shards; {PREPARE_AGAIN}")
            out[i] = image.permute(1, 2, 0).numpy()
    return out


def decode_images(column: pa.Array | pa.ChunkedArray | np.ndarray, manifest: Manifest,
                  name: str = "image") -> np.ndarray:
    """A column of image bytes (`name`: "image" or INPUT) -> uint8 array N×H×W×C. Raw rows take no per-row Python
    work for Arrow input."""
    if manifest.format not in FORMATS:
        raise UserError(f"unknown image format '{manifest.format}' in the manifest; {PREPARE_AGAIN}")
    channels = manifest.channels_of(name)
    if manifest.format != "raw":
        rows = column.tolist() if isinstance(column, np.ndarray) else column.to_pylist()
        return _decode_encoded(rows, manifest, channels)
    size = manifest.resolution * manifest.resolution * channels
    if isinstance(column, np.ndarray):  # Ray Data hands numpy object arrays of bytes
        flat = np.frombuffer(b"".join(column.tolist()), dtype=np.uint8)
        n = len(column)
    else:
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        n = len(column)
        offsets = np.frombuffer(column.buffers()[1], dtype=np.int32, count=n + 1, offset=column.offset * 4)
        if not np.all(np.diff(offsets) == size):
            raise _not_raw(size)
        flat = np.frombuffer(column.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    if flat.size != n * size:
        raise _not_raw(size)
    return flat.reshape(n, manifest.resolution, manifest.resolution, channels)


def label_array(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The shards' nullable int32 labels -> int64 class indices, NO_LABEL where a row has none."""
    return column.fill_null(NO_LABEL).to_numpy(zero_copy_only=False).astype(np.int64)


def decode_rows(table: pa.Table, manifest: Manifest) -> dict[str, np.ndarray]:
    """Shard rows (the manifest's columns) -> the batch every reader hands over: each image column uint8 N×H×W×C,
    "label" int64 N."""
    return {name: label_array(table.column(name)) if name == "label" else
            decode_images(table.column(name), manifest, name) for name in manifest.columns}


def empty_rows(manifest: Manifest, n: int) -> dict[str, np.ndarray]:
    """Room for n decoded rows, shaped as `decode_rows` hands them over."""
    side = manifest.resolution
    return {name: np.empty(n, np.int64) if name == "label" else
            np.empty((n, side, side, manifest.channels_of(name)), np.uint8) for name in manifest.columns}
