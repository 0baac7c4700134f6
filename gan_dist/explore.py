"""`gan-dist explore`: pictures of what a generator learned. Paths between latents (slerp), the truncation trade of
variety for fidelity, and for a class-conditional generator the same latents across every class; each a PNG grid
and an animated GIF, optionally logged to W&B."""

from __future__ import annotations

import io
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from gan_dist import checkpoint, seeds, storage
from gan_dist.config import LogConfig
from gan_dist.errors import UserError
from gan_dist.imaging import gif_bytes, grid_image, png_bytes, to_uint8
from gan_dist.sample import Generator, check_truncation, load_generator, truncated

FIGURES = ("interpolations", "truncation", "classes")
OUTPUT_FILES = frozenset(f"{name}.{ext}" for name in FIGURES for ext in ("png", "gif"))
DEFAULT_PSIS = tuple(round(1.0 - i / 10, 1) for i in range(11))  # 1.0, 0.9, ..., 0.0
# A path is smooth at 10 frames a second; a truncation step or another latent needs a moment to be seen.
FRAME_MS = {"interpolations": 100, "truncation": 250, "classes": 400}
# The `figure` index of seeds.derive(seed, "explore", figure, index): the ends of the paths (2r and 2r+1 for row r,
# whose start the truncation rows share), and the latents shared by the class rows.
PATH_ENDS, CLASS_LATENTS = 0, 1


@dataclass
class ExploreOptions:
    rows: int = 6
    frames: int = 10
    per_class: int = 10
    psis: tuple[float, ...] = DEFAULT_PSIS
    seed: int = 0
    raw: bool = False
    device: str = "cpu"
    wandb: str = "disabled"


@dataclass
class Figure:
    name: str
    images: torch.Tensor  # uint8 rows × columns × C×H×W: the PNG is this grid, the GIF a frame per column
    bounce: bool = False  # the GIF plays the columns forth and back (a path), not forth and again (a sweep)

    def grid(self) -> torch.Tensor:
        return _grid(self.images.flatten(0, 1), self.images.shape[1])

    def frames(self) -> list[torch.Tensor]:
        frames = [_grid(self.images[:, t], frame_columns(len(self.images))) for t in range(self.images.shape[1])]
        return frames + frames[-2:0:-1] if self.bounce else frames  # ends once each: no stall at the turns


def parse_psis(text: str) -> tuple[float, ...]:
    """--truncation's comma-separated psi values (check_explore_args checks their range)."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"--truncation {text!r} is not a comma-separated list of numbers, e.g. 1,0.7,0.5,0") from None


def check_explore_args(checkpoint_uri: str, out: str, options: ExploreOptions) -> None:
    """One line, before the generator is loaded, for what would fail after it or overwrite an earlier exploration."""
    if not 0 <= options.seed <= seeds.MAX_SEED:
        raise UserError(f"--seed {options.seed} is out of range; pass an integer from 0 to {seeds.MAX_SEED}")
    for flag, value in (("--rows", options.rows), ("--per-class", options.per_class)):
        if value < 1:
            raise UserError(f"{flag} {value}: pass at least 1")
    if options.frames < 2:
        raise UserError(f"--frames {options.frames}: a path needs at least 2 frames, its two ends")
    if len(options.psis) < 2:
        raise UserError("--truncation needs at least 2 values to show a trade, e.g. 1,0.5,0")
    for psi in options.psis:
        check_truncation(psi)
    storage.check_output_dir(out, "--out")
    existing = sorted(OUTPUT_FILES.intersection(storage.list_dir(out)))
    if existing:
        raise UserError(f"{out} already holds an exploration ({', '.join(existing)}); choose another --out or "
                        f"delete them")
    storage.check_bucket(checkpoint_uri)


def _grid(images: torch.Tensor, columns: int) -> torch.Tensor:
    """grid_image with a grayscale generator's one channel kept (make_grid repeats it to three): 'L' pictures."""
    return grid_image(images, nrow=columns)[: images.shape[1]]


def frame_columns(n: int) -> int:
    """Columns of a near-square grid of n tiles: a divisor of n when one is near, so no tile is left blank."""
    side = math.ceil(math.sqrt(n))
    return next((c for c in range(side, 2 * side) if n % c == 0), side)


def latent(seed: int, figure: int, index: int, z_dim: int) -> torch.Tensor:
    """One latent from its own CPU stream: the same on any device, and for any --rows or --per-class."""
    noise = torch.Generator().manual_seed(seeds.derive(seed, "explore", figure, index))
    return torch.randn(z_dim, generator=noise)


