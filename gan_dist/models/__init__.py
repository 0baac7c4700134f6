"""Networks only: no training logic, no Ray."""

from __future__ import annotations

from torch import nn

from gan_dist.errors import UserError
from gan_dist.models import dcgan, resnet_sn
from gan_dist.models.dcgan import Discriminator, Generator
from gan_dist.models.spectral import has_spectral_norm, update_spectral_norms

__all__ = [
    "Discriminator",
    "Generator",
    "build_generator",
    "build_discriminator",
    "check_resolution",
    "has_spectral_norm",
    "update_spectral_norms",
]


# The smallest square side each architecture takes; every power of two from there up works.
MIN_RESOLUTION = {"dcgan": dcgan.MIN_RESOLUTION, "resnet_sn": resnet_sn.MIN_RESOLUTION}


def check_resolution(resolution: int, arch: str | None = None) -> None:
    """One line, before any work, when no net of `arch` (of any architecture, without one) takes this size."""
    archs = [arch] if arch else list(MIN_RESOLUTION)
    if any(resolution >= MIN_RESOLUTION[a] for a in archs) and not resolution & (resolution - 1):
        return
    subject = f"model.arch={arch} cannot" if arch else "no model can"
    takes = "; ".join(f"{name}: {low}, {low * 2}, {low * 4}, ... (powers of two)" for name, low in MIN_RESOLUTION.items())
    raise UserError(f"{subject} train on {resolution}x{resolution} images (resolutions each model takes: {takes}); "
                    f"prepare the dataset with one of them as --resolution")


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
