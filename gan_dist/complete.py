"""`gan-dist complete`: fill holes in a folder of images (local or s3://) with an inpainting checkpoint's completion
net, one PNG per input under the same relative name. Inputs are centre-cropped and resized to the resolution the
net was trained at; the holes are a centred square over a quarter of each image (`center`), drawn per image from
the seed as in training (`random`), or a mask image of your own (white = hole)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from pydantic import TypeAdapter, ValidationError

from gan_dist import checkpoint, seeds, storage
from gan_dist.config import MASK_KINDS, ModelConfig
from gan_dist.data.images import Skip, decode_file
from gan_dist.data.prepare import SkipReport
from gan_dist.errors import UserError
from gan_dist.eval.completion import complete_u8
from gan_dist.masks import center_masks, draw_masks
from gan_dist.models import build_completer
from gan_dist.translate import BATCH, Translator, check_translate_args, map_folder

MASKS = ("center", "random")  # or a mask image's path


def is_completion(meta: dict) -> bool:
    return checkpoint.task_kind(meta) == "inpaint"


def load_completer(checkpoint_uri: str, device: torch.device) -> Translator:
    """The checkpoint's completion net, from completer.safetensors."""
    meta = checkpoint.load_meta(checkpoint_uri)
    if not is_completion(meta):
        raise UserError(f"{checkpoint_uri} is not an inpainting checkpoint (its task is "
                        f"{checkpoint.task_kind(meta)}); train one with the inpaint-digits preset or --set "
                        f"task.kind=inpaint")
    try:
        model = TypeAdapter(ModelConfig).validate_python(meta["config"]["model"])
        resolution, channels = meta["data"]["resolution"], meta["data"]["channels"]
    except (KeyError, TypeError, ValidationError):
        raise checkpoint.CorruptCheckpoint(f"{checkpoint_uri}: meta.json does not describe a completion net") from None
    net = build_completer(model, channels)
    net.load_state_dict(checkpoint.load_export(checkpoint_uri, "completer"))
    return Translator(net.to(device).eval(), "", resolution, channels, 2 ** model.downsamplings)


def mask_image(uri: str, resolution: int) -> torch.Tensor:
    """A mask image (any size; white, above mid grey, = hole) -> float 1×1×R×R, resized with nearest neighbours."""
    try:
        image = decode_file(storage.read_bytes(uri)).convert("L")
    except Skip as reason:
        raise UserError(f"--mask {uri} is not a readable image ({reason}); pass center, random or a PNG whose white "
                        f"pixels mark the hole") from None
    array = np.asarray(image.resize((resolution, resolution), Image.Resampling.NEAREST)) > 127
    if not array.any():
        raise UserError(f"--mask {uri} has no white pixels, so there is no hole to fill; white marks the hole")
    return torch.from_numpy(array).float().view(1, 1, resolution, resolution)


def masks_for(mask: str, resolution: int, seed: int) -> Callable[[int, int], torch.Tensor]:
    """(start, n) -> the masks of inputs start .. start+n-1: a function of each input's index, not of batching."""
    if mask == "center":
        return lambda start, n: center_masks(n, resolution)
    if mask == "random":
        def drawn(start: int, n: int) -> torch.Tensor:
            return torch.cat([draw_masks(MASK_KINDS, 1, resolution,
                                         torch.Generator().manual_seed(seeds.derive(seed, "masks", start + i)))
                              for i in range(n)])
        return drawn
    fixed = mask_image(mask, resolution)
    return lambda start, n: fixed.expand(n, -1, -1, -1)


def complete_folder(checkpoint_uri: str, input_uri: str, out: str, mask: str = "center", seed: int = 0,
                    device: str = "cpu", batch_size: int = BATCH) -> tuple[int, SkipReport, str]:
    """Complete every image under `input_uri` into `out`; (images written, what was skipped, the checkpoint)."""
    names = check_translate_args(input_uri, out, "model")
    if mask not in MASKS and not storage.exists(mask):
        raise UserError(f"--mask {mask!r} is neither center, random nor an existing mask image")
    dev = torch.device(device)
    uri, completer = checkpoint.load_newest(checkpoint_uri, lambda c: load_completer(c, dev),
                                            lambda warning: print(warning, flush=True))
    holes = masks_for(mask, completer.resolution, seed)

    def convert(arrays: np.ndarray, start: int) -> torch.Tensor:
        images = torch.from_numpy(arrays)
        return complete_u8(completer.net, images, holes(start, len(images)), dev)

    written, skipped = map_folder(input_uri, names, out, completer, "model", batch_size, "complete", convert)
    return written, skipped, uri
