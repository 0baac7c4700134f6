"""Networks only: no training logic, no Ray."""

from __future__ import annotations

from torch import nn

from gan_dist.models import resnet_sn
from gan_dist.models.dcgan import Discriminator, Generator
from gan_dist.models.spectral import has_spectral_norm, update_spectral_norms

__all__ = [
    "Discriminator",
    "Generator",
    "build_generator",
    "build_discriminator",
    "has_spectral_norm",
    "update_spectral_norms",
]


def build_generator(arch: str, resolution: int, channels: int, z_dim: int, width: int) -> nn.Module:
    if arch == "dcgan":
        return Generator(resolution, channels, z_dim=z_dim, width=width)
    if arch == "resnet_sn":
        return resnet_sn.Generator(resolution, channels, z_dim=z_dim, width=width)
    raise ValueError(f"unknown architecture '{arch}'")


def build_discriminator(arch: str, resolution: int, channels: int, width: int) -> nn.Module:
    if arch == "dcgan":
        return Discriminator(resolution, channels, width=width)
    if arch == "resnet_sn":
        return resnet_sn.Discriminator(resolution, channels, width=width)
    raise ValueError(f"unknown architecture '{arch}'")
