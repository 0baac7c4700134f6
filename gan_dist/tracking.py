"""Rank 0's outputs in the run directory: metrics as JSON lines, a console line per log, PNG sample grids."""

from __future__ import annotations

import io
import json
import sys
from typing import Any, TextIO

import torch
from PIL import Image
from torchvision.utils import make_grid

from gan_dist.runtime import storage

METRICS_FILE = "metrics.jsonl"


def png_bytes(image_chw_u8: torch.Tensor) -> bytes:
    array = image_chw_u8.permute(1, 2, 0).cpu().numpy()
    if array.shape[2] == 1:
        array = array[:, :, 0]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def grid_png(images_u8: torch.Tensor, nrow: int = 8) -> bytes:
    """uint8 B×C×H×W -> one PNG of the images tiled `nrow` to a row."""
    return png_bytes(make_grid(images_u8, nrow=nrow, padding=2, pad_value=0))


def format_line(metrics: dict[str, Any], total_steps: int) -> str:
    parts = [f"step {metrics['step']}/{total_steps}"]
    parts += [f"{key} {value:.4g}" for key, value in metrics.items() if key not in ("step", "images_seen")]
    return " | ".join(parts)


class RunTracker:
    """Appends metrics to `metrics.jsonl` (kept on resume) and writes sample grids under `samples/`."""

    def __init__(self, run_uri: str, total_steps: int, console: TextIO = sys.stdout):
        self.run_uri, self.total_steps, self.console = run_uri, total_steps, console
        self.metrics_uri = storage.join(run_uri, METRICS_FILE)
        # Object stores cannot append: keep the lines and rewrite the (small) file; local files are appended.
        self._lines: list[str] | None = None
        if storage.is_remote(run_uri):
            self._lines = storage.read_bytes(self.metrics_uri).decode().splitlines() if storage.exists(self.metrics_uri) else []

    def log(self, metrics: dict[str, Any]) -> None:
        self._append(json.dumps(metrics))
        print(format_line(metrics, self.total_steps), file=self.console, flush=True)

    def log_event(self, event: dict[str, Any]) -> None:
        """Something a person must know about (a restore, a skipped update): a JSON line and a console warning."""
        self._append(json.dumps(event))
        details = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in event.items() if k != "event")
        print(f"warning: {event['event']}: {details}", file=self.console, flush=True)

    def _append(self, line: str) -> None:
        if self._lines is None:
            fs, path = storage.resolve(self.metrics_uri)
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
            with fs.open_append_stream(path) as out:
                out.write((line + "\n").encode())
        else:
            self._lines.append(line)
            storage.write_bytes(self.metrics_uri, ("\n".join(self._lines) + "\n").encode())

    def message(self, text: str) -> None:
        print(text, file=self.console, flush=True)

    def sample_grid(self, step: int, images_u8: torch.Tensor) -> str:
        uri = storage.join(self.run_uri, "samples", f"step_{step:09d}.png")
        storage.write_bytes(uri, grid_png(images_u8))
        return uri
