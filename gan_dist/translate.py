"""`gan-dist translate`: a folder of images (local or s3://) through a translation checkpoint's translator, one PNG
per input under the same relative name. Images of any size: by default centre-cropped and resized to the model's
resolution (what it was trained on); with `--size native` the fully convolutional translator runs on each image at
its own size (cropped to a multiple of its downsampling). Unreadable files are skipped and counted, as `prepare`
skips them. An interrupted run is finished by running the same command again: outputs already written are kept and
skipped (each is written whole or not at all), and outputs of another command are never overwritten."""

from __future__ import annotations

import json
import os
import posixpath
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gan_dist import checkpoint, storage
from gan_dist.data.images import IMAGE_SUFFIXES, ImageSpec, Skip, decode_file, to_square_array
from gan_dist.data.prepare import SkipReport
from gan_dist.errors import UserError
from gan_dist.eval.translation import DIRECTIONS, translate_u8
from gan_dist.imaging import png_bytes
from gan_dist.models import build_translator, input_multiple
from gan_dist.progress import Progress

SIZES = ("model", "native")
BATCH = 64


@dataclass
class Translator:
    """A fully convolutional image-to-image net and the inputs it takes (completion nets too: `direction` "")."""

    net: torch.nn.Module
    direction: str
    resolution: int  # what it was trained on
    in_channels: int  # of the input images
    multiple: int  # input sides must be multiples of this (one halving per downsampling)


def is_translation(meta: dict) -> bool:
    return checkpoint.serves(meta, "translate")


def load_translator(checkpoint_uri: str, direction: str, device: torch.device) -> Translator:
    """The checkpoint's translator for `direction` (a2b or b2a), from translator_<direction>.safetensors."""
    meta = checkpoint.load_meta(checkpoint_uri)
    stems = checkpoint.expect(meta, "translate", checkpoint_uri)
    if f"translator_{direction}" not in stems:
        have = [stem.removeprefix("translator_") for stem in stems]
        raise UserError(f"{checkpoint_uri} has no {direction} translator (it translates {', '.join(have)} only); pass "
                        f"--direction {have[0]}")
    saved = checkpoint.read_model(checkpoint_uri, meta)
    source, target = (saved.images.get(name) for name in DIRECTIONS[direction])
    if source is None or target is None:
        raise checkpoint.CorruptCheckpoint(f"{checkpoint_uri}: meta.json does not describe the images of {direction}")
    net = build_translator(saved.model, source.channels, target.channels, source.resolution)
    checkpoint.load_weights(net, checkpoint_uri, f"translator_{direction}")
    return Translator(net.to(device).eval(), direction, source.resolution, source.channels,
                      input_multiple(saved.model, source.resolution))


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


def output_names(names: list[str]) -> dict[str, str]:
    """Each input's output: its name with .png for its extension; where inputs differ only in extension (x.png,
    x.PNG, x.jpg) each keeps its whole name (x.PNG.png, x.jpg.png; x.png stays x.png), so none replaces another."""
    plain = {name: output_name(name) for name in names}
    shared = Counter(plain.values())
    outputs = {}
    for name, out in plain.items():
        posix = name.replace(os.sep, "/")
        outputs[name] = out if shared[out] == 1 or posix == out else f"{posix}.png"
    clashes = [out for out, count in Counter(outputs.values()).items() if count > 1]
    if clashes:
        same = sorted(name for name, out in outputs.items() if out == clashes[0])
        raise UserError(f"inputs {', '.join(same)} would all be written as {clashes[0]}; rename one of them")
    return outputs


JOB_FILE = ".gan-dist-job.json"  # under --out (hidden: neither an output nor an input): what is writing there


@dataclass
class Batch:
    """Inputs mapped one-to-one onto PNGs under `out`: those still to write, and what writes them (`job`)."""

    input_uri: str
    out: str
    outputs: dict[str, str]  # input name -> output name, for every input
    pending: list[str]  # the inputs whose outputs are not there yet
    job: dict[str, Any]  # the command, its checkpoint, input and options: a rerun with the same one finishes it


