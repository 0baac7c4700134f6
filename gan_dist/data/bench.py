"""`gan-dist bench-data`: a benchmark of the read + decode path into ready uint8 tensors.

Writes synthetic datasets (raw and png, 32² and 64², RGB) under --root, then times, on one core, pyarrow
reading + the project's decode function, and with --ray the Ray Data path (read_parquet -> iter_torch_batches
with the same decode as collate_fn) for a few batch sizes. Prints images/s and time to the first batch.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from gan_dist import storage
from gan_dist.data.images import ImageSpec
from gan_dist.data.prepare import PrepareOptions, write_dataset
from gan_dist.data.reader import read_manifest, shard_uris
from gan_dist.data.shards import Manifest, decode_images
from gan_dist.data.sources import ArraySource


def synthetic_images(count: int, resolution: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """Smooth random pictures (upsampled 8×8 noise): PNG compresses them the way it compresses photos, roughly."""
    small = torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (count, channels, 8, 8), dtype=np.uint8))
    big = torch.nn.functional.interpolate(small.float(), size=(resolution, resolution), mode="bilinear")
    return big.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def ensure_dataset(root: str, fmt: str, resolution: int, count: int) -> str:
    uri = storage.join(root, f"bench-{fmt}-{resolution}-{count}")
    if not storage.exists(storage.join(uri, "_manifest.json")):
        source = ArraySource(synthetic_images(count, resolution), None, [], "synthetic")
        write_dataset(source, uri, PrepareOptions(ImageSpec(resolution, 3), fmt=fmt, shard_size=4096,
                                                  workers=os.cpu_count() or 1), progress=False)
    return uri


def bench_pyarrow(uri: str, manifest: Manifest, batch: int = 256) -> tuple[float, float]:
    """(images/s, seconds to the first batch) reading shard by shard on one core."""
    start = time.perf_counter()
    first, total = None, 0
    for shard in shard_uris(uri, manifest):
        fs, path = storage.resolve(shard)
        parquet = pq.ParquetFile(fs.open_input_file(path))
        for group in range(parquet.num_row_groups):
            column = parquet.read_row_group(group, columns=["image"]).column("image")
            for offset in range(0, len(column), batch):
                images = torch.from_numpy(decode_images(column.slice(offset, batch), manifest))
                total += len(images)
                first = first or time.perf_counter() - start
    return total / (time.perf_counter() - start), first


def bench_ray(uri: str, manifest: Manifest, batch: int, prefetch: int) -> tuple[float, float, float]:
    """(epoch-1 images/s, epoch-2 images/s, seconds to the first batch) through Ray Data in this process."""
    import ray

    dataset = ray.data.read_parquet(shard_uris(uri, manifest)).select_columns(["image"])
    collate = lambda b: torch.from_numpy(decode_images(b["image"], manifest))  # noqa: E731
    rates, first = [], None
    for _ in range(2):
        start, total = time.perf_counter(), 0
        for images in dataset.iter_torch_batches(batch_size=batch, collate_fn=collate, prefetch_batches=prefetch):
            total += len(images)
            first = first or time.perf_counter() - start
        rates.append(total / (time.perf_counter() - start))
    return rates[0], rates[1], first


def bench_reading(root: str, count: int, ray: bool) -> None:
    """Print a row per path, format and size as each is measured (the Ray rows take minutes)."""
    torch.set_num_threads(1)
    pa.set_cpu_count(1)
    print(f"{'path':<28}{'format':<8}{'size':<7}{'img/s/core':>12}{'first batch':>13}")
    for fmt in ("raw", "png"):
        for res in (32, 64):
            uri = ensure_dataset(root, fmt, res, count)
            manifest = read_manifest(uri)
            rate, first = bench_pyarrow(uri, manifest)
            where = "s3" if storage.is_remote(uri) else "local"
            print(f"{'pyarrow ' + where:<28}{fmt:<8}{res:<7}{rate:>12,.0f}{first:>12.3f}s", flush=True)
            if ray:
                for batch, prefetch in ((256, 1), (1024, 2)):
                    first_epoch, second_epoch, first = bench_ray(uri, manifest, batch, prefetch)
                    label = f"ray data b{batch} p{prefetch}"
                    print(f"{label:<28}{fmt:<8}{res:<7}{first_epoch:>12,.0f}{first:>12.3f}s"
                          f"   (epoch 2: {second_epoch:,.0f} img/s, whole machine)", flush=True)
