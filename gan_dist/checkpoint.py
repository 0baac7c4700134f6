"""Checkpoint layout, save/load and discovery.

A checkpoint is a directory `checkpoint_<step:09d>` under the run directory, the same for the Ray and the local
backend: `state.pt` (everything a resume needs; loadable with weights_only=True) and `meta.json` (config, step,
metrics, versions and the size of every file). A checkpoint counts as complete only when `meta.json` is present
and every file it lists has the listed size, so a half-uploaded directory is never picked for a resume.
"""

from __future__ import annotations

import io
import json
import os
import platform
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from gan_dist.errors import UserError
from gan_dist.runtime import storage

STATE_FILE = "state.pt"
GENERATOR_FILE = "generator.safetensors"  # the generator alone, for inference: no pickle, no optimizer state
META_FILE = "meta.json"
_NAME = re.compile(r"^checkpoint_(\d{9})$")


def checkpoint_name(step: int) -> str:
    return f"checkpoint_{step:09d}"


def write_local(directory: str | Path, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write state.pt, then meta.json (listing the files and sizes it vouches for) into a local directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(state, directory / STATE_FILE)
    save_file({k: v.contiguous() for k, v in state["nets"]["G"].items()}, directory / GENERATOR_FILE)
    meta = dict(meta, files={name: (directory / name).stat().st_size for name in (STATE_FILE, GENERATOR_FILE)},
                versions={"torch": torch.__version__, "python": platform.python_version()})
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, default=str))


def publish_local(run_dir: str, step: int, state: dict[str, Any], meta: dict[str, Any]) -> str:
    """Local backend: write into a hidden temporary directory, then rename it into place in one step."""
    final = os.path.join(run_dir, checkpoint_name(step))
    os.makedirs(run_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".staging-", dir=run_dir)
    write_local(staging, state, meta)
    if os.path.exists(final):  # re-saving the same step after a resume replaces it whole
        shutil.rmtree(final)
    os.rename(staging, final)
    return final


def prune(run_uri: str, keep_last: int, best_metric: str | None = None, best_mode: str = "min") -> list[int]:
    """Delete all checkpoints but the newest `keep_last` and, with `best_metric`, the best one by that metric.
    Returns the steps kept."""
    steps = list_checkpoints(run_uri)
    keep = set(steps[-keep_last:])
    if best_metric:
        scored = []
        for step in steps:
            value = load_meta(storage.join(run_uri, checkpoint_name(step))).get("metrics", {}).get(best_metric)
            if isinstance(value, (int, float)) and value == value:  # not NaN
                scored.append((value if best_mode == "min" else -value, step))
        if scored:
            keep.add(min(scored)[1])
    fs, path = storage.resolve(run_uri)
    for step in steps:
        if step not in keep:
            fs.delete_dir(f"{path}/{checkpoint_name(step)}")
    return sorted(keep)


def list_checkpoints(run_uri: str) -> list[int]:
    """Steps of the checkpoint directories under a run, oldest first (complete or not)."""
    return sorted(int(m.group(1)) for name in storage.list_dir(run_uri) if (m := _NAME.match(name)))


def is_complete(checkpoint_uri: str) -> bool:
    fs, path = storage.resolve(checkpoint_uri)
    try:
        with fs.open_input_stream(f"{path}/{META_FILE}") as src:
            files = json.loads(src.read())["files"]
        infos = fs.get_file_info([f"{path}/{name}" for name in files])
    except (OSError, ValueError, KeyError):
        return False
    return all(info.size == files[os.path.basename(info.path)] for info in infos)


def latest_complete(run_uri: str) -> str | None:
    """The newest complete checkpoint under a run directory, or None."""
    for step in reversed(list_checkpoints(run_uri)):
        uri = storage.join(run_uri, checkpoint_name(step))
        if is_complete(uri):
            return uri
    return None


def load_state(checkpoint_uri: str, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read state.pt with weights_only=True: a checkpoint can never run code on load."""
    uri = storage.join(checkpoint_uri, STATE_FILE)
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise UserError(f"no {STATE_FILE} in {checkpoint_uri}; pass a checkpoint directory (run/checkpoint_NNNNNNNNN)") from None
    return torch.load(io.BytesIO(data), map_location=device, weights_only=True)


def resolve_checkpoint(uri: str) -> str:
    """A checkpoint directory, or a run directory (then its newest complete checkpoint)."""
    if storage.exists(storage.join(uri, STATE_FILE)):
        return uri
    latest = latest_complete(uri)
    if latest is None:
        raise UserError(f"no checkpoint at {uri}; pass a run directory or one of its checkpoint_* directories")
    return latest


def load_meta(checkpoint_uri: str) -> dict[str, Any]:
    try:
        return json.loads(storage.read_bytes(storage.join(checkpoint_uri, META_FILE)))
    except FileNotFoundError:
        raise UserError(f"no {META_FILE} in {checkpoint_uri}; the checkpoint is incomplete") from None


def load_generator_weights(checkpoint_uri: str) -> dict[str, torch.Tensor]:
    """The generator's state dict, from generator.safetensors."""
    try:
        return load_safetensors(storage.read_bytes(storage.join(checkpoint_uri, GENERATOR_FILE)))
    except FileNotFoundError:
        raise UserError(f"no {GENERATOR_FILE} in {checkpoint_uri}; the checkpoint is incomplete") from None
