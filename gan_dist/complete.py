"""`gan-dist complete`: fill holes in a folder of images (local or s3://) with an inpainting checkpoint's completion
net, one PNG per input under the same relative name. Inputs are centre-cropped and resized to the resolution the
net was trained at; the holes are a centred square over a quarter of each image (`center`), drawn per image from
the seed as in training (`random`), or a mask image of your own (white = hole)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import pyarrow.fs as pafs
from PIL import Image

from gan_dist import checkpoint, seeds, storage
from gan_dist.config import MASK_KINDS
from gan_dist.data.images import Skip, decode_file
from gan_dist.data.prepare import SkipReport
from gan_dist.errors import UserError
from gan_dist.eval.completion import complete_u8
from gan_dist.masks import center_masks, draw_masks
from gan_dist.models import build_completer
from gan_dist.translate import BATCH, Translator, map_folder, plan_batch

MASKS = ("center", "random")  # or a mask image's path


def is_completion(meta: dict) -> bool:
    return checkpoint.serves(meta, "complete")


def load_completer(checkpoint_uri: str, device: torch.device) -> Translator:
    """The checkpoint's completion net, from its export that serves `complete` (completer.safetensors)."""
    meta = checkpoint.load_meta(checkpoint_uri)
    export = checkpoint.expect(meta, "complete", checkpoint_uri)[0]
    saved = checkpoint.read_model(checkpoint_uri, meta)
    images = saved.images.get("train")
    if images is None:
        raise checkpoint.CorruptCheckpoint(f"{checkpoint_uri}: meta.json does not describe the images it completes")
    net = checkpoint.load_weights(build_completer(saved.model, images.channels), checkpoint_uri, export)
    return Translator(net.to(device).eval(), "", images.resolution, images.channels, 2 ** saved.model.downsamplings)


def check_mask(mask: str, seed: int) -> None:
    """One line, before any work, for a --mask that is neither a kind nor a mask image, and a seed random masks
    cannot take."""
    if mask == "random" and not 0 <= seed <= seeds.MAX_SEED:
        raise UserError(f"--seed {seed} is out of range for --mask random; pass an integer from 0 to "
                        f"{seeds.MAX_SEED}")
    if mask in MASKS:
        return
    if not mask.strip():
        raise UserError("--mask is empty; pass center, random or a mask image")
    fs, path = storage.resolve(mask)
    with storage.user_errors(mask, "reach"):
        kind = fs.get_file_info(path).type
    if kind != pafs.FileType.File:
        what = "a folder" if kind == pafs.FileType.Directory else "neither center, random nor an existing file"
        raise UserError(f"--mask {mask!r} is {what}; pass center, random or a mask image whose white pixels mark "
                        f"the hole")


def mask_image(uri: str, resolution: int) -> torch.Tensor:
    """A mask image (any size; white, above mid grey, = hole) -> float 1×1×R×R, resized with nearest neighbours."""
    try:
        with storage.user_errors(uri, "read"):
            data = storage.read_bytes(uri)
        image = decode_file(data).convert("L")
    except Skip as reason:
        raise UserError(f"--mask {uri} is not a readable image ({reason}); pass center, random or a PNG whose white "
                        f"pixels mark the hole") from None
    array = np.asarray(image.resize((resolution, resolution), Image.Resampling.NEAREST)) > 127
    if not array.any():
        raise UserError(f"--mask {uri} has no white pixels, so there is no hole to fill; white marks the hole")
    return torch.from_numpy(array).float().view(1, 1, resolution, resolution)


def masks_for(mask: str, resolution: int, seed: int) -> Callable[[int, int], torch.Tensor]:
    """(start, n) -> the masks of inputs start .. start+n-1: a function of each input's index, not of batching (nor
    of which inputs an interrupted run had written)."""
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
    check_mask(mask, seed)
    options = {"mask": mask if mask in MASKS else storage.absolute_uri(mask), "seed": seed}
    batch = plan_batch(input_uri, out, {"command": "complete", "checkpoint": checkpoint_uri, **options})
    dev = torch.device(device)
    uri, completer = checkpoint.load_newest(checkpoint_uri, lambda c: load_completer(c, dev),
                                            lambda warning: print(warning, flush=True))
    holes = masks_for(mask, completer.resolution, seed)

    def convert(arrays: np.ndarray, positions: list[int]) -> torch.Tensor:
        return complete_u8(completer.net, torch.from_numpy(arrays), torch.cat([holes(i, 1) for i in positions]), dev)

    written, skipped = map_folder(batch, uri, completer, "model", batch_size, "complete", convert)
    return written, skipped, uri
