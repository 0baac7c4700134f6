"""`gan-dist sample --format parquet`: a synthetic dataset from a checkpoint's generator, in the shard contract of
`gan-dist prepare`, so `gan-dist train --data`, `evaluate` and plain pyarrow read it.

The images are split into fixed blocks of `shard_size`; block b is one shard file whose latents come from its own
seed, derive(seed, "sample", b), drawn on the CPU. So a block is the same whoever writes it (this process or any
Ray actor: runtime/export.py; on a CPU or a GPU's latents), the blocks never share latents, and the dataset does
not depend on the number of workers. The manifest is written last, in block order, with the dataset's provenance.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from gan_dist import checkpoint, seeds, storage
from gan_dist.data.writer import check_dataset_out, publish_manifest, shard_name, write_shard
from gan_dist.data.shards import Manifest, content_hash
from gan_dist.errors import UserError
from gan_dist.imaging import to_uint8
from gan_dist.progress import Progress
from gan_dist.sample import Generator, check_truncation, class_labels, load_generator, resolve_classes, truncated

# The provenance's recipe of the latents, so a reader of the manifest can draw them again.
SEEDS_RECIPE = ("image i is in block b = i // shard_size; block b's latents are torch.randn(rows, z_dim, "
                "generator=torch.Generator().manual_seed(gan_dist.seeds.derive(seed, 'sample', b))) on the CPU, "
                "times truncation; image i's class is classes[i % len(classes)]")


@dataclass(frozen=True)
class Export:
    """What writing one block needs: plain values, sent to every Ray actor."""

    checkpoint: str  # the resolved checkpoint directory, absolute
    out: str  # absolute
    num: int
    seed: int
    classes: tuple[int, ...]  # asked class indices; empty for an unconditional generator
    truncation: float
    raw: bool
    shard_size: int
    batch_size: int = 256

    @property
    def blocks(self) -> int:
        return -(-self.num // self.shard_size)

    def rows(self, block: int) -> range:
        return range(block * self.shard_size, min(self.num, (block + 1) * self.shard_size))


@dataclass(frozen=True)
class Written:
    block: int
    name: str
    digest: str  # SHA-256 of the shard file
    count: int


def block_latents(export: Export, block: int, z_dim: int) -> torch.Tensor:
    """Block `block`'s latents, drawn on the CPU: the same numbers whatever device the generator is on."""
    noise = torch.Generator().manual_seed(seeds.derive(export.seed, "sample", block))
    return truncated(torch.randn(len(export.rows(block)), z_dim, generator=noise), export.truncation)


@torch.no_grad()
def write_block(generator: Generator, export: Export, block: int, device: str | torch.device) -> Written:
    """Generate block `block` and write it as shard-{block:05d}.parquet under export.out."""
    rows, classes = export.rows(block), list(export.classes)
    z = block_latents(export, block, generator.net.z_dim).to(device)
    images: list[bytes] = []
    for start in range(0, len(rows), export.batch_size):
        part = rows[start:start + export.batch_size]
        batch = generator.net(z[start:start + len(part)], class_labels(classes, part, device))
        stored = to_uint8(batch).permute(0, 2, 3, 1).contiguous().cpu().numpy()  # B×H×W×C, as shards hold it
        images.extend(image.tobytes() for image in stored)
    labels = class_labels(classes, rows)
    name = shard_name(block)
    digest = write_shard(storage.join(export.out, name), images,
                         labels.tolist() if labels is not None else [None] * len(rows))
    return Written(block, name, digest, len(rows))


# Who writes an export's blocks, yielding each as it finishes: this process, or Ray actors (runtime/export.py).
BlockWriter = Callable[[Export], Iterator[Written]]


def check_export_args(seed: int, truncation: float) -> None:
    """One line, before any work, for what would otherwise fail later."""
    if not 0 <= seed <= seeds.MAX_SEED:
        raise UserError(f"--seed {seed} is out of range for --format parquet; pass an integer from 0 to "
                        f"{seeds.MAX_SEED}")
    check_truncation(truncation)


def export_dataset(checkpoint_uri: str, out: str, num: int, *, seed: int = 0, classes: list[str] | None = None,
                   raw: bool = False, truncation: float = 1.0, shard_size: int = 2048, device: str = "cpu",
                   writer: BlockWriter | None = None, progress: bool = True) -> Manifest:
    """Write `num` generated images as a prepared dataset under `out` (local or object storage) and return its
    manifest; for a conditional generator the asked classes in turn, labeled, with the generator's class names.
    The blocks are written by `writer` (default: this process, on `device`)."""
    check_export_args(seed, truncation)
    with storage.user_errors(out, "write the dataset to"):
        check_dataset_out(out, "--out")
    out = storage.absolute_uri(out)  # Ray actors run in other folders
    storage.check_bucket(checkpoint_uri)
    uri, generator = checkpoint.load_newest(storage.absolute_uri(checkpoint_uri),
                                            lambda found: load_generator(found, torch.device(device), raw),
                                            lambda warning: print(warning, file=sys.stderr))
    export = Export(uri, out, num, seed, tuple(resolve_classes(classes or [], generator)), truncation, raw,
                    shard_size)
    writer = writer or (lambda plan: (write_block(generator, plan, block, device) for block in range(plan.blocks)))
    with storage.user_errors(out, "write the dataset to"):
        written = _collect(writer(export), num, progress)
        manifest = Manifest(resolution=generator.resolution, channels=generator.channels, count=num,
                            shards=[w.name for w in written], class_names=generator.class_names,
                            content_hash=content_hash([w.digest for w in written]),
                            origin=origin(export, generator))
        publish_manifest(out, manifest)
    return manifest


def _collect(written: Iterator[Written], num: int, progress: bool) -> list[Written]:
    """The blocks in block order, whatever order they were written in; a progress line meanwhile."""
    bar, done, blocks = Progress(num, sys.stderr, label="sample") if progress else None, 0, []
    for block in written:
        blocks.append(block)
        done += block.count
        if bar:
            bar.update(done)
    if bar:
        bar.update(done, final=True)
    return sorted(blocks, key=lambda w: w.block)


def origin(export: Export, generator: Generator) -> dict[str, Any]:
    """The manifest's provenance: enough to write the same dataset again."""
    return {"checkpoint": export.checkpoint, "step": generator.step, "seed": export.seed,
            "truncation": export.truncation, "classes": list(export.classes), "raw": export.raw,
            "shard_size": export.shard_size, "seeds": SEEDS_RECIPE}
