"""`gan-dist sample`: images from a checkpoint's generator (the EMA one unless --raw), of the asked classes when it
is class-conditional."""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from gan_dist import checkpoint, storage
from gan_dist.errors import UserError
from gan_dist.imaging import png_bytes, to_uint8
from gan_dist.models import build_generator

SAMPLE_PATTERN = "sample_*.png"
LABELS_FILE = "labels.csv"  # conditional samples: file,label,class_name per image
# What torch.Generator.manual_seed takes (negative seeds wrap modulo 2**64); beyond it, an overflow traceback.
SEED_RANGE = (-(2**63), 2**64 - 1)


@dataclass
class Generator:
    net: torch.nn.Module
    class_names: list[str]  # empty for an unconditional generator
    uri: str
    resolution: int
    channels: int
    step: int | None  # the checkpoint's training step, when its meta.json says


def load_generator(checkpoint_uri: str, device: torch.device, raw: bool = False, use: str = "sample") -> Generator:
    """The generator of a checkpoint that serves `use` (sample, explore): its export (the EMA generator when the run
    kept one), or with `raw` the trained G from state.pt."""
    meta = checkpoint.load_meta(checkpoint_uri)
    export = checkpoint.expect(meta, use, checkpoint_uri)[0]
    saved = checkpoint.read_model(checkpoint_uri, meta)
    images = saved.images.get("train")
    if images is None:
        raise checkpoint.CorruptCheckpoint(f"{checkpoint_uri}: meta.json does not describe a generator's images")
    class_names = images.class_names if saved.model.conditional else []
    G = build_generator(saved.model, images.resolution, images.channels, len(class_names))
    raw_state = checkpoint.load_state(checkpoint_uri).get("nets", {}).get("G") if raw else None
    if raw and raw_state is None:
        raise checkpoint.CorruptCheckpoint(f"{checkpoint_uri}: state.pt holds no trained generator G for --raw")
    checkpoint.load_weights(G, checkpoint_uri, export, raw_state)
    return Generator(G.to(device).eval(), class_names, checkpoint_uri, images.resolution, images.channels,
                     meta.get("step"))


def check_sample_args(checkpoint_uri: str, out: str, seed: int) -> None:
    """One line, before the generator is loaded, for what would otherwise fail after it or overwrite earlier
    samples (refused: they may be the only copy of an earlier draw)."""
    if not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise UserError(f"--seed {seed} is out of range; pass an integer from {SEED_RANGE[0]} to {SEED_RANGE[1]}")
    storage.check_output_dir(out, "--out")
    existing = fnmatch.filter(storage.list_dir(out), SAMPLE_PATTERN)
    if existing:
        raise UserError(f"{out} already holds {len(existing)} {SAMPLE_PATTERN}; choose another --out or delete them")
    storage.check_bucket(checkpoint_uri)


def resolve_classes(requested: list[str], generator: Generator) -> list[int]:
    """--class values (an index, a class name, or `all`) -> class indices; every class when none is asked of a
    conditional generator."""
    names = generator.class_names
    if not names:
        if requested:
            raise UserError(f"--class: {generator.uri} holds an unconditional generator (trained with "
                            f"model.conditional=false); drop --class")
        return []
    if not requested or "all" in requested:
        return list(range(len(names)))
    listed = ", ".join(f"{i}={name}" for i, name in enumerate(names[:20])) + (", ..." if len(names) > 20 else "")
    indices = []
    for value in requested:
        if value in names:
            indices.append(names.index(value))
        elif value.lstrip("-").isdigit():
            if not 0 <= int(value) < len(names):
                raise UserError(f"--class {value} is out of range: the generator has {len(names)} classes, 0 to "
                                f"{len(names) - 1} ({listed})")
            indices.append(int(value))
        else:
            raise UserError(f"--class {value!r} is not one of the generator's classes ({listed}) nor 'all'")
    return indices


def check_truncation(psi: float) -> None:
    if not 0.0 <= psi <= 1.0:
        raise UserError(f"--truncation {psi} is out of range; pass a value from 0 (the average image) to 1 (no "
                        f"truncation)")


def truncated(z: torch.Tensor, psi: float) -> torch.Tensor:
    """The truncation trick in z: each latent moved toward the prior's mean (0) by 1-psi, trading variety for
    fidelity. psi 1 leaves z as drawn."""
    return z if psi == 1.0 else z * psi


@torch.no_grad()
def generate(generator: Generator, num: int, seed: int, classes: list[int], batch_size: int = 256,
             device: str | torch.device = "cpu",
             truncation: float = 1.0) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """`num` images in batches: (uint8 B×C×H×W, the class of each or None), from latents seeded by `seed` and
    truncated by `truncation`; for a conditional generator each of `classes` in turn, an equal share of each."""
    check_truncation(truncation)
    G = generator.net
    noise = torch.Generator(device=device).manual_seed(seed)
    for start in range(0, num, batch_size):
        n = min(batch_size, num - start)
        z = truncated(torch.randn(n, G.z_dim, generator=noise, device=device), truncation)
        labels = class_labels(classes, range(start, start + n), device)
        yield to_uint8(G(z, labels)), labels


def class_labels(classes: list[int], rows: range, device: str | torch.device = "cpu") -> torch.Tensor | None:
    """The class of each image of `rows` (indices among all images drawn): the asked classes in turn, by index, so
    the classes do not depend on how the images are split into batches or blocks. None for no classes."""
    if not classes:
        return None
    return torch.tensor([classes[i % len(classes)] for i in rows], device=device)


def write_samples(checkpoint_uri: str, num: int, out: str, seed: int = 0, batch_size: int = 256,
                  device: str = "cpu", classes: list[str] | None = None, raw: bool = False,
                  truncation: float = 1.0) -> list[str]:
    """Write `num` PNGs (sample_00000.png, ...) under `out`, local or object storage; for a conditional generator
    an equal share of each asked class, in turn, and labels.csv naming each image's class."""
    check_truncation(truncation)
    check_sample_args(checkpoint_uri, out, seed)
    _, generator = checkpoint.load_newest(checkpoint_uri, lambda uri: load_generator(uri, torch.device(device), raw),
                                          lambda warning: print(warning, file=sys.stderr))
    asked = resolve_classes(classes or [], generator)
    written, rows = [], ["file,label,class_name"]
    for images, labels in generate(generator, num, seed, asked, batch_size, device, truncation):
        for image, label in zip(images, labels.tolist() if labels is not None else [None] * len(images)):
            name = f"sample_{len(written):05d}.png"
            storage.write_bytes(storage.join(out, name), png_bytes(image))
            written.append(storage.join(out, name))
            if label is not None:
                rows.append(f"{name},{label},{_csv_field(generator.class_names[label])}")
    if asked:
        storage.write_bytes(storage.join(out, LABELS_FILE), ("\n".join(rows) + "\n").encode())
    return written


def _csv_field(text: str) -> str:
    return f'"{text.replace(chr(34), chr(34) * 2)}"' if any(c in text for c in ',"\n') else text
