"""DCGAN (Radford et al. 2015) for any power-of-two resolution >= 8 and any channel count.

Class-conditional (num_classes > 0): G takes a learned label embedding next to z; D adds a projection term
(Miyato & Koyama 2018), the inner product of a class embedding with D's last features.

Generator and discriminator are built from the same (resolution, channels) pair, so they always agree on the
image shape: the discriminator's stride-2 stages mirror the generator's upsampling stages.
"""

from __future__ import annotations

import torch
from torch import nn

from gan_dist.models.common import Family, doublings

MIN_RESOLUTION = 8  # 4x4 doubled at least once; any power of two from here


def _init_weights(module: nn.Module) -> None:
    # The DCGAN paper's initialisation: N(0, 0.02) convolutions, N(1, 0.02) batch-norm scales.
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    def __init__(self, resolution: int, channels: int, z_dim: int = 100, width: int = 64, num_classes: int = 0,
                 label_dim: int = 16):
        super().__init__()
        stages = doublings(resolution, MIN_RESOLUTION, "DCGAN")
        self.z_dim, self.resolution, self.channels, self.num_classes = z_dim, resolution, channels, num_classes
        widths = [width * 2 ** (stages - 1 - i) for i in range(stages)]  # e.g. 256, 128, 64 for 32x32
        self.embed = nn.Embedding(num_classes, label_dim) if num_classes else None
        inputs = z_dim + (label_dim if num_classes else 0)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(inputs, widths[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        ]
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z: B×z_dim (and class indices B when conditional) -> images B×C×R×R in [-1, 1]."""
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.net(z.view(z.shape[0], z.shape[1], 1, 1))


class Discriminator(nn.Module):
    def __init__(self, resolution: int, channels: int, width: int = 64, num_classes: int = 0):
        super().__init__()
        stages = doublings(resolution, MIN_RESOLUTION, "DCGAN")
        widths = [width * 2**i for i in range(stages)]  # e.g. 64, 128, 256 for 32x32
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False)]
        self.net = nn.Sequential(*layers)
        self.apply(_init_weights)
        self.embed = None
        if num_classes:
            self.embed = nn.Embedding(num_classes, widths[-1])
            nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """images B×C×R×R (and class indices B when conditional) -> one logit per image (B,)."""
        if self.embed is None:
            return self.net(images).view(images.shape[0])
        features = self.net[:-1](images)
        projection = (self.embed(labels) * features.sum(dim=(2, 3))).sum(dim=1)
        return self.net[-1](features).view(images.shape[0]) + projection


FAMILY = Family(
    MIN_RESOLUTION,
    generator=lambda m, resolution, channels, classes: Generator(resolution, channels, m.z_dim, m.g_channels, classes,
                                                                 m.label_dim),
    discriminator=lambda m, resolution, channels, classes: Discriminator(resolution, channels, m.d_channels, classes),
)
