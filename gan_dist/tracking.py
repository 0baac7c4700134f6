"""Rank 0's outputs: metrics as JSON lines and PNG sample grids in the run directory, W&B, and the console."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import TYPE_CHECKING, Any, TextIO

import pyarrow.fs as pafs

from gan_dist import storage
from gan_dist.config import LogConfig
from gan_dist.imaging import png_bytes
from gan_dist.progress import Progress

if TYPE_CHECKING:  # torch only where a tensor is handled: `gan-dist report` starts in a second, not ten
    import torch

METRICS_FILE = "metrics.jsonl"
# An evaluation that finished after its step: W&B plots its numbers against this, and metrics.jsonl's line of that
# step names the step it landed at with LANDED_STEP.
EVALUATED_STEP = "evaluated_step"
LANDED_STEP = "landed_step"
# Shown on the console; everything else still goes to metrics.jsonl and W&B.
CONSOLE_KEYS = ("loss_D", "loss_G", "D_real", "D_fake", "img_per_s", "workers")


def wandb_mode(configured: str) -> str:
    if configured != "auto":
        return configured
    env = os.environ.get("WANDB_MODE", "")
    if env in ("online", "offline", "disabled"):
        return env
    return "online" if os.environ.get("WANDB_API_KEY") else "disabled"


def wandb_run_id(run_uri: str) -> str:
    """One W&B run per gan-dist run: restarts and resumes of the same run directory log to the same W&B run."""
    return hashlib.sha1(run_uri.encode()).hexdigest()[:16]


class WandbSink:
    """W&B on rank 0. Any failure warns once and switches it off: an unreachable W&B never stops training."""

    def __init__(self, cfg: LogConfig, run_id: str, name: str, config: dict[str, Any], directory: str | None,
                 console: TextIO, job_type: str | None = None):
        self.run, self.console = None, console
        self.against: set[str] = set()  # keys plotted against a step metric of their own (define_metric)
        self.rows_against: list[dict[str, Any]] = []  # rows of past steps' numbers waiting for a W&B step
        self.step = self.against_at = -1  # the newest W&B step logged at; the newest holding such a row
        mode = wandb_mode(cfg.wandb)
        if mode == "disabled":
            return
        # Read per run: W&B caches its settings process-wide at the first init.
        init_timeout = float(os.environ.get("WANDB_INIT_TIMEOUT", "90"))
        try:
            import wandb

            self._image = wandb.Image
            self.run = wandb.init(project=cfg.wandb_project, entity=cfg.wandb_entity, id=run_id, name=name,
                                  group=cfg.wandb_group, resume="allow", config=config, mode=mode, dir=directory, job_type=job_type,
                                  settings=wandb.Settings(silent=True, console="off", init_timeout=init_timeout))
        except Exception as exc:  # noqa: BLE001 - whatever W&B raises, training goes on
            self._switch_off(exc)

    def log(self, payload: dict[str, Any], step: int) -> None:
        if self.run is None:
            return
        try:
            self.run.log(payload, step=step)
        except Exception as exc:  # noqa: BLE001
            self._switch_off(exc)
        self.step = max(self.step, step)
        self._next_against(step)

    def log_against(self, axis: str, value: int, payload: dict[str, Any], step: int) -> None:
        """`payload` plotted against `axis` = `value`, logged at `step` (or the first later step free of such a
        row): for numbers of a past step, since W&B's own step only goes up."""
        if self.run is None:
            return
        try:
            if not self.against:
                self.run.define_metric(axis, hidden=True)
            for key in payload.keys() - self.against:
                self.run.define_metric(key, step_metric=axis)
        except Exception as exc:  # noqa: BLE001
            self._switch_off(exc)
            return
        self.against |= payload.keys()
        self.rows_against.append({axis: value, **payload})
        self._next_against(step)

    def _next_against(self, step: int) -> None:
        """One row of past numbers per W&B step: two logged at one step would merge, the later numbers winning."""
        if self.rows_against and step > self.against_at:
            self.against_at = step
            self.log(self.rows_against.pop(0), step)

    def image(self, key: str, image_chw_u8: torch.Tensor, step: int) -> None:
        if self.run is not None:
            self.log({key: self._image(image_chw_u8.permute(1, 2, 0).cpu().numpy())}, step)

    def finish(self) -> None:
        while self.rows_against:  # after the last step: a step each
            self._next_against(max(self.step, self.against_at) + 1)
        if self.run is not None:
            try:
                self.run.finish()
            except Exception as exc:  # noqa: BLE001
                self._switch_off(exc)

    def _switch_off(self, exc: BaseException) -> None:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        print(f"warning: W&B is off for the rest of this run ({first}); metrics still go to {METRICS_FILE}",
              file=self.console, flush=True)
        self.run = None


