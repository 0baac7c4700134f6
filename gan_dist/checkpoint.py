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

from gan_dist.errors import UserError
from gan_dist.runtime import storage

STATE_FILE = "state.pt"
META_FILE = "meta.json"
_NAME = re.compile(r"^checkpoint_(\d{9})$")


def checkpoint_name(step: int) -> str:
    return f"checkpoint_{step:09d}"


def write_local(directory: str | Path, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write state.pt, then meta.json (listing the files and sizes it vouches for) into a local directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(state, directory / STATE_FILE)
    meta = dict(meta, files={STATE_FILE: (directory / STATE_FILE).stat().st_size},
                versions={"torch": torch.__version__, "python": platform.python_version()})
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, default=str))


def publish_local(run_dir: str, step: int, state: dict[str, Any], meta: dict[str, Any], keep: int) -> str:
    """Local backend: write into a hidden temporary directory, rename into place, drop all but the newest `keep`."""
    final = os.path.join(run_dir, checkpoint_name(step))
    os.makedirs(run_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".staging-", dir=run_dir)
    write_local(staging, state, meta)
    if os.path.exists(final):  # re-saving the same step after a resume replaces it whole
        shutil.rmtree(final)
    os.rename(staging, final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(storage.join(run_dir, checkpoint_name(old)))
    return final


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
