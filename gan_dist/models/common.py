"""Shape rules shared by the architectures."""

from __future__ import annotations

import math


def doublings(resolution: int, minimum: int, arch: str) -> int:
    """How many 2x upsamplings take 4x4 to `resolution` (a power of two >= `minimum`)."""
    if resolution < minimum or resolution & (resolution - 1):
        raise ValueError(f"{arch} needs a power-of-two resolution >= {minimum}, got {resolution}")
    return int(math.log2(resolution)) - 2
