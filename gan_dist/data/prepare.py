"""`gan-dist prepare`: sources -> Parquet shards + manifest. The manifest is written last, so a half-written
dataset is never taken for a finished one."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from gan_dist.data.shards import MANIFEST_NAME, SHARD_SCHEMA, Manifest, content_hash
from gan_dist.errors import UserError
from gan_dist.runtime import storage

SOURCES = ("digits",)


def write_shards(
    images: np.ndarray,
    labels: np.ndarray | None,
    out: str,
    *,
    shard_size: int = 512,
    class_names: list[str] | None = None,
) -> Manifest:
    """Write uint8 images N×H×W×C (square) as raw-byte Parquet shards under `out`, then the manifest."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != images.shape[2]:
        raise ValueError(f"expected uint8 images N×H×H×C, got {images.dtype} {images.shape}")
    if storage.exists(storage.join(out, MANIFEST_NAME)):
        raise UserError(f"{out} already holds a prepared dataset; choose another OUT or delete it first")
    n, res, _, channels = images.shape
    names, digests = [], []
    for index, start in enumerate(range(0, n, shard_size)):
        rows = images[start : start + shard_size]
        image_col = pa.array([row.tobytes() for row in rows], type=pa.binary())
        label_col = (
            pa.nulls(len(rows), type=pa.int32())
            if labels is None
            else pa.array(labels[start : start + shard_size], type=pa.int32())
        )
        buffer = io.BytesIO()
        # Uncompressed: raw pixels barely compress and decompression costs the reader CPU.
        pq.write_table(pa.table([image_col, label_col], schema=SHARD_SCHEMA), buffer, compression="none")
        name = f"shard-{index:05d}.parquet"
        data = buffer.getvalue()
        storage.write_bytes(storage.join(out, name), data)
        names.append(name)
        digests.append(hashlib.sha256(data).hexdigest())
    manifest = Manifest(
        resolution=res,
        channels=channels,
        count=n,
        shards=names,
        class_names=list(class_names or []),
        content_hash=content_hash(digests),
    )
    storage.write_bytes(storage.join(out, MANIFEST_NAME), manifest.to_json().encode())
    return manifest


def resize_square(images: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 N×H×W×C -> N×R×R×C with antialiased bilinear resampling."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def digits_arrays(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 handwritten 8×8 digits (shipped in the package, no download) at `resolution`."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    raw = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)[..., None]  # 0..16 ink -> 0..255
    return resize_square(raw, resolution), digits.target.astype(np.int32)


def prepare_digits(out: str, resolution: int = 32, shard_size: int = 512) -> Manifest:
    images, labels = digits_arrays(resolution)
    return write_shards(images, labels, out, shard_size=shard_size, class_names=[str(d) for d in range(10)])


def prepare(source: str, out: str, *, resolution: int = 32, shard_size: int = 512) -> Manifest:
    if source == "digits":
        return prepare_digits(out, resolution, shard_size)
    raise UserError(f"unknown source '{source}'; supported: {', '.join(SOURCES)}")


def cache_dir() -> Path:
    base = os.environ.get("GAN_DIST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "gan-dist"
    )
    return Path(base)


def embedded_digits(resolution: int = 32) -> str:
    """The embedded dataset, prepared once into the cache and reused."""
    out = cache_dir() / f"digits-{resolution}"
    if not (out / MANIFEST_NAME).is_file():
        if out.exists():  # an interrupted earlier prepare: no manifest, so nothing in it counts
            for leftover in out.iterdir():
                leftover.unlink()
        prepare_digits(str(out), resolution)
    return str(out)
