"""`gan-dist sample`: images from a checkpoint's generator."""

from __future__ import annotations

import fnmatch
import sys

import torch
from pydantic import ValidationError

from gan_dist import checkpoint
from gan_dist.config import ModelConfig
from gan_dist.errors import UserError
from gan_dist.models import build_generator
from gan_dist import storage
from gan_dist.tracking import png_bytes
from gan_dist.train.task import to_uint8

SAMPLE_PATTERN = "sample_*.png"
# What torch.Generator.manual_seed takes (negative seeds wrap modulo 2**64); beyond it, an overflow traceback.
SEED_RANGE = (-(2**63), 2**64 - 1)


def load_generator(checkpoint_uri: str, device: torch.device) -> torch.nn.Module:
    meta = checkpoint.load_meta(checkpoint_uri)
    try:  # the model section alone: the rest of a run's config (its name, say) has no say in sampling
        m = ModelConfig.model_validate(meta["config"]["model"])
        resolution, channels = meta["data"]["resolution"], meta["data"]["channels"]
    except (KeyError, TypeError, ValidationError):
        raise checkpoint.CorruptCheckpoint(f"{checkpoint_uri}: meta.json does not describe a generator") from None
    G = build_generator(m.arch, resolution, channels, m.z_dim, m.g_channels)
    G.load_state_dict(checkpoint.load_generator_weights(checkpoint_uri))
    return G.to(device).eval()


def check_sample_args(checkpoint_uri: str, out: str, seed: int) -> None:
    """One line, before the generator is loaded, for what would otherwise fail after it or overwrite earlier
    samples (refused: they may be the only copy of an earlier draw)."""
    if not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise UserError(f"--seed {seed} is out of range; pass an integer from {SEED_RANGE[0]} to {SEED_RANGE[1]}")
    storage.check_output_dir(out, "--out")
    existing = fnmatch.filter(storage.list_dir(out), SAMPLE_PATTERN)
    if existing:
        raise UserError(f"{out} already holds {len(existing)} {SAMPLE_PATTERN}; choose another --out or delete them")
    storage.check_bucket(checkpoint_uri)


@torch.no_grad()
def write_samples(checkpoint_uri: str, num: int, out: str, seed: int = 0, batch_size: int = 256,
                  device: str = "cpu") -> list[str]:
    """Write `num` PNGs (sample_00000.png, ...) under `out`, local or object storage."""
    check_sample_args(checkpoint_uri, out, seed)
    _, G = checkpoint.load_newest(checkpoint_uri, lambda uri: load_generator(uri, torch.device(device)),
                                  lambda warning: print(warning, file=sys.stderr))
    noise = torch.Generator(device=device).manual_seed(seed)
    written = []
    for start in range(0, num, batch_size):
        z = torch.randn(min(batch_size, num - start), G.z_dim, generator=noise, device=device)
        for offset, image in enumerate(to_uint8(G(z))):
            target = storage.join(out, f"sample_{start + offset:05d}.png")
            storage.write_bytes(target, png_bytes(image))
            written.append(target)
    return written