class RunTracker:
    """Appends metrics and events to `metrics.jsonl` (kept on resume), writes sample grids under `samples/`, and
    sends the same to W&B and the console."""

    def __init__(self, run_uri: str, total_steps: int, cfg: LogConfig, run_id: str, config: dict[str, Any],
                 console: TextIO | None = None):
        console = console or sys.stdout  # looked up now: tests and notebooks swap sys.stdout
        self.run_uri = run_uri
        self.metrics_uri = storage.join(run_uri, METRICS_FILE)
        self.console, self.total_steps, self.every_s = console, total_steps, cfg.console_every_s
        self.bar: Progress | None = None  # started at the first step this process trains (a resume's rate)
        self.losses = ""  # the newest metrics' CONSOLE_KEYS, ending the progress line
        # Object stores cannot append: keep the lines and rewrite the (small) file; local files are appended.
        # A run killed mid-write leaves a last line without its newline: the next record must start a line of its
        # own, not be glued onto the fragment (rewritten lines get one by the join; appends by _torn).
        self._lines: list[str] | None = None
        self._torn = False
        if storage.is_remote(run_uri):
            found = storage.exists(self.metrics_uri)
            self._lines = storage.read_bytes(self.metrics_uri).decode(errors="replace").splitlines() if found else []
        else:
            self._torn = _ends_mid_line(self.metrics_uri)
        local_dir = None if storage.is_remote(run_uri) else run_uri
        self.wandb = WandbSink(cfg, run_id, os.path.basename(run_uri.rstrip("/")), config,
                               os.environ.get("WANDB_DIR") or local_dir, console)

    def log(self, metrics: dict[str, Any]) -> None:
        self._append(json.dumps(metrics))
        self.wandb.log({k: v for k, v in metrics.items() if k != "step"}, metrics["step"])
        self.losses = "".join(f" | {key} {metrics[key]:.4g}" for key in CONSOLE_KEYS if key in metrics)
        step = metrics["step"]
        self._bar(step).update(step, final=step == self.total_steps, note=self.losses)

    def log_evaluation(self, step: int, metrics: dict[str, float], landed_step: int) -> None:
        """The numbers of an evaluation of `step` that finished at `landed_step` (off the training path): a line of
        that step in metrics.jsonl, and in W&B against EVALUATED_STEP."""
        self._append(json.dumps({"step": step, **metrics, LANDED_STEP: landed_step}))
        self.wandb.log_against(EVALUATED_STEP, step, metrics, landed_step)

    def log_event(self, event: dict[str, Any]) -> None:
        """Something a person must know about (a restore, a skipped update): a JSON line and a console warning."""
        self._append(json.dumps(event))
        self.wandb.log({f"events/{event['event']}": 1}, event["step"])
        details = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in event.items() if k != "event")
        self.message(f"warning: {event['event']}: {details}")

    def progress(self, step: int) -> None:
        if step < self.total_steps:  # the last step's line is drawn by log(), with its final losses
            self._bar(step).update(step, note=self.losses)

    def message(self, text: str) -> None:
        if self.bar is None:
            print(text, file=self.console, flush=True)
        else:
            self.bar.message(text)

    def write_grid(self, step: int, grid: torch.Tensor) -> str:
        """A uint8 C×H×W preview grid to samples/step_<step>.png and W&B."""
        uri = storage.join(self.run_uri, "samples", f"step_{step:09d}.png")
        storage.write_bytes(uri, png_bytes(grid))
        self.wandb.image("samples", grid, step)
        return uri

    def close(self) -> None:
        self.wandb.finish()

    def _bar(self, step: int) -> Progress:
        if self.bar is None:
            self.bar = Progress(self.total_steps, self.console, "step", self.every_s, done=step - 1)
        return self.bar

    def _append(self, line: str) -> None:
        if self._lines is None:
            fs, path = storage.resolve(self.metrics_uri)
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
            with fs.open_append_stream(path) as out:
                out.write((("\n" if self._torn else "") + line + "\n").encode())
            self._torn = False
        else:
            self._lines.append(line)
            storage.write_bytes(self.metrics_uri, ("\n".join(self._lines) + "\n").encode())


def _ends_mid_line(uri: str) -> bool:
    """Whether a local file's last byte is not a newline (a torn last line)."""
    fs, path = storage.resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return False
    with fs.open_input_file(path) as src:
        return src.size() > 0 and src.read_at(1, src.size() - 1) != b"\n"
