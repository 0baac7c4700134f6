"""Makes folders of the files users really have: many formats and modes, and the broken files that come with them."""

from __future__ import annotations

import io
import os
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

GOOD_KINDS = ("png-rgb", "jpeg-rgb", "png-gray", "png-rgba", "gif-palette", "jpeg-cmyk", "png-16bit", "bmp-rgb",
              "webp-rgb", "tiff-rgb", "png-la", "jpeg-exif-rotated", "png-large", "png-wide")


def _image(kind: str, rng: np.random.Generator) -> tuple[Image.Image, str, dict]:
    side = int(rng.integers(24, 72))
    rgb = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    if kind == "png-gray":
        return Image.fromarray(rgb[:, :, 0], "L"), ".png", {}
    if kind == "png-rgba":
        return Image.fromarray(np.dstack([rgb, rgb[:, :, :1]])), ".png", {}  # mode RGBA
    if kind == "png-la":
        return Image.merge("LA", [Image.fromarray(rgb[:, :, 0]), Image.fromarray(rgb[:, :, 1])]), ".png", {}
    if kind == "gif-palette":
        return Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE), ".gif", {}
    if kind == "jpeg-cmyk":
        return Image.fromarray(rgb).convert("CMYK"), ".jpg", {}
    if kind == "png-16bit":
        return Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257), ".png", {}  # mode I;16
    if kind == "jpeg-exif-rotated":
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotate 90° on display
        return Image.fromarray(rgb[:, : side // 2]), ".jpeg", {"exif": exif}
    if kind == "png-large":
        return Image.fromarray(np.resize(rgb, (480, 640, 3))), ".png", {}
    if kind == "png-wide":
        return Image.fromarray(np.resize(rgb, (20, 200, 3))), ".png", {}
    suffix = {"png-rgb": ".png", "jpeg-rgb": ".jpg", "bmp-rgb": ".bmp", "webp-rgb": ".webp", "tiff-rgb": ".tif"}[kind]
    return Image.fromarray(rgb), suffix, {}


def _encoded(image: Image.Image, suffix: str, extra: dict) -> bytes:
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".gif": "GIF", ".bmp": "BMP", ".webp": "WEBP",
           ".tif": "TIFF"}[suffix]
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **extra)
    return buffer.getvalue()


def decompression_bomb() -> bytes:
    """A tiny PNG that claims 12,000 x 12,000 pixels (144 M, over PIL's 89 M limit)."""
    buffer = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_mixed_folder(root: Path, good: int, classes: int = 3, seed: int = 0) -> Counter:
    """`good` decodable images in `classes` class folders, plus one of each kind of bad input.
    Returns the skip reasons the bad inputs must produce."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
    for i in range(good):
        kind = GOOD_KINDS[i % len(GOOD_KINDS)]
        image, suffix, extra = _image(kind, rng)
        (root / f"class_{i % classes}" / f"{i:05d}-{kind}{suffix}").write_bytes(_encoded(image, suffix, extra))
    bad = root / "class_0"
    valid_jpeg = _encoded(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), ".jpg", {})
    (bad / "zero-bytes.png").write_bytes(b"")
    (bad / "truncated.jpg").write_bytes(valid_jpeg[: len(valid_jpeg) // 3])
    (bad / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 256, 500, dtype=np.uint8)))
    (bad / "not-an-image.jpg").write_bytes(b"<html>this is a web page saved with the wrong name</html>")
    (bad / "notes.txt").write_text("not an image")
    (bad / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (bad / "bomb.png").write_bytes(decompression_bomb())
    (bad / "tiny.png").write_bytes(_encoded(Image.new("RGB", (2, 2)), ".png", {}))
    os.symlink(root / "nowhere.png", bad / "dangling-link.png")  # listed, but reading it fails
    (root / "stray-in-root.png").write_bytes(_encoded(Image.new("RGB", (32, 32)), ".png", {}))
    return Counter({
        "empty file": 1, "corrupt or truncated": 1, "not a decodable image": 2, "not an image file": 2,
        "decompression bomb": 1, "too small": 1, "unreadable (No such file or directory)": 1,
        "outside the class folders": 1,
    })
