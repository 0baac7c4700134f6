"""Networks only: no training logic, no Ray. Every model family is registered here, once."""

from __future__ import annotations

from typing import Any

from torch import nn

from gan_dist.errors import UserError
from gan_dist.models import dcgan, r3gan, resnet_sn
from gan_dist.models.common import Family
from gan_dist.models.spectral import update_spectral_norms

__all__ = ["FAMILIES", "build_discriminator", "build_generator", "build_patch_discriminator", "build_translator",
           "build_completer", "check_resolution", "check_translation_sizes", "check_unet_sizes", "input_multiple",
           "update_spectral_norms"]

# arch (the `model.arch` of config.ModelConfig) -> family. A new family: its module here and its config section.
FAMILIES: dict[str, Family] = {"dcgan": dcgan.FAMILY, "resnet_sn": resnet_sn.FAMILY, "r3gan": r3gan.FAMILY}


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


# Translation: the ResNet generator and PatchGAN discriminator CycleGAN and CUT share (model.arch=resnet_patchgan),
# and pix2pix's U-Net (model.arch=unet_patchgan).
def build_translator(model: Any, in_channels: int, out_channels: int, resolution: int | None = None) -> nn.Module:
    """The image-to-image generator `model` describes; `resolution`: the image side, for nets whose depth follows
    it (a U-Net of model.depth=null)."""
    if model.arch == "unet_patchgan":
        from gan_dist.models import unet

        return unet.build_generator(model, in_channels, out_channels, resolution)
    from gan_dist.models.translation import ResnetGenerator

    return ResnetGenerator(in_channels, out_channels, model.g_channels, model.blocks, model.downsamplings)


def input_multiple(model: Any, resolution: int) -> int:
    """A translator's input sides must be multiples of this (one halving per downsampling)."""
    if model.arch == "unet_patchgan":
        from gan_dist.models import unet

        return unet.input_multiple(model, resolution)
    return 2 ** model.downsamplings


def build_completer(model: Any, channels: int) -> nn.Module:
    """The completion net: a translator from the masked image and its mask (channels + 1) to the image."""
    return build_translator(model, channels + 1, channels)


def build_patch_discriminator(model: Any, channels: int) -> nn.Module:
    from gan_dist.models.translation import PatchDiscriminator

    return PatchDiscriminator(channels, model.d_channels, model.d_layers)


def patch_map_side(resolution: int, d_layers: int) -> int:
    """The side of a PatchGAN's logit map: 4x4 convs, `d_layers` of stride 2 (padding 1), then two of stride 1."""
    for _ in range(d_layers):
        resolution = (resolution + 2 - 4) // 2 + 1
    return resolution - 2


def check_translation_sizes(model: Any, a: Any, b: Any) -> None:
    """One line, before any work, when the two domains' images cannot train these translators (a, b: manifests)."""
    if a.resolution != b.resolution:
        raise UserError(f"datasets A and B hold {a.resolution}x{a.resolution} and {b.resolution}x{b.resolution} "
                        f"images; prepare both at one --resolution")
    multiple = 2 ** model.downsamplings
    if a.resolution % multiple:
        raise UserError(f"the translators' {model.downsamplings} downsamplings need image sides divisible by "
                        f"{multiple}, and these are {a.resolution}; prepare the datasets at a multiple of {multiple}")
    _check_patchgan(model, a.resolution)


def _check_patchgan(model: Any, side: int) -> None:
    if patch_map_side(side, model.d_layers) < 1:
        raise UserError(f"a PatchGAN with model.d_layers={model.d_layers} sees nothing of {side}x{side} images; "
                        f"lower model.d_layers or prepare larger images")


def check_unet_sizes(model: Any, manifest: Any) -> None:
    """One line, before any work, when a paired dataset's images cannot train pix2pix's nets (manifest: its own)."""
    from gan_dist.models import unet

    side = manifest.resolution
    if model.depth is None and side & (side - 1):
        raise UserError(f"a U-Net down to a 1x1 bottleneck (model.depth=null) needs a power-of-two side, and these "
                        f"images are {side}x{side}; set model.depth, or prepare the dataset at a power of two")
    multiple = unet.input_multiple(model, side)
    if side % multiple:
        raise UserError(f"the U-Net's {model.depth} stages need image sides divisible by {multiple}, and these are "
                        f"{side}; lower model.depth or prepare the dataset at a multiple of {multiple}")
    _check_patchgan(model, side)
