"""One image -> a square uint8 H×W×C array at the target resolution, or a `Skip` that says why not.

Handles what real folders hold: EXIF-rotated photos, CMYK, palette, 16-bit, alpha and grayscale images,
truncated and corrupt files, decompression bombs, and images far from the target size.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gan_dist.errors import UserError

FILTERS = ("auto", "box", "bilinear", "lanczos")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


class Skip(Exception):
    """This input is left out of the dataset; the message is the reason, counted in the summary."""


@dataclass(frozen=True)
class ImageSpec:
    resolution: int
    channels: int | None  # 1 or 3; None: `prepare` picks 1 for a source without colour, else 3
    crop: str = "center"  # center | none (squash to square)
    resize_filter: str = "auto"  # auto: lanczos when shrinking, bilinear when enlarging (no ringing)
    min_size: int = 0  # images whose short side is smaller are skipped


def decode_file(data: bytes) -> Image.Image:
    """Bytes of an image file -> a fully loaded PIL image, or Skip."""
    if not data:
        raise Skip("empty file")
    with warnings.catch_warnings():
        # PIL only warns between 1x and 2x its pixel limit; a bomb that size still takes gigabytes.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise Skip("decompression bomb") from None
        except UnidentifiedImageError:
            raise Skip("not a decodable image") from None
        except (OSError, SyntaxError, ValueError, EOFError):
            raise Skip("corrupt or truncated") from None
    return ImageOps.exif_transpose(image)  # phone photos store rotation in EXIF


def _to_channels(image: Image.Image, channels: int) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit grayscale: keep the top 8 bits of a 16-bit range.
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray((np.clip(array, 0, 65535) / 257.0).round().astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels become white, as they show in a viewer, rather than whatever colour they hide.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("L" if channels == 1 else "RGB")  # CMYK, palette, YCbCr, 1-bit included


def _filter(name: str, source_side: int, resolution: int) -> Image.Resampling:
    if name == "auto":
        name = "lanczos" if source_side >= resolution else "bilinear"
    return {"box": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR,
            "lanczos": Image.Resampling.LANCZOS}[name]


def to_square_array(image: Image.Image, spec: ImageSpec) -> np.ndarray:
    """A decoded image -> uint8 R×R×C."""
    width, height = image.size
    if min(width, height) < max(spec.min_size, 1):
        raise Skip("too small")
    image = _to_channels(image, spec.channels)
    if spec.crop == "center" and width != height:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if image.size != (spec.resolution, spec.resolution):
        resample = _filter(spec.resize_filter, min(image.size), spec.resolution)
        image = image.resize((spec.resolution, spec.resolution), resample)
    array = np.asarray(image, dtype=np.uint8)
    return array.reshape(spec.resolution, spec.resolution, spec.channels)


FLOAT_RANGES = "[0, 1], [-1, 1] or [0, 255]"


def pixels_to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    """A whole image array -> uint8, its value range decided once from all of it: a per-image guess would scale a
    dark image unlike a bright one. Floats may be in [0, 1], [-1, 1] (tanh outputs) or [0, 255]; integers must
    already lie in 0..255; bool is a mask (False black, True white). Anything else is refused, never clipped."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    if array.size == 0:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        lo, hi = int(array.min()), int(array.max())
        if lo < 0 or hi > 255:
            hint = " (16-bit: x // 257)" if array.dtype == np.uint16 else ""
            raise UserError(f"{name}: {array.dtype} pixel values span {lo}..{hi}, outside 0..255; scale them to "
                            f"0..255{hint} and save them as uint8")
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.floating):
        raise UserError(f"{name}: images of dtype {array.dtype} are not pixels; save them as uint8 or float")
    lo, hi = float(array.min()), float(array.max())  # NaN propagates into both, so it fails every range below
    if 0 <= lo and hi <= 1:
        scale, offset = 255.0, 0.0
    elif -1 <= lo and hi <= 1:
        scale, offset = 127.5, 1.0
    elif 0 <= lo and hi <= 255:
        scale, offset = 1.0, 0.0
    else:
        raise UserError(f"{name}: float pixel values span {lo:g}..{hi:g}; accepted ranges are {FLOAT_RANGES} "
                        f"(no NaN or infinity): rescale the images into one of them")
    out = np.empty(array.shape, np.uint8)
    step = max(1, 2**24 // max(array[0].size, 1))  # ~128 MB of float64 at a time, not a copy of the whole array
    for start in range(0, len(array), step):
        chunk = (array[start:start + step].astype(np.float64) + offset) * scale
        out[start:start + step] = np.clip(np.rint(chunk), 0, 255)
    return out


def array_to_image(array: np.ndarray) -> Image.Image:
    """One uint8 H×W or H×W×C array -> PIL image."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(array)


def encode(array: np.ndarray, fmt: str) -> bytes:
    """uint8 R×R×C -> the bytes stored in a shard row."""
    if fmt == "raw":
        return array.tobytes()
    buffer = io.BytesIO()
    image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    if fmt == "png":
        image.save(buffer, format="PNG", compress_level=1)  # decode speed matters more than a few % of size
    else:
        image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()
