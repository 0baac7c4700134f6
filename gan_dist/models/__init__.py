"""Networks only: no training logic, no Ray. Every model family is registered here, once."""

from __future__ import annotations

from typing import Any

from torch import nn

from gan_dist.errors import UserError
from gan_dist.models import dcgan, resnet_sn
from gan_dist.models.common import Family
from gan_dist.models.spectral import update_spectral_norms

__all__ = ["FAMILIES", "build_discriminator", "build_generator", "check_resolution", "update_spectral_norms"]

# arch (the `model.arch` of config.ModelConfig) -> family. A new family: its module here and its config section.
FAMILIES: dict[str, Family] = {"dcgan": dcgan.FAMILY, "resnet_sn": resnet_sn.FAMILY}


def check_resolution(resolution: int, arch: str | None = None) -> None:
    """One line, before any work, when no net of `arch` (of any architecture, without one) takes this size."""
    archs = [arch] if arch else list(FAMILIES)
    if any(resolution >= FAMILIES[a].min_resolution for a in archs) and not resolution & (resolution - 1):
        return
    subject = f"model.arch={arch} cannot" if arch else "no model can"
    takes = "; ".join(f"{name}: {f.min_resolution}, {f.min_resolution * 2}, {f.min_resolution * 4}, ... (powers of two)"
                      for name, f in FAMILIES.items())
    raise UserError(f"{subject} train on {resolution}x{resolution} images (resolutions each model takes: {takes}); "
                    f"prepare the dataset with one of them as --resolution")


def build_generator(model: Any, resolution: int, channels: int, num_classes: int = 0) -> nn.Module:
    """The generator `model` (a config.ModelConfig section) describes; class-conditional when num_classes > 0."""
    return FAMILIES[model.arch].generator(model, resolution, channels, num_classes)


def build_discriminator(model: Any, resolution: int, channels: int, num_classes: int = 0) -> nn.Module:
    return FAMILIES[model.arch].discriminator(model, resolution, channels, num_classes)
