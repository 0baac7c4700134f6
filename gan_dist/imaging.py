"""Image conversions in one place: stored uint8 <-> the models' [-1, 1] floats, PNG bytes, grids."""

from __future__ import annotations

import io

import torch
from PIL import Image


def to_model_range(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 B×H×W×C (as stored) -> float B×C×H×W in [-1, 1], on whatever device the batch is."""
    return images_u8.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float B×C×H×W in [-1, 1] -> uint8 B×C×H×W for PNGs."""
    return images.float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def pil_image(image_chw_u8: torch.Tensor) -> Image.Image:
    """uint8 C×H×W -> a PIL image: 'L' for one channel, 'RGB' for three."""
    array = image_chw_u8.permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def png_bytes(image_chw_u8: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    pil_image(image_chw_u8).save(buffer, format="PNG")
    return buffer.getvalue()


def gif_bytes(frames_chw_u8: list[torch.Tensor], frame_ms: int) -> bytes:
    """An animated GIF of uint8 C×H×W frames of one size, looping forever."""
    first, *rest = [pil_image(frame) for frame in frames_chw_u8]
    buffer = io.BytesIO()
    first.save(buffer, format="GIF", save_all=True, append_images=rest, duration=frame_ms, loop=0)
    return buffer.getvalue()


def grid_image(images_u8: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    """uint8 B×C×H×W -> one uint8 C×H'×W' image of the batch tiled `nrow` to a row."""
    from torchvision.utils import make_grid

    return make_grid(images_u8, nrow=nrow, padding=2, pad_value=0)
