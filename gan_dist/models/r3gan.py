"""R3GAN's networks (Huang et al., "The GAN is dead; long live the GAN! A Modern GAN Baseline", NeurIPS 2024;
reference code brownvc/R3GAN, `R3GAN/Networks.py`), for any power-of-two resolution >= 8 and any channel count.

A modernised ResNet with no normalisation anywhere. Every residual block is 1×1 expand (×`expansion`), a grouped
3×3 conv (`group_channels` channels per group), 1×1 back, each conv followed by a learned bias and leaky ReLU 0.2
but the last; the last conv starts at zero, so a fresh block is the identity, and the others are initialised with
He's gain scaled by L^(-1/4) for L blocks in the net (the paper's variance scaling, which keeps the residual sum's
variance bounded however deep the net). Resampling is the [1, 3, 3, 1] low-pass filter (upsampling by zero
insertion and it, which is bilinear interpolation); a 1×1 conv changes width where two stages differ, and
`model.blocks` may give each stage its own number of blocks, none included. G starts from a learned 4×4 basis scaled per channel
by a linear map of z (no mapping network) and ends in a 1×1 conv to the image (no tanh: `to_uint8` clips). D starts
with a 1×1 conv from the image and ends in a 4×4 depthwise conv and a linear layer; class-conditional D is a pure
projection (its last layer's features · an embedding of the class), G takes an embedding of the class next to z.

Widths: `g_channels` / `d_channels` for every stage up to `taper_above`×`taper_above`, halved per doubling above
(the paper's 768 up to 32×32, 384 at 64×64, ...; a CPU budget tapers from a lower side).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gan_dist.errors import UserError
from gan_dist.models.common import Family, doublings

MIN_RESOLUTION = 8  # the 4×4 basis doubled at least once
ACTIVATION_GAIN = math.sqrt(2 / (1 + 0.2**2))  # He's gain for leaky ReLU 0.2
# The low-pass filter of the resamplers: [1, 2, 1] convolved with the box [1, 1], as the reference builds it.
LOWPASS = (1.0, 3.0, 3.0, 1.0)


def stage_widths(resolution: int, channels: int, taper_above: int = 32) -> list[int]:
    """The width of each stage from 4×4 up to `resolution`: `channels` up to `taper_above`, halved per doubling
    above."""
    sides = [4 * 2**i for i in range(doublings(resolution, MIN_RESOLUTION, "R3GAN") + 1)]
    return [max(1, channels * taper_above // max(side, taper_above)) for side in sides]


def stage_blocks(blocks: int | Sequence[int], stages: int) -> list[int]:
    """Residual blocks of each stage from 4×4 up: the same number in every stage, or one number per stage."""
    if isinstance(blocks, int):
        return [blocks] * stages
    if len(blocks) != stages:
        raise UserError(f"model.blocks lists {len(blocks)} stages and these images need {stages} (4x4 up to "
                        f"{4 * 2 ** (stages - 1)}x{4 * 2 ** (stages - 1)}); give one number per stage, or one number "
                        f"for all")
    return list(blocks)


def linear_stages(counts: list[int]) -> int:
    """How many stages, from the image's side inward (never the 4×4 one), have no blocks. Such a stage holds no
    nonlinearity: a 1×1 width change and a resampling, which commute, so the nets resample on the image's channels
    and change widths at the lower side: the same function, without the work at full resolution."""
    above_basis = counts[1:][::-1]
    return next((n for n, count in enumerate(above_basis) if count), len(above_basis))


def _msr_init(layer: nn.Module, gain: float = 1.0) -> nn.Module:
    """N(0, gain² / fan_in) weights (He et al. 2015), the reference's MSRInitializer; biases zero."""
    fan_in = layer.weight[0].numel()
    nn.init.normal_(layer.weight, 0.0, gain / math.sqrt(fan_in))
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return layer


