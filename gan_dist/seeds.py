"""The one seed function. Every random draw of a run (initial weights, latents, preview inputs, data orders) is
seeded by a pure function of (run seed, purpose, rank, step or epoch, ...): a resumed run draws exactly what the
uninterrupted run would have drawn, with no RNG state to carry, and no two purposes share a stream."""

from __future__ import annotations

import zlib

import numpy as np

PURPOSES = frozenset({
    "init",         # initial weights: the same on every rank
    "latents",      # (rank, step): a step's latents and classes
    "augment",      # (rank, step, call): the augmentation of one discriminator call
    "mix",          # (rank, step, update): WGAN-GP's real/fake mixing weights
    "pool",         # (rank, step): CycleGAN's image pool choices
    "patches",      # (rank, step, call): CUT's sampled patch locations
    "masks",        # (rank, step): inpainting's holes; (index): those of `gan-dist complete --mask random`
    "dropout",      # (rank, step): the dropout of pix2pix's U-Net decoder
    "preview",      # the fixed inputs of the preview grids
    "epoch_order",  # (rank, epoch): the resident reader's permutation of a worker's rows
    "unit_order",   # (epoch): the streaming reader's order of row groups
    "unit_rows",    # (epoch, unit): the streaming reader's permutation of a row group's rows
    "ray_files",    # the Ray Data file order
    "ray_shuffle",  # (rank, epoch): the Ray Data local shuffle
    "eval",         # the latents of evaluations during training, the same at every evaluation
    "sample",       # (block): `gan-dist sample --format parquet`'s latents of one block of images, whoever writes it
    "explore",      # (figure, index): the latents of `gan-dist explore`'s pictures
})
MAX_SEED = 2**63 - 1  # seeds and indexes: any non-negative int up to this


def derive(seed: int, purpose: str, *indexes: int) -> int:
    """A 63-bit seed for one purpose and position, through numpy's SeedSequence: well mixed, so nearby inputs
    give unrelated streams, and no arithmetic that overflows or collides."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown seed purpose {purpose!r}")
    entropy = [seed, zlib.crc32(purpose.encode()), *indexes]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))
