"""Where a worker's training data lives: resident on its device, or streamed. Chosen per run, logged, overridable."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from gan_dist.config import DataConfig
from gan_dist.data.shards import Manifest


@dataclass(frozen=True)
class Placement:
    resident: bool
    reason: str  # one line for the console: what was chosen and why


def device_memory_bytes(device: torch.device) -> int:
    """Total memory of the device the batches are used on: the GPU's, or this host's RAM for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def choose(data: DataConfig, manifest: Manifest, world_size: int, device: torch.device) -> Placement:
    share_bytes = -(-manifest.count // world_size) * manifest.image_bytes  # the largest worker share
    size = f"{_gb(share_bytes)} per worker"
    if data.placement != "auto":
        return Placement(data.placement == "resident", f"data: {data.placement} on {device} ({size}; data.placement)")
    memory = device_memory_bytes(device)
    limit = f"{data.resident_max_share:.0%} of {device}'s {_gb(memory)}"
    if share_bytes <= data.resident_max_share * memory:
        return Placement(True, f"data: resident on {device} ({size} <= {limit})")
    return Placement(False, f"data: stream ({size} > {limit}; raise data.resident_max_share to keep it resident)")


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GB" if n >= 2**28 else f"{n / 2**20:.1f} MB"
