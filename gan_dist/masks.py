"""Holes for image completion, and filling them: float masks B×1×H×W, 1 where the image is missing, 0 where it
is known.

Three kinds, mixed per image: `center` (a centred square covering `CENTER_AREA` of the image: what completion is
judged on), `boxes` (1-3 rectangles, sides 1/8 to 1/2 of the image) and `strokes` (1-4 thick random-walk brush
strokes, the free-form masks of DeepFill v2). The few numbers that describe a mask are drawn on the CPU from a
seeded generator, so every device draws the same holes; the pixels are drawn on the device."""

from __future__ import annotations

import math

import torch

from gan_dist.config import MASK_KINDS
CENTER_AREA = 0.25  # a quarter of the image: a square of half the side
MAX_BOXES = 3
MAX_STROKES = 4
STROKE_VERTICES = 6


def center_side(size: int, area: float = CENTER_AREA) -> int:
    return max(1, round(size * math.sqrt(area)))


def center_masks(n: int, size: int, device: torch.device | str = "cpu", area: float = CENTER_AREA) -> torch.Tensor:
    """n identical masks: a centred square covering `area` of a size×size image."""
    side = center_side(size, area)
    top = (size - side) // 2
    mask = torch.zeros(n, 1, size, size, device=device)
    mask[:, :, top:top + side, top:top + side] = 1.0
    return mask


def draw_masks(kinds: tuple[str, ...], n: int, size: int, generator: torch.Generator,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """n masks, each of a kind drawn uniformly from `kinds`, from `generator` (a CPU generator)."""
    unknown = [kind for kind in kinds if kind not in MASK_KINDS]
    if unknown or not kinds:
        raise ValueError(f"mask kinds must be among {MASK_KINDS}, got {kinds}")
    choice = torch.tensor([MASK_KINDS.index(k) for k in kinds])[torch.randint(len(kinds), (n,), generator=generator)]
    boxes = _box_params(choice, size, generator)
    strokes, widths = _stroke_params(choice, size, generator)
    centres = torch.arange(size, dtype=torch.float32, device=device) + 0.5  # pixel centres
    masks = _rasterize_boxes(boxes.to(device), centres)  # the centre squares are boxes too
    if "strokes" in kinds:  # the stroke parameters are drawn either way: the stream is the same for every kind set
        masks = torch.maximum(masks, _rasterize_strokes(strokes.to(device), widths.to(device), centres))
    return masks.unsqueeze(1)


def _box_params(choice: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """n×MAX_BOXES×4 (top, left, bottom, right) in pixels; empty boxes (bottom = top) where a mask has fewer."""
    n = len(choice)
    sides = (size / 8 + torch.rand(n, MAX_BOXES, 2, generator=generator) * (size / 2 - size / 8)).round()
    corner = (torch.rand(n, MAX_BOXES, 2, generator=generator) * (size - sides + 1)).floor()
    count = torch.randint(1, MAX_BOXES + 1, (n, 1), generator=generator)
    boxes = torch.cat([corner, corner + sides], dim=2)
    boxes[torch.arange(MAX_BOXES) >= count] = 0.0
    boxes[choice != MASK_KINDS.index("boxes")] = 0.0
    side = center_side(size)
    top = (size - side) // 2
    boxes[choice == MASK_KINDS.index("center"), 0] = torch.tensor([top, top, top + side, top + side],
                                                                  dtype=boxes.dtype)
    return boxes


def _rasterize_boxes(boxes: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    y, x = centres.view(1, 1, -1, 1), centres.view(1, 1, 1, -1)
    top, left, bottom, right = (boxes[..., i, None, None] for i in range(4))
    inside = (y >= top) & (y < bottom) & (x >= left) & (x < right)  # n×boxes×H×W
    return inside.any(dim=1).float()


def _stroke_params(choice: torch.Tensor, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertices n×MAX_STROKES×STROKE_VERTICES×2 of random walks (steps of 1/16 to 1/4 of the image, any direction,
    kept inside it) and widths n×MAX_STROKES (1/16 to 1/6 of the image; 0 for strokes a mask does not have)."""
    n = len(choice)
    start = torch.rand(n, MAX_STROKES, 1, 2, generator=generator) * size
    angle = torch.rand(n, MAX_STROKES, STROKE_VERTICES - 1, generator=generator) * 2 * math.pi
    length = size / 16 + torch.rand(n, MAX_STROKES, STROKE_VERTICES - 1, generator=generator) * (size / 4 - size / 16)
    steps = torch.stack([angle.sin(), angle.cos()], dim=3) * length.unsqueeze(3)
    vertices = torch.cat([start, start + steps.cumsum(dim=2)], dim=2).clamp(0, size)
    widths = size / 16 + torch.rand(n, MAX_STROKES, generator=generator) * (size / 6 - size / 16)
    count = torch.randint(1, MAX_STROKES + 1, (n, 1), generator=generator)
    widths[torch.arange(MAX_STROKES) >= count] = 0.0
    widths[choice != MASK_KINDS.index("strokes")] = 0.0
    return vertices, widths


def _rasterize_strokes(vertices: torch.Tensor, widths: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Pixels within half a stroke's width of one of its segments; a segment at a time (memory: n×strokes×H×W)."""
    n, size = len(vertices), len(centres)
    pixels = torch.stack(torch.meshgrid(centres, centres, indexing="ij"), dim=-1).view(1, 1, size * size, 2)
    covered = torch.zeros(n, MAX_STROKES, size * size, dtype=torch.bool, device=vertices.device)
    radius = (widths / 2).unsqueeze(2)
    for i in range(STROKE_VERTICES - 1):
        a, b = vertices[:, :, i, None, :], vertices[:, :, i + 1, None, :]
        ab = b - a
        t = (((pixels - a) * ab).sum(-1) / ab.square().sum(-1).clamp_min(1e-6)).clamp(0, 1)
        distance = (pixels - (a + t.unsqueeze(-1) * ab)).norm(dim=-1)
        covered |= distance < radius
    return covered.any(dim=1).view(n, size, size).float()


def complete(net: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(completed, raw): the completion net's output `raw` in the holes of `images` (float B×C×H×W in [-1, 1];
    masks B×1×H×W), the known pixels kept. The holes reach the net as 0 (mid grey), never as the pixels they hide."""
    known = 1 - masks
    raw = net(torch.cat([images * known, masks.to(images.dtype)], dim=1))
    return images * known + raw * masks, raw
