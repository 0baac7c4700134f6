"""`gan-dist translate`: a folder of images (local or s3://) through a translation checkpoint's translator, one PNG
per input under the same relative name. Images of any size: by default centre-cropped and resized to the model's
resolution (what it was trained on); with `--size native` the fully convolutional translator runs on each image at
its own size (cropped to a multiple of its downsampling). Unreadable files are skipped and counted, as `prepare`
skips them."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import TypeAdapter, ValidationError

from gan_dist import checkpoint, storage
from gan_dist.config import TASK_SECTIONS, ModelConfig
from gan_dist.data.images import IMAGE_SUFFIXES, ImageSpec, Skip, decode_file, to_square_array
from gan_dist.data.prepare import Progress, SkipReport
from gan_dist.errors import UserError
from gan_dist.eval.translation import DIRECTIONS, translate_u8
from gan_dist.imaging import png_bytes
from gan_dist.models import build_translator

SIZES = ("model", "native")
BATCH = 64


@dataclass
class Translator:
    """A fully convolutional image-to-image net and the inputs it takes (completion nets too: `direction` "")."""

    net: torch.nn.Module
    direction: str
    resolution: int  # what it was trained on
    in_channels: int  # of the input images
    multiple: int  # input sides must be multiples of this (2 ** downsamplings)


def is_translation(meta: dict) -> bool:
    return any(hasattr(section, "DIRECTIONS") for section in TASK_SECTIONS  # until expect(meta, use) lands
               if section.kind_name() == checkpoint.task_kind(meta))


def load_translator(checkpoint_uri: str, direction: str, device: torch.device) -> Translator:
    """The checkpoint's translator for `direction` (a2b or b2a), from translator_<direction>.safetensors."""
    meta = checkpoint.load_meta(checkpoint_uri)
    if not is_translation(meta):
        inpaint = checkpoint.task_kind(meta) == "inpaint"
        what, use = ("an inpainting", "complete") if inpaint else ("an image generator's", "sample")
        raise UserError(f"{checkpoint_uri} is {what} checkpoint, not a translator's; use gan-dist {use} for it")
    if f"translator_{direction}.safetensors" not in meta.get("files", {}):
        have = [d for d in DIRECTIONS if f"translator_{d}.safetensors" in meta.get("files", {})]
        raise UserError(f"{checkpoint_uri} has no {direction} translator (it translates {', '.join(have) or 'nothing'}"
                        f"{'; CUT learns one direction' if meta['config']['task']['kind'] == 'cut' else ''}); pass "
                        f"--direction {have[0] if have else 'a2b'}")
    try:
        model = TypeAdapter(ModelConfig).validate_python(meta["config"]["model"])
        source, target = (checkpoint.trained_on(meta)[name] for name in DIRECTIONS[direction])
        resolution, in_channels, out_channels = source["resolution"], source["channels"], target["channels"]
    except (KeyError, TypeError, ValidationError):
        raise checkpoint.CorruptCheckpoint(f"{checkpoint_uri}: meta.json does not describe a translator") from None
    net = build_translator(model, in_channels, out_channels)
    net.load_state_dict(checkpoint.load_export(checkpoint_uri, f"translator_{direction}"))
    return Translator(net.to(device).eval(), direction, resolution, in_channels, 2 ** model.downsamplings)


def _native(image, translator: Translator) -> np.ndarray:
    """The image at its own size, centre-cropped to multiples of the translator's downsampling."""
    width, height = image.size
    w, h = width - width % translator.multiple, height - height % translator.multiple
    if min(w, h) < translator.multiple:
        raise Skip("too small")
    left, top = (width - w) // 2, (height - h) // 2
    image = image.convert("L" if translator.in_channels == 1 else "RGB").crop((left, top, left + w, top + h))
    return np.asarray(image, dtype=np.uint8).reshape(h, w, translator.in_channels)