def _conv(c_in: int, c_out: int, kernel: int, groups: int = 1, gain: float = 1.0) -> nn.Conv2d:
    return _msr_init(nn.Conv2d(c_in, c_out, kernel, padding=(kernel - 1) // 2, groups=groups, bias=False), gain)


class BiasedLeakyReLU(nn.Module):
    """A learned bias per channel, then leaky ReLU 0.2: the convs themselves have no bias."""

    def __init__(self, width: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.bias.to(x.dtype).view(1, -1, 1, 1), 0.2)


class ResidualBlock(nn.Module):
    """x + 1×1(act(grouped 3×3(act(1×1 expand(x))))), the last conv zero at initialisation."""

    def __init__(self, width: int, expansion: int, group_channels: int, total_blocks: int):
        super().__init__()
        expanded = width * expansion
        gain = ACTIVATION_GAIN * total_blocks ** (-1 / 4)  # L^(-1/(2m-2)) for m = 3 convs per block
        self.expand = _conv(width, expanded, 1, gain=gain)
        self.act1 = BiasedLeakyReLU(expanded)
        self.spatial = _conv(expanded, expanded, 3, groups=max(1, expanded // group_channels), gain=gain)
        self.act2 = BiasedLeakyReLU(expanded)
        self.project = _conv(expanded, width, 1, gain=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.act2(self.spatial(self.act1(self.expand(x)))))


class Upsample(nn.Module):
    """2× by zero insertion and the low-pass filter, which is bilinear interpolation; at the edges the image is
    extended, not zero-padded as in the reference, so a constant stays constant up to the border (for a generator
    whose last stages are bare upsamplings, the digits' black frame would otherwise turn gray)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class Downsample(nn.Module):
    """½× by the low-pass filter at stride 2, each channel alone, zero-padded: the reference's conv as four shifted
    sums per axis, whose double backward (R1 and R2 differentiate through D twice) is cheap where a depthwise
    conv's is not (on a CPU ten times slower)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        taps = [tap / sum(LOWPASS) for tap in LOWPASS]
        x = F.pad(x, (1, 1, 1, 1))
        rows = sum(tap * x[:, :, i:x.shape[2] - 3 + i:2] for i, tap in enumerate(taps))
        return sum(tap * rows[:, :, :, i:rows.shape[3] - 3 + i:2] for i, tap in enumerate(taps))


class _Blocks(nn.Sequential):
    def __init__(self, width: int, count: int, expansion: int, group_channels: int, total_blocks: int):
        super().__init__(*(ResidualBlock(width, expansion, group_channels, total_blocks) for _ in range(count)))


class Generator(nn.Module):
    def __init__(self, resolution: int, channels: int, z_dim: int = 64, width: int = 768,
                 blocks: int | Sequence[int] = 2, expansion: int = 2, group_channels: int = 16, num_classes: int = 0,
                 label_dim: int = 64, taper_above: int = 32):
        super().__init__()
        widths = stage_widths(resolution, width, taper_above)
        counts = stage_blocks(blocks, len(widths))
        self.z_dim, self.resolution, self.channels, self.num_classes = z_dim, resolution, channels, num_classes
        total = sum(counts)
        self.embed = None
        if num_classes:
            # the reference's bias-free linear map of a one-hot class, N(0, 1/classes)
            self.embed = nn.Embedding(num_classes, label_dim)
            nn.init.normal_(self.embed.weight, 0.0, 1 / math.sqrt(num_classes))
        inputs = z_dim + (label_dim if num_classes else 0)
        self.basis = nn.Parameter(torch.randn(widths[0], 4, 4))
        self.basis_scale = _msr_init(nn.Linear(inputs, widths[0], bias=False))
        body = len(widths) - linear_stages(counts)
        self.stages = nn.ModuleList()
        for i, w in enumerate(widths[:body]):
            layers: list[nn.Module] = []
            if i:
                if widths[i - 1] != w:
                    layers.append(_conv(widths[i - 1], w, 1))
                layers.append(Upsample())
            layers.append(_Blocks(w, counts[i], expansion, group_channels, total))
            self.stages.append(nn.Sequential(*layers))
        self.narrow = nn.Sequential(*(_conv(widths[i - 1], widths[i], 1) for i in range(body, len(widths))
                                      if widths[i - 1] != widths[i]))
        self.to_image = _conv(widths[-1], channels, 1)
        self.upsample = nn.Sequential(*(Upsample() for _ in range(body, len(widths))))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z: B×z_dim (and class indices B when conditional) -> images B×C×R×R, about [-1, 1] (not clipped)."""
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)
        x = self.basis.to(z.dtype).unsqueeze(0) * self.basis_scale(z)[:, :, None, None]
        for stage in self.stages:
            x = stage(x)
        return self.upsample(self.to_image(self.narrow(x)))


class Discriminator(nn.Module):
    def __init__(self, resolution: int, channels: int, width: int = 768, blocks: int | Sequence[int] = 2,
                 expansion: int = 2, group_channels: int = 16, num_classes: int = 0, taper_above: int = 32):
        super().__init__()
        widths = stage_widths(resolution, width, taper_above)[::-1]  # from the image's side down to 4×4
        counts = stage_blocks(blocks, len(widths))[::-1]
        total = sum(counts)
        linear = linear_stages(counts[::-1])
        self.downsample = nn.Sequential(*(Downsample() for _ in range(linear)))
        self.from_image = _conv(channels, widths[0], 1)
        self.widen = nn.Sequential(*(_conv(widths[i], widths[i + 1], 1) for i in range(linear)
                                     if widths[i] != widths[i + 1]))
        self.stages = nn.ModuleList()
        for i in range(linear, len(widths) - 1):
            w = widths[i]
            layers: list[nn.Module] = [_Blocks(w, counts[i], expansion, group_channels, total), Downsample()]
            if widths[i + 1] != w:
                layers.append(_conv(w, widths[i + 1], 1))
            self.stages.append(nn.Sequential(*layers))
        last = widths[-1]
        self.stages.append(_Blocks(last, counts[-1], expansion, group_channels, total))
        # a 4×4 depthwise conv on the 4×4 features: one value per channel (computed as a weighted sum, whose double
        # backward is cheap)
        self.basis = nn.Parameter(torch.randn(last, 4, 4) / 4)  # N(0, 1/fan_in), fan_in 16
        outputs = last if num_classes else 1
        self.out = _msr_init(nn.Linear(last, outputs, bias=False))
        self.embed = None
        if num_classes:
            # projection: the class's embedding · D's features, N(0, 1/(classes × dim)) as in the reference
            self.embed = nn.Embedding(num_classes, outputs)
            nn.init.normal_(self.embed.weight, 0.0, 1 / math.sqrt(num_classes * outputs))

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """images B×C×R×R (and class indices B when conditional) -> one logit per image (B,)."""
        x = self.widen(self.from_image(self.downsample(images)))
        for stage in self.stages:
            x = stage(x)
        x = self.out(torch.einsum("bchw,chw->bc", x, self.basis.to(x.dtype)))
        if self.embed is None:
            return x.view(images.shape[0])
        return (x * self.embed(labels).to(x.dtype)).sum(dim=1)


FAMILY = Family(
    MIN_RESOLUTION,
    generator=lambda m, resolution, channels, classes: Generator(
        resolution, channels, m.z_dim, m.g_channels, m.blocks, m.expansion, m.group_channels, classes,
        m.label_dim or m.z_dim, m.taper_above),
    discriminator=lambda m, resolution, channels, classes: Discriminator(
        resolution, channels, m.d_channels, m.blocks, m.expansion, m.group_channels, classes, m.taper_above),
)