def plan_batch(input_uri: str, out: str, job: dict[str, Any]) -> Batch:
    """One line, before the net is loaded, for inputs that are not there and an --out that cannot take the outputs
    or holds some from another command; the inputs still to write (all but those an interrupted run of this very
    `job` wrote)."""
    if not input_uri.strip():  # '' would quietly mean the current folder, read recursively
        raise UserError("--input is empty; pass a folder of images or an s3:// prefix")
    storage.check_bucket(job["checkpoint"])
    if not storage.is_folder(input_uri):
        raise UserError(f"--input {input_uri} is not a folder of images (or is empty); pass a folder or s3:// prefix")
    names = storage.list_files(input_uri)
    if not names:
        raise UserError(f"--input {input_uri} holds no files")
    storage.check_output_dir(out, "--out")
    outputs = output_names(names)
    job = {**job, "checkpoint": storage.absolute_uri(job["checkpoint"]), "input": storage.absolute_uri(input_uri)}
    existing = set(storage.list_files(out)) if storage.is_folder(out) else set()
    done = [name for name in names if outputs[name] in existing]
    if done and _recorded_job(out).get("job") != job:
        raise UserError(f"{out} already holds {len(done)} of the outputs (e.g. {outputs[done[0]]}), not written by "
                        f"this command with these options; choose another --out or delete them")
    if done:
        print(f"{out} holds {len(done)} of the {len(names)} outputs from an interrupted run of this command; writing "
              f"the other {len(names) - len(done)}", file=sys.stderr)
    return Batch(input_uri, out, outputs, [name for name in names if outputs[name] not in existing], job)


def _recorded_job(out: str) -> dict[str, Any]:
    try:
        record = json.loads(storage.read_bytes(storage.join(out, JOB_FILE)))
    except (FileNotFoundError, ValueError):  # none (outputs of an older gan-dist, or of something else), or torn
        return {}
    return record if isinstance(record, dict) else {}


def start_batch(batch: Batch, checkpoint_uri: str) -> None:
    """Record what writes the outputs, before the first one: which checkpoint of a run directory was loaded too, so
    that a rerun after the run saved a newer one does not mix the two."""
    recorded = _recorded_job(batch.out)
    if recorded.get("job") == batch.job and recorded.get("loaded", checkpoint_uri) != checkpoint_uri \
            and len(batch.pending) < len(batch.outputs):
        raise UserError(f"{batch.out} holds outputs of {recorded['loaded']}, and {batch.job['checkpoint']} now loads "
                        f"{checkpoint_uri}; pass {recorded['loaded']} as CKPT to finish them, or choose another --out")
    record = {"job": batch.job, "loaded": checkpoint_uri}
    storage.write_bytes(storage.join(batch.out, JOB_FILE), json.dumps(record, indent=1).encode())


def translate_folder(checkpoint_uri: str, input_uri: str, out: str, direction: str = "a2b", size: str = "model",
                     device: str = "cpu", batch_size: int = BATCH) -> tuple[int, SkipReport, str]:
    """Translate every image under `input_uri` into `out`; (images written, what was skipped, the checkpoint)."""
    if size not in SIZES:
        raise UserError(f"--size {size!r}: choose {' or '.join(SIZES)}")
    batch = plan_batch(input_uri, out, {"command": "translate", "checkpoint": checkpoint_uri, "direction": direction,
                                        "size": size})
    dev = torch.device(device)
    uri, translator = checkpoint.load_newest(checkpoint_uri, lambda c: load_translator(c, direction, dev),
                                             lambda warning: print(warning, flush=True))
    written, skipped = map_folder(batch, uri, translator, size, batch_size, "translate",
                                  lambda arrays, positions: translate_u8(translator.net, arrays, dev))
    return written, skipped, uri


def map_folder(batch: Batch, checkpoint_uri: str, model: Translator, size: str, batch_size: int, label: str,
               convert: Callable[[np.ndarray, list[int]], torch.Tensor]) -> tuple[int, SkipReport]:
    """Each readable input still to write (prepared for `model`'s resolution, channels and multiple) through
    `convert` (uint8 N×H×W×C and each one's position among all the inputs -> uint8 N×H×W×C), written as PNG under
    its output name in `out`, with a progress line; (images written, what was skipped)."""
    start_batch(batch, checkpoint_uri)
    skipped, written = SkipReport(), 0
    position = {name: index for index, name in enumerate(batch.outputs)}
    progress = Progress(len(batch.pending), label=label)
    for names, arrays in _batches(_inputs(batch.input_uri, batch.pending, model, size, skipped), batch_size):
        for name, image in zip(names, convert(arrays, [position[name] for name in names])):
            storage.write_bytes(storage.join(batch.out, batch.outputs[name]), png_bytes(image.permute(2, 0, 1)))
            written += 1
        progress.update(written + sum(skipped.counts.values()))
    progress.update(len(batch.pending), final=True)
    return written, skipped