def slerp(a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """`steps` points on the great circle from a to b (both ends included), their norms between those of the ends:
    Gaussian latents live near a sphere, and a straight line's middle falls inside it, where G saw no latents."""
    t = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)[:, None]
    a64, b64 = a.double(), b.double()
    omega = torch.arccos(torch.clamp(torch.dot(a64 / a64.norm(), b64 / b64.norm()), -1.0, 1.0))
    if torch.sin(omega) < 1e-6:  # (anti)parallel ends: the circle is not defined, the line is as good
        return ((1 - t) * a64 + t * b64).to(a.dtype)
    return ((torch.sin((1 - t) * omega) * a64 + torch.sin(t * omega) * b64) / torch.sin(omega)).to(a.dtype)


@torch.no_grad()
def render(generator: Generator, rows: list[torch.Tensor], labels: Sequence[int | None],
           device: torch.device) -> torch.Tensor:
    """uint8 rows × columns × C×H×W: each row's latents (columns × z_dim) in the row's class (None:
    unconditional), a forward per row."""
    images = []
    for z, label in zip(rows, labels):
        classes = None if label is None else torch.full((len(z),), label, device=device)
        images.append(to_uint8(generator.net(z.to(device), classes)).cpu())
    return torch.stack(images)


def draw(generator: Generator, options: ExploreOptions, device: torch.device) -> list[Figure]:
    z_dim, classes = generator.net.z_dim, len(generator.class_names)
    ends = [(latent(options.seed, PATH_ENDS, 2 * r, z_dim), latent(options.seed, PATH_ENDS, 2 * r + 1, z_dim))
            for r in range(options.rows)]
    row_classes = [r % classes if classes else None for r in range(options.rows)]
    paths = [slerp(a, b, options.frames) for a, b in ends]
    sweeps = [torch.stack([truncated(a, psi) for psi in options.psis]) for a, _ in ends]
    figures = [Figure("interpolations", render(generator, paths, row_classes, device), bounce=True),
               Figure("truncation", render(generator, sweeps, row_classes, device))]
    if classes:
        shared = torch.stack([latent(options.seed, CLASS_LATENTS, c, z_dim) for c in range(options.per_class)])
        figures.append(Figure("classes", render(generator, [shared] * classes, range(classes), device)))
    return figures


def encode(figures: list[Figure]) -> dict[str, bytes]:
    """File name -> contents: each figure's PNG grid and GIF."""
    files = {}
    for figure in figures:
        files[f"{figure.name}.png"] = png_bytes(figure.grid())
        files[f"{figure.name}.gif"] = gif_bytes(figure.frames(), FRAME_MS[figure.name])
    return files


def log_to_wandb(files: dict[str, bytes], checkpoint_uri: str, out: str, options: ExploreOptions) -> None:
    """The pictures in a W&B run of their own (job type "explore") in the project the checkpoint's run logged to."""
    from gan_dist.tracking import WandbSink, wandb_run_id

    meta = checkpoint.load_meta(checkpoint_uri)
    log = LogConfig.model_validate(meta.get("config", {}).get("log", {})).model_copy(update={"wandb": options.wandb})
    run_dir = os.path.dirname(checkpoint_uri.rstrip("/"))  # the run's W&B name is its folder's name
    directory = os.environ.get("WANDB_DIR") or (None if storage.is_remote(out) else out)
    config = {"checkpoint": checkpoint_uri, "step": meta.get("step"), **asdict(options)}
    sink = WandbSink(log, wandb_run_id(storage.absolute_uri(out)), f"explore-{os.path.basename(run_dir)}", config,
                     directory, sys.stderr, job_type="explore")
    if sink.run is None:  # W&B is off (it said why): the files are written all the same
        return
    sink.log(dict(wandb_entry(name, data) for name, data in files.items()), step=0)
    sink.finish()


def wandb_entry(file_name: str, data: bytes) -> tuple[str, Any]:
    """A written file as a W&B key and media of the same bytes: explore/NAME for a PNG, explore/NAME_animation
    for a GIF (a W&B video, which plays it)."""
    import wandb
    from PIL import Image

    stem, ext = file_name.rsplit(".", 1)
    if ext == "gif":
        return f"explore/{stem}_animation", wandb.Video(io.BytesIO(data), format="gif")
    return f"explore/{stem}", wandb.Image(Image.open(io.BytesIO(data)))


def explore(checkpoint_uri: str, out: str, options: ExploreOptions) -> tuple[str, list[str]]:
    """Write the exploration of a checkpoint's generator (a run directory: its newest checkpoint) under `out`,
    local or object storage; returns the checkpoint used and the files written."""
    check_explore_args(checkpoint_uri, out, options)
    device = torch.device(options.device)
    uri, generator = checkpoint.load_newest(checkpoint_uri,
                                            lambda u: load_generator(u, device, options.raw, "explore"),
                                            lambda warning: print(warning, file=sys.stderr))
    files = encode(draw(generator, options, device))
    for name, data in files.items():
        storage.write_bytes(storage.join(out, name), data)
    if options.wandb != "disabled":
        log_to_wandb(files, uri, out, options)
    return uri, [storage.join(out, name) for name in files]
