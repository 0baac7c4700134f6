"""ResNet SNGAN (Miyato et al. 2018) for any power-of-two resolution >= 16 and any channel count.

At 32x32 with the default widths these are the CIFAR-10 benchmark networks (same layers and parameter count as
the reference SNGAN_G / SNGAN_D). G: 4x4 -> R, one upsampling residual block per doubling. D: no batch norm,
spectral norm on every layer; an "optimized" first block, downsampling blocks down to 8x8, then two blocks at
8x8. D's power iterations are not in its forward: the training step calls `update_spectral_norms(D)`.

Class-conditional (num_classes > 0), as in Miyato & Koyama 2018: G's residual blocks use conditional batch norm
(a gain and a bias per class), and D adds a projection term, the inner product of a spectrally normalised class
embedding with its pooled features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gan_dist.models.common import Family, doublings
from gan_dist.models.spectral import INIT_ITERATIONS, SNConv2d, SNEmbedding, SNLinear, SpectralNorm

MIN_RESOLUTION = 16  # 4x4 doubled at least twice; any power of two from here


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)
        if isinstance(module, SpectralNorm):
            module.power_iteration(INIT_ITERATIONS)  # the weight changed: bring sigma up to date


class _Residual(nn.Module):
    """main(x) + shortcut(x), the shape of every block in both networks."""

    def __init__(self, main: nn.Module, shortcut: nn.Module):
        super().__init__()
        self.main, self.shortcut = main, shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.shortcut(x)


class ClassBatchNorm(nn.Module):
    """Batch norm whose gain and bias are looked up per class when conditional; plain batch norm otherwise."""

    def __init__(self, width: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(width, affine=not num_classes)
        self.gain = self.bias = None
        if num_classes:
            self.gain, self.bias = nn.Embedding(num_classes, width), nn.Embedding(num_classes, width)
            nn.init.ones_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        x = self.bn(x)
        if self.gain is None:
            return x
        return x * self.gain(labels)[:, :, None, None] + self.bias(labels)[:, :, None, None]


class _GBlock(nn.Module):
    """BN-ReLU-upsample-conv-BN-ReLU-conv plus an upsampled shortcut."""

    def __init__(self, width: int, num_classes: int):
        super().__init__()
        self.norm1 = ClassBatchNorm(width, num_classes)
        self.conv1 = nn.Conv2d(width, width, 3, 1, 1)
        self.norm2 = ClassBatchNorm(width, num_classes)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=2)
        h = self.conv1(F.interpolate(F.relu(self.norm1(x, labels)), scale_factor=2))
        return self.conv2(F.relu(self.norm2(h, labels))) + up


def _d_block(c_in: int, c_out: int, down: bool, first: bool = False) -> _Residual:
    # The first ("optimized") block sees the image itself, so it has no ReLU before its first convolution.
    main: list[nn.Module] = [] if first else [nn.ReLU()]
    main += [SNConv2d(c_in, c_out, 3, 1, 1), nn.ReLU(), SNConv2d(c_out, c_out, 3, 1, 1)]
    # Pooling before the 1x1 shortcut convolution equals pooling after it (both are linear) at a quarter of the cost.
    shortcut: list[nn.Module] = [nn.AvgPool2d(2)] if down else []
    if down:
        main.append(nn.AvgPool2d(2))
    if down or c_in != c_out:
        shortcut.append(SNConv2d(c_in, c_out, 1))
    return _Residual(nn.Sequential(*main), nn.Sequential(*shortcut))  # an empty Sequential is the identity


class Generator(nn.Module):
    def __init__(self, resolution: int, channels: int, z_dim: int = 128, width: int = 256, num_classes: int = 0):
        super().__init__()
        stages = doublings(resolution, MIN_RESOLUTION, "ResNet-SN")
        self.z_dim, self.resolution, self.channels, self.width = z_dim, resolution, channels, width
        self.num_classes = num_classes
        self.fc = nn.Linear(z_dim, 4 * 4 * width)
        self.blocks = nn.ModuleList(_GBlock(width, num_classes) for _ in range(stages))
        self.out = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, channels, 3, 1, 1), nn.Tanh())
        self.apply(_init_weights)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z: B×z_dim (and class indices B when conditional) -> images B×C×R×R in [-1, 1]."""
        h = self.fc(z).view(z.shape[0], self.width, 4, 4)
        for block in self.blocks:
            h = block(h, labels)
        return self.out(h)


class Discriminator(nn.Module):
    def __init__(self, resolution: int, channels: int, width: int = 128, num_classes: int = 0):
        super().__init__()
        downs = doublings(resolution, MIN_RESOLUTION, "ResNet-SN") - 1  # resolution -> 8x8
        blocks = [_d_block(channels, width, down=True, first=True)]
        blocks += [_d_block(width, width, down=True) for _ in range(downs - 1)]
        blocks += [_d_block(width, width, down=False) for _ in range(2)]
        self.blocks = nn.Sequential(*blocks)
        self.fc = SNLinear(width, 1)
        self.apply(_init_weights)
        self.embed = None
        if num_classes:
            self.embed = SNEmbedding(num_classes, width)
            nn.init.xavier_uniform_(self.embed.weight)
            self.embed.power_iteration(INIT_ITERATIONS)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """images B×C×R×R (and class indices B when conditional) -> one logit per image (B,)."""
        features = torch.relu(self.blocks(images)).sum(dim=(2, 3))
        logits = self.fc(features).view(images.shape[0])
        if self.embed is None:
            return logits
        return logits + (self.embed(labels) * features).sum(dim=1)


FAMILY = Family(
    MIN_RESOLUTION,
    generator=lambda m, resolution, channels, classes: Generator(resolution, channels, m.z_dim, m.g_channels, classes),
    discriminator=lambda m, resolution, channels, classes: Discriminator(resolution, channels, m.d_channels, classes),
)
