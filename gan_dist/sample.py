"""`gan-dist sample`: images from a checkpoint's generator."""

from __future__ import annotations

import torch

from gan_dist import checkpoint
from gan_dist.config import config_from_dict
from gan_dist.models import build_generator
from gan_dist.runtime import storage
from gan_dist.tracking import png_bytes
from gan_dist.train.task import to_uint8


def load_generator(checkpoint_uri: str, device: torch.device) -> torch.nn.Module:
    meta = checkpoint.load_meta(checkpoint_uri)
    m = config_from_dict(meta["config"]).model
    G = build_generator(m.arch, meta["data"]["resolution"], meta["data"]["channels"], m.z_dim, m.g_channels)
    G.load_state_dict(checkpoint.load_generator_weights(checkpoint_uri))
    return G.to(device).eval()


@torch.no_grad()
def write_samples(checkpoint_uri: str, num: int, out: str, seed: int = 0, batch_size: int = 256,
                  device: str = "cpu") -> list[str]:
    """Write `num` PNGs (sample_00000.png, ...) under `out`, local or object storage."""
    uri = checkpoint.resolve_checkpoint(checkpoint_uri)
    G = load_generator(uri, torch.device(device))
    noise = torch.Generator(device=device).manual_seed(seed)
    written = []
    for start in range(0, num, batch_size):
        z = torch.randn(min(batch_size, num - start), G.z_dim, generator=noise, device=device)
        for offset, image in enumerate(to_uint8(G(z))):
            target = storage.join(out, f"sample_{start + offset:05d}.png")
            storage.write_bytes(target, png_bytes(image))
            written.append(target)
    return written