def _inputs(input_uri: str, names: list[str], translator: Translator, size: str,
            skipped: SkipReport) -> Iterator[tuple[str, np.ndarray]]:
    """(relative name, uint8 H×W×C) per readable input; the rest counted in `skipped`."""
    spec = ImageSpec(translator.resolution, translator.in_channels)
    for name in names:
        if os.path.splitext(name)[1].lower() not in IMAGE_SUFFIXES:
            skipped.add(name, "not an image file")
            continue
        try:
            image = decode_file(storage.read_bytes(storage.join(input_uri, name)))
            yield name, (to_square_array(image, spec) if size == "model" else _native(image, translator))
        except Skip as reason:
            skipped.add(name, str(reason))


def _batches(inputs: Iterator[tuple[str, np.ndarray]], size: int) -> Iterator[tuple[list[str], np.ndarray]]:
    """Up to `size` inputs of one shape at a time (native sizes differ from image to image)."""
    names: list[str] = []
    arrays: list[np.ndarray] = []
    for name, array in inputs:
        if arrays and (len(arrays) == size or array.shape != arrays[0].shape):
            yield names, np.stack(arrays)
            names, arrays = [], []
        names.append(name)
        arrays.append(array)
    if arrays:
        yield names, np.stack(arrays)


def output_name(name: str) -> str:
    return posixpath.splitext(name.replace(os.sep, "/"))[0] + ".png"


def check_translate_args(input_uri: str, out: str, size: str) -> list[str]:
    """One line, before the translator is loaded, for what would fail after it or overwrite earlier results;
    the input files' relative names."""
    if size not in SIZES:
        raise UserError(f"--size {size!r}: choose {' or '.join(SIZES)}")
    if not storage.is_folder(input_uri):
        raise UserError(f"--input {input_uri} is not a folder of images (or is empty); pass a folder or s3:// prefix")
    names = storage.list_files(input_uri)
    if not names:
        raise UserError(f"--input {input_uri} holds no files")
    storage.check_output_dir(out, "--out")
    existing = set(storage.list_files(out)) if storage.is_folder(out) else set()
    clash = [output_name(name) for name in names if output_name(name) in existing]
    if clash:
        raise UserError(f"{out} already holds {len(clash)} of the outputs (e.g. {clash[0]}); choose another --out or "
                        f"delete them")
    return names


def translate_folder(checkpoint_uri: str, input_uri: str, out: str, direction: str = "a2b", size: str = "model",
                     device: str = "cpu", batch_size: int = BATCH) -> tuple[int, SkipReport, str]:
    """Translate every image under `input_uri` into `out`; (images written, what was skipped, the checkpoint)."""
    names = check_translate_args(input_uri, out, size)
    dev = torch.device(device)
    uri, translator = checkpoint.load_newest(checkpoint_uri, lambda c: load_translator(c, direction, dev),
                                             lambda warning: print(warning, flush=True))
    written, skipped = map_folder(input_uri, names, out, translator, size, batch_size, "translate",
                                  lambda arrays, start: translate_u8(translator.net, arrays, dev))
    return written, skipped, uri


def map_folder(input_uri: str, names: list[str], out: str, model: Translator, size: str, batch_size: int, label: str,
               convert: Callable[[np.ndarray, int], torch.Tensor]) -> tuple[int, SkipReport]:
    """Each readable input of `names` (prepared for `model`'s resolution, channels and multiple) through `convert`
    (uint8 N×H×W×C and the first one's index among the readable inputs -> uint8 N×H×W×C), written as PNG under the
    same relative name in `out`, with a progress line; (images written, what was skipped)."""
    skipped, written = SkipReport(), 0
    progress = Progress(len(names), label=label)
    for batch_names, arrays in _batches(_inputs(input_uri, names, model, size, skipped), batch_size):
        for name, image in zip(batch_names, convert(arrays, written)):
            storage.write_bytes(storage.join(out, output_name(name)), png_bytes(image.permute(2, 0, 1)))
            written += 1
        progress.update(written + sum(skipped.counts.values()))
    progress.update(len(names), final=True)
    return written, skipped
