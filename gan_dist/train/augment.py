"""Differentiable augmentation of what a discriminator sees (DiffAugment, Zhao et al. 2020), each transform applied
to an image with probability p, and the adaptive p of ADA (Karras et al. 2020).

Every random number is drawn from a generator seeded by the caller (the project's seed function), and every shape
is fixed: the same draws on a resume, and nothing that asks the host a question, so the step stays capturable as
a CUDA graph. The transforms are DiffAugment's, for images in [-1, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gan_dist.train import collective

TRANSLATION_RATIO = 1 / 8  # shift by up to this share of the side, padding with zeros
CUTOUT_RATIO = 1 / 2  # a square this share of the side, zeroed


def augment(images: torch.Tensor, transforms: tuple[str, ...], p: torch.Tensor | float,
            generator: torch.Generator) -> torch.Tensor:
    """`images` B×C×H×W with each transform applied to each image with probability `p` (a 0-d device tensor or a
    float). Differentiable with respect to `images`."""
    for name, transform in TRANSFORMS.items():  # DiffAugment's order, whatever order they were asked in
        if name in transforms:
            images = transform(images, p, generator)
    return images


def _chosen(n: int, p: torch.Tensor | float, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """n booleans, each true with probability p, as B×1×1×1 for broadcasting."""
    return (torch.rand(n, device=images.device, generator=generator) < p).view(n, 1, 1, 1)


def _uniform(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(images.shape[0], 1, 1, 1, device=images.device, dtype=images.dtype, generator=generator)


def color(images: torch.Tensor, p: torch.Tensor | float, generator: torch.Generator) -> torch.Tensor:
    """Brightness ±0.5, saturation ×[0, 2], contrast ×[0.5, 1.5], each drawn per image."""
    n = images.shape[0]
    brightness = (_uniform(images, generator) - 0.5) * _chosen(n, p, images, generator)
    images = images + brightness
    saturation = torch.where(_chosen(n, p, images, generator), _uniform(images, generator) * 2, 1.0)
    mean = images.mean(dim=1, keepdim=True)
    images = (images - mean) * saturation + mean
    contrast = torch.where(_chosen(n, p, images, generator), _uniform(images, generator) + 0.5, 1.0)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - mean) * contrast + mean


def translation(images: torch.Tensor, p: torch.Tensor | float, generator: torch.Generator) -> torch.Tensor:
    """A shift of up to 1/8 of the side along each axis, drawn per image; what moves in is zero."""
    n, _, h, w = images.shape
    shift_h, shift_w = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    chosen = _chosen(n, p, images, generator).view(n, 1, 1)
    dy = torch.randint(-shift_h, shift_h + 1, (n, 1, 1), device=images.device, generator=generator) * chosen
    dx = torch.randint(-shift_w, shift_w + 1, (n, 1, 1), device=images.device, generator=generator) * chosen
    batch, rows, cols = torch.meshgrid(torch.arange(n, device=images.device), torch.arange(h, device=images.device),
                                       torch.arange(w, device=images.device), indexing="ij")
    rows = (rows + dy + 1).clamp(0, h + 1)  # into the zero border of the padded image
    cols = (cols + dx + 1).clamp(0, w + 1)
    padded = F.pad(images, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(images: torch.Tensor, p: torch.Tensor | float, generator: torch.Generator) -> torch.Tensor:
    """A square of half the side zeroed at a position drawn per image (it may hang over the edge)."""
    n, _, h, w = images.shape
    size_h, size_w = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    chosen = _chosen(n, p, images, generator).view(n, 1)
    top = torch.randint(0, h + (1 - size_h % 2), (n, 1), device=images.device, generator=generator) - size_h // 2
    left = torch.randint(0, w + (1 - size_w % 2), (n, 1), device=images.device, generator=generator) - size_w // 2
    rows, cols = torch.arange(h, device=images.device), torch.arange(w, device=images.device)
    in_rows = (rows >= top) & (rows < top + size_h) & chosen  # n×h
    in_cols = (cols >= left) & (cols < left + size_w)  # n×w
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])
    return images * keep.unsqueeze(1).to(images.dtype)


TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}


class AdaptiveProbability:
    """ADA's p, on the device: each D update adds the sign of D(real) (its mean over every rank's batch), and every
    `interval` steps p moves by ±(images since the last move)/(kimg × 1000) toward keeping that mean at `target`.
    Everything it keeps is in the checkpoint, identical on every rank."""

    def __init__(self, start: float, target: float, interval: int, kimg: float, images_per_update: int,
                 device: torch.device):
        self.target, self.interval = target, interval
        self.rate = images_per_update / (kimg * 1000)  # p's move per observed D update
        self.p = torch.tensor(float(start), device=device)
        self.signs = torch.zeros((), device=device)  # sum of the observed updates' mean sign since the last move
        self.updates = torch.zeros((), device=device)

    def observe(self, real_logits: torch.Tensor) -> None:
        self.signs += collective.mean_over_ranks(real_logits.detach().float().sign().mean())
        self.updates += 1

    def adjust(self, step: int) -> None:
        """After the step `step` (0-based): move p when an interval ends."""
        if (step + 1) % self.interval:
            return
        direction = torch.sign(self.signs / self.updates.clamp(min=1) - self.target)
        self.p = (self.p + direction * self.updates * self.rate).clamp(0.0, 1.0)
        self.signs.zero_()
        self.updates.zero_()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"p": self.p, "signs": self.signs, "updates": self.updates}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        device = self.p.device
        self.p, self.signs, self.updates = (state[k].to(device).clone() for k in ("p", "signs", "updates"))
