"""pix2pix's nets (Isola et al. 2017): the U-Net generator, whose skip connections hand every encoder stage's
features to the decoder stage of the same size, and the PatchGAN that judges (input, output) pairs.

Networks only. Facts from the reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix, `UnetGenerator`):
4x4 stride-2 convs down (LeakyReLU 0.2 before each but the first, a norm after each but the first and the
innermost), 4x4 stride-2 transposed convs up (ReLU before each, a norm after each but the outermost, which ends in
tanh), widths ngf, 2ngf, 4ngf, 8ngf, then 8ngf to the bottleneck, dropout 0.5 in the three decoder stages above
the innermost (fewer in a shallow U-Net, see DROPOUT_STAGES), N(0, 0.02) initial weights. The reference's unet_256
and unet_128 go down to a 1x1 bottleneck (8 and 7 downsamplings); here the depth follows the image side the same
way. Instance norm in place of the paper's batch norm at batch size 1, which is instance norm; so the nets behave
alike in training and evaluation, batch after batch, and hold no running statistics. Images in [-1, 1], N×C×H×W.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gan_dist.models.translation import PatchDiscriminator, _norm, init_weights

# Decoder stages with dropout: up to three right above the innermost (the reference's unet_256: three), never the
# two next to the output (in a shallow U-Net those would blur every output pixel).
DROPOUT_STAGES = 3


class UNetGenerator(nn.Module):
    """`depth` encoder stages down, as many decoder stages up; decoder stage i takes the stage below's output
    concatenated with encoder stage i's (the skip connection). UNetGenerator(3, 3, 64, 8) is the reference's
    unet_256 with instance norm, 54.4 M parameters. Takes sides divisible by 2**depth."""

    def __init__(self, in_channels: int, out_channels: int, channels: int = 64, depth: int = 8,
                 dropout: float = 0.5):
        super().__init__()
        if depth < 2:
            raise ValueError(f"a U-Net needs at least 2 stages, got depth={depth}")
        self.depth = depth
        widths = [channels * min(2**i, 8) for i in range(depth)]  # encoder stage i's output channels
        self.down = nn.ModuleList()
        for i, width in enumerate(widths):
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2)]
            layers.append(nn.Conv2d(in_channels if i == 0 else widths[i - 1], width, 4, stride=2, padding=1))
            if 0 < i < depth - 1:  # not after the first conv (the reference's), nor at the 1x1 bottleneck
                layers.append(_norm(width))
            self.down.append(nn.Sequential(*layers))
        self.up = nn.ModuleList()  # up[i] undoes down[i]: it takes stage i's output (and its skip, below the innermost)
        for i, width in enumerate(widths):
            inner = width if i == depth - 1 else 2 * width
            outer = out_channels if i == 0 else widths[i - 1]
            layers = [nn.ReLU(), nn.ConvTranspose2d(inner, outer, 4, stride=2, padding=1)]
            if i == 0:
                layers.append(nn.Tanh())
            else:
                layers.append(_norm(outer))
                if dropout and max(2, depth - 1 - DROPOUT_STAGES) <= i < depth - 1:
                    layers.append(nn.Dropout(dropout))
            self.up.append(nn.Sequential(*layers))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for stage in self.down:
            x = stage(x)
            skips.append(x)
        x = self.up[-1](skips.pop())  # the innermost: no skip to join
        for stage in reversed(self.up[:-1]):
            x = stage(torch.cat([skips.pop(), x], dim=1))
        return x


class PairDiscriminator(nn.Module):
    """The conditional PatchGAN: the input image and an output (real or generated) concatenated on channels, one
    logit per overlapping patch (70x70 with layers=3)."""

    def __init__(self, in_channels: int, out_channels: int, channels: int = 64, layers: int = 3):
        super().__init__()
        self.patch = PatchDiscriminator(in_channels + out_channels, channels, layers)

    def forward(self, pair: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """`pair`: input and output already concatenated (N×(C_in+C_out)×H×W), so D's one call site augments both
        alike; `labels` is ignored."""
        return self.patch(pair)


def unet_depth(resolution: int) -> int:
    """Stages down to a 1x1 bottleneck, as the reference's unet_256 (8) and unet_128 (7)."""
    return resolution.bit_length() - 1


def build_generator(model: Any, in_channels: int, out_channels: int, resolution: int | None) -> UNetGenerator:
    """The U-Net `model` (a config UNetConfig section) describes, for images of side `resolution`."""
    if model.depth is None and resolution is None:
        raise ValueError("a U-Net of model.depth=null takes its depth from the image side: pass the resolution")
    depth = unet_depth(resolution) if model.depth is None else model.depth
    return UNetGenerator(in_channels, out_channels, model.g_channels, depth, model.dropout)


def input_multiple(model: Any, resolution: int) -> int:
    """The U-Net's inputs have sides divisible by this: one halving per stage."""
    return 2 ** (unet_depth(resolution) if model.depth is None else model.depth)

