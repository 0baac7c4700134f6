"""What the architectures share: the family record the registry holds, and shape rules."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

# (model config section, resolution, channels, num_classes; 0 = unconditional) -> net
NetBuilder = Callable[[Any, int, int, int], nn.Module]


@dataclass(frozen=True)
class Family:
    """One model family: the smallest square side it takes (every power of two from there up works) and how to
    build its two nets from its config section."""

    min_resolution: int
    generator: NetBuilder
    discriminator: NetBuilder


def doublings(resolution: int, minimum: int, arch: str) -> int:
    """How many 2x upsamplings take 4x4 to `resolution` (a power of two >= `minimum`)."""
    if resolution < minimum or resolution & (resolution - 1):
        raise ValueError(f"{arch} needs a power-of-two resolution >= {minimum}, got {resolution}")
    return int(math.log2(resolution)) - 2
