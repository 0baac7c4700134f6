"""Checkpoint layout, save/load and discovery.

A checkpoint is a directory `checkpoint_<step:09d>` under the run directory, the same for the Ray and the local
backend: `state.pt` (everything a resume needs; loadable with weights_only=True), the nets inference needs as
safetensors (`generator.safetensors`; a translation's `translator_a2b.safetensors` and `translator_b2a.safetensors`) and
`meta.json` (config, step, metrics, versions, the size and SHA-256 of every file, and what each exported net is for).
A checkpoint is *complete* when `meta.json` parses and every file it lists has the listed size (cheap: no download),
so a half-uploaded directory is never picked; it *loads* when, in addition, each file read matches its checksum and
deserialises. Inference asks a checkpoint what it can do (`expect`) and what its nets are (`read_model`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import re
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from pydantic import TypeAdapter
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from gan_dist import storage
from gan_dist.config import ModelConfig
from gan_dist.data.shards import Manifest
from gan_dist.errors import UserError

STATE_FILE = "state.pt"
EXPORTS = "exports"  # the key of a checkpoint state whose entries are written as <name>.safetensors
META_FILE = "meta.json"
_NAME = re.compile(r"^checkpoint_(\d{9})$")
T = TypeVar("T")


class CorruptCheckpoint(UserError):
    """A checkpoint whose files are all there but do not load (checksum mismatch, garbage, bad meta.json)."""


def checkpoint_name(step: int) -> str:
    return f"checkpoint_{step:09d}"


def step_of(checkpoint_uri: str) -> int | None:
    match = _NAME.match(os.path.basename(checkpoint_uri.rstrip("/")))
    return int(match.group(1)) if match else None


def write_local(directory: str | Path, state: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """Write state.pt and each export in state[EXPORTS] as <name>.safetensors (generator.safetensors: what
    inference loads, with no pickle and no optimizer state), then meta.json, which vouches for their sizes and
    checksums. Returns the files' names, meta.json last."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({key: value for key, value in state.items() if key != EXPORTS}, directory / STATE_FILE)
    names = [STATE_FILE]
    for export, tensors in state[EXPORTS].items():
        names.append(f"{export}.safetensors")
        save_file({k: v.contiguous() for k, v in tensors.items()}, directory / names[-1])
    files = {}
    for name in names:
        data = (directory / name).read_bytes()
        files[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    meta = dict(meta, files=files, versions={"torch": torch.__version__, "python": platform.python_version()})
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    return [*names, META_FILE]


def publish(run_uri: str, step: int, state: dict[str, Any], meta: dict[str, Any]) -> str:
    """Local backend: write checkpoint_<step> under a run so that it never looks complete before it is, replacing
    a same-step checkpoint (re-saved after a resume) whole. A local one is written into a hidden folder and renamed
    into place; object storage has no rename, so the files are written locally and uploaded, meta.json (which
    makes a checkpoint complete) last."""
    final = storage.join(run_uri, checkpoint_name(step))
    if not storage.is_remote(run_uri):
        os.makedirs(run_uri, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".staging-", dir=run_uri)
        write_local(staging, state, meta)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(staging, final)
        return final
    with tempfile.TemporaryDirectory(prefix="gan-dist-ckpt-") as directory:
        names = write_local(directory, state, meta)
        if storage.exists(final):  # first: its meta.json must not vouch for the new files while they upload
            fs, path = storage.resolve(final)
            fs.delete_dir(path)
        for name in names:  # meta.json last
            storage.upload(os.path.join(directory, name), storage.join(final, name))
    return final


def prune(run_uri: str, keep_last: int, current_step: int, best_metric: str | None = None,
          best_mode: str = "min", pending: Collection[int] = ()) -> list[int]:
    """Delete complete checkpoints up to `current_step` but the newest `keep_last` and, with `best_metric`, the
    best one by that metric and those whose evaluation is `pending` (still running off the training path: its
    numbers may make one the best). Incomplete folders are neither counted nor deleted, and neither is anything
    past `current_step` (left by an interrupted attempt; this run overwrites it when it gets there). Returns the
    steps kept."""
    steps = [s for s in list_checkpoints(run_uri) if s <= current_step and is_complete(_uri(run_uri, s))]
    keep = set(steps[-keep_last:])
    if best_metric:
        keep |= set(pending)
        scored = []
        for step in steps:
            value = load_meta(_uri(run_uri, step)).get("metrics", {}).get(best_metric)
            if isinstance(value, (int, float)) and value == value:  # not NaN
                scored.append((value if best_mode == "min" else -value, step))
        if scored:
            keep.add(min(scored)[1])
    fs, path = storage.resolve(run_uri)
    for step in steps:
        if step not in keep:
            fs.delete_dir(f"{path}/{checkpoint_name(step)}")
    return sorted(keep)


def add_metrics(run_uri: str, step: int, metrics: dict[str, float]) -> bool:
    """Merge numbers measured after checkpoint_<step> was written (an evaluation off the training path) into its
    meta.json "metrics", which retention reads. meta.json is replaced whole (a local file by rename, an object by one
    PUT): a reader sees the old or the new one, never a torn one, and the checkpoint stays complete (meta.json lists
    the other files, not itself). False when there is no complete checkpoint of that step (never written, or
    deleted by retention)."""
    uri = _uri(run_uri, step)
    if not is_complete(uri):
        return False
    meta = load_meta(uri)
    meta["metrics"] = {**meta.get("metrics", {}), **metrics}
    storage.write_bytes(storage.join(uri, META_FILE), json.dumps(meta, indent=2, default=str).encode())
    return True


def _uri(run_uri: str, step: int) -> str:
    return storage.join(run_uri, checkpoint_name(step))


def list_checkpoints(run_uri: str) -> list[int]:
    """Steps of the checkpoint directories under a run, oldest first (complete or not)."""
    return sorted(int(m.group(1)) for name in storage.list_dir(run_uri) if (m := _NAME.match(name)))


def reported_metrics(meta: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint reports (to Ray Train, and on to Tune): the newest log step's and evaluation's numbers, and
    where the checkpoint is (a tune scheduler's clock)."""
    return {**meta.get("metrics", {}), "step": meta["step"], "images_seen": meta["images_seen"]}


def copy(checkpoint_uri: str, run_uri: str) -> str:
    """A complete checkpoint copied into another run under its own step name, meta.json last (so the copy is
    complete only when whole); each file checked against its checksum on the way. A source deleted meanwhile raises
    CorruptCheckpoint."""
    target = storage.join(run_uri, os.path.basename(checkpoint_uri.rstrip("/")))
    try:
        meta = storage.read_bytes(storage.join(checkpoint_uri, META_FILE))
    except FileNotFoundError:
        raise CorruptCheckpoint(f"{checkpoint_uri}: no {META_FILE}") from None
    for name in _listed_files(checkpoint_uri):
        storage.write_bytes(storage.join(target, name), _read_verified(checkpoint_uri, name))
    storage.write_bytes(storage.join(target, META_FILE), meta)
    return target


def _listed_files(checkpoint_uri: str) -> dict[str, dict[str, Any]]:
    """name -> {"size", "sha256"} from meta.json; checkpoints written before checksums list sizes only."""
    files = load_meta(checkpoint_uri).get("files")
    if not isinstance(files, dict) or not files:
        raise CorruptCheckpoint(f"{checkpoint_uri}: {META_FILE} lists no files")
    return {name: entry if isinstance(entry, dict) else {"size": entry} for name, entry in files.items()}


def incomplete_reason(checkpoint_uri: str) -> str | None:
    """Why a checkpoint is not complete (None when it is). Storage errors other than a missing file propagate:
    an unreachable bucket must not make good checkpoints look torn."""
    fs, path = storage.resolve(checkpoint_uri)
    try:
        files = _listed_files(checkpoint_uri)
    except CorruptCheckpoint as exc:
        return str(exc).removeprefix(f"{checkpoint_uri}: ")
    infos = fs.get_file_info([f"{path}/{name}" for name in files])
    for info in infos:
        listed = files[os.path.basename(info.path)]["size"]
        if info.size != listed:
            have = "is missing" if info.size is None else f"has {info.size} of {listed} bytes"
            return f"{info.base_name} {have}"
    return None


def is_complete(checkpoint_uri: str) -> bool:
    return incomplete_reason(checkpoint_uri) is None


def latest_complete(run_uri: str, before: int | None = None) -> str | None:
    """The newest complete checkpoint under a run directory (older than step `before`, if given), or None."""
    for step in reversed(list_checkpoints(run_uri)):
        if before is not None and step >= before:
            continue
        if is_complete(_uri(run_uri, step)):
            return _uri(run_uri, step)
    return None


def _read_verified(checkpoint_uri: str, name: str) -> bytes:
    """A checkpoint file's bytes, checked against the checksum meta.json lists for it."""
    uri = storage.join(checkpoint_uri, name)
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise CorruptCheckpoint(f"{checkpoint_uri}: no {name}; pass a checkpoint directory "
                                f"(RUN/checkpoint_NNNNNNNNN) or a run directory") from None
    expected = _listed_files(checkpoint_uri).get(name, {}).get("sha256")
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise CorruptCheckpoint(f"{checkpoint_uri}: {name} does not match its checksum (damaged or overwritten)")
    return data


def load_state(checkpoint_uri: str, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read state.pt, verified, with weights_only=True: a checkpoint can never run code on load."""
    data = _read_verified(checkpoint_uri, STATE_FILE)
    try:
        return torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except Exception:  # noqa: BLE001 - whatever the unpickler says; its advice to disable weights_only is wrong
        raise CorruptCheckpoint(f"{checkpoint_uri}: {STATE_FILE} is not a gan-dist checkpoint state") from None


def check_loads(checkpoint_uri: str) -> None:
    """Raise CorruptCheckpoint unless every file is there at its size and the state and the exports load."""
    reason = incomplete_reason(checkpoint_uri)
    if reason is not None:
        raise CorruptCheckpoint(f"{checkpoint_uri}: {reason}")
    load_state(checkpoint_uri)
    for name in _listed_files(checkpoint_uri):
        if name.endswith(".safetensors"):
            load_export(checkpoint_uri, name.removesuffix(".safetensors"))


def load_meta(checkpoint_uri: str) -> dict[str, Any]:
    try:
        meta = json.loads(storage.read_bytes(storage.join(checkpoint_uri, META_FILE)))
    except FileNotFoundError:
        raise CorruptCheckpoint(f"{checkpoint_uri}: no {META_FILE}; the checkpoint is incomplete") from None
    except (ValueError, UnicodeDecodeError):
        raise CorruptCheckpoint(f"{checkpoint_uri}: {META_FILE} is not valid JSON") from None
    if not isinstance(meta, dict):
        raise CorruptCheckpoint(f"{checkpoint_uri}: {META_FILE} is not a JSON object")
    return meta


def task_kind(meta: dict[str, Any]) -> str:
    """What a checkpoint's run trained (config.task.kind): generation where meta.json predates tasks."""
    return meta.get("config", {}).get("task", {}).get("kind", "generation")


# What a checkpoint serving each inference use is, and the command that puts it to that use: for refusals.
_ROLES = {"sample": "an image generator's checkpoint", "explore": "an image generator's checkpoint",
          "translate": "a translator's checkpoint", "complete": "an inpainting checkpoint",
          "evaluate": "a checkpoint gan-dist evaluate measures"}
_COMMANDS = {"sample": "sample images with it: gan-dist sample CKPT --num N --out DIR",
             "explore": "explore it: gan-dist explore CKPT --out DIR",
             "translate": "translate images with it: gan-dist translate CKPT --input DIR --out DIR",
             "complete": "fill holes with it: gan-dist complete CKPT --input DIR --out DIR",
             "evaluate": "measure it: gan-dist evaluate CKPT"}


# What each kind exported before meta.json recorded "exports" (a record of those checkpoints, not of the tasks of
# today, which train/tasks/ keeps and every checkpoint since carries; this module sits below train/).
_EXPORTS_BEFORE_RECORDED = {
    "generation": {"generator": ["sample", "explore", "evaluate"]},
    "cyclegan": {"translator_a2b": ["translate", "evaluate"], "translator_b2a": ["translate", "evaluate"]},
    "cut": {"translator_a2b": ["translate", "evaluate"]},
    "inpaint": {"completer": ["complete", "evaluate"]},
}


def exports(meta: dict[str, Any]) -> dict[str, list[str]]:
    """Each exported net's file stem -> the inference uses it serves: meta.json's "exports", or for a checkpoint
    written before meta.json recorded them, what its kind exported then."""
    recorded = meta.get("exports")
    if isinstance(recorded, dict):
        return {stem: list(uses) for stem, uses in recorded.items()}
    return _EXPORTS_BEFORE_RECORDED.get(task_kind(meta), {})


def serves(meta: dict[str, Any], use: str) -> bool:
    return any(use in uses for uses in exports(meta).values())


def expect(meta: dict[str, Any], use: str, checkpoint_uri: str = "this checkpoint") -> list[str]:
    """The stems of the exported nets that serve `use` (sample, explore, translate, complete, evaluate), or a
    one-line UserError saying what the checkpoint is for and which command to use instead."""
    stems = [stem for stem, uses in exports(meta).items() if use in uses]
    if stems:
        return stems
    offered = [other for other in _COMMANDS if other != use and serves(meta, other)]
    if not offered:
        raise UserError(f"{checkpoint_uri} holds no net for {use}: its {META_FILE} records no exports and its task "
                        f"{task_kind(meta)!r} is none this gan-dist knows; was it written by a newer version?")
    raise UserError(f"{checkpoint_uri} is {_ROLES[offered[0]]}, not {_ROLES[use]}; {_COMMANDS[offered[0]]}")


@dataclass(frozen=True)
class Images:
    """What meta.json says of a dataset a checkpoint was trained on: the shape its nets take or make."""

    resolution: int
    channels: int
    class_names: list[str]


@dataclass(frozen=True)
class SavedModel:
    """meta.json's model section and the images of each dataset, by name ("train"; "a" and "b"): what it takes to
    build the nets whose weights the checkpoint holds."""

    model: ModelConfig
    images: dict[str, Images]


def read_model(checkpoint_uri: str, meta: dict[str, Any]) -> SavedModel:
    """The one reader of meta.json's model section, for every inference command."""
    try:
        model = TypeAdapter(ModelConfig).validate_python(meta["config"]["model"])
        images = {name: Images(int(data["resolution"]), int(data["channels"]), list(data.get("class_names") or []))
                  for name, data in trained_on(meta).items()}
        for data in trained_on(meta).values():  # a paired dataset: its inputs and images are the domains of a2b
            if data.get("input_channels"):
                images["a"] = Images(int(data["resolution"]), int(data["input_channels"]), images["train"].class_names)
                images["b"] = images["train"]
    except (KeyError, TypeError, ValueError, AttributeError):  # pydantic's ValidationError is a ValueError
        raise CorruptCheckpoint(f"{checkpoint_uri}: {META_FILE} does not describe its nets (its model section or "
                                f"image sizes are missing or invalid)") from None
    return SavedModel(model, images)


def load_weights(net: torch.nn.Module, checkpoint_uri: str, name: str = "generator",
                 state: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """`net` (built from read_model) with the weights of <name>.safetensors, or of `state` (a net of state.pt); a
    CorruptCheckpoint naming the file when they do not fit the nets meta.json describes."""
    source = STATE_FILE if state is not None else f"{name}.safetensors"
    weights = state if state is not None else load_export(checkpoint_uri, name)
    try:
        net.load_state_dict(weights)
    except RuntimeError as exc:  # missing or unexpected keys, size mismatches: the first one says enough
        details = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        raise CorruptCheckpoint(f"{checkpoint_uri}: {source} does not fit the nets its {META_FILE} describes "
                                f"({(details or [str(exc)])[0][:200]}); the files come from different runs or were "
                                f"edited") from None
    return net


def load_export(checkpoint_uri: str, name: str = "generator") -> dict[str, torch.Tensor]:
    """An exported net's state dict, from <name>.safetensors (verified): the generator, or a translator."""
    file = f"{name}.safetensors"
    data = _read_verified(checkpoint_uri, file)
    try:
        return load_safetensors(data)
    except SafetensorError:
        raise CorruptCheckpoint(f"{checkpoint_uri}: {file} is not a safetensors file") from None


def newest_first(run_uri: str, first: str | None) -> Iterator[str]:
    """`first`, then the run's complete checkpoints older than the last one yielded: a caller that cannot load
    one goes on to the next."""
    uri = first
    while uri is not None:
        yield uri
        uri = latest_complete(run_uri, before=step_of(uri))


def is_checkpoint_dir(uri: str) -> bool:
    return storage.exists(storage.join(uri, META_FILE)) or storage.exists(storage.join(uri, STATE_FILE))


def load_newest(uri: str, load: Callable[[str], T], warn: Callable[[str], None]) -> tuple[str, T]:
    """(checkpoint, load(checkpoint)) for a checkpoint directory; for a run directory, for its newest complete
    checkpoint that loads, going back past damaged ones (each named through `warn`)."""
    if not uri.strip():
        raise UserError("CKPT is empty; pass a checkpoint directory (RUN/checkpoint_NNNNNNNNN) or a run directory")
    if is_checkpoint_dir(uri):
        return uri, load(uri)
    failures = []
    for candidate in newest_first(uri, latest_complete(uri)):
        try:
            return candidate, load(candidate)
        except CorruptCheckpoint as exc:
            failures.append(str(exc))
            warn(f"warning: skipping {exc}")
    if failures:
        raise UserError(f"none of the {len(failures)} complete checkpoint(s) of {uri} loads; the newest: "
                        f"{failures[0]}")
    steps = list_checkpoints(uri)
    if steps:
        newest = checkpoint_name(steps[-1])
        raise UserError(f"no complete checkpoint at {uri}: {len(steps)} checkpoint folder(s), none complete; the "
                        f"newest, {newest}: {incomplete_reason(_uri(uri, steps[-1]))}")
    raise UserError(f"no complete checkpoint at {uri}; pass a run directory or one of its checkpoint_* directories")


def trained_on(meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What meta.json says of each dataset the checkpoint was trained on, by name (checkpoints written before
    datasets had names describe the one "train" dataset)."""
    return meta.get("datasets") or {"train": meta.get("data", {})}


def check_compatible(checkpoint_uri: str, model: dict[str, Any], manifests: dict[str, Manifest],
                     same_data: bool) -> None:
    """One line naming what differs when a checkpoint's nets cannot take this run's model or images, or (with
    `same_data`, for a resume of the same run) when the run was trained on other datasets."""
    meta = load_meta(checkpoint_uri)
    saved_model = meta.get("config", {}).get("model", {})
    diffs = [f"model.{key}={saved_model[key]} (this run: {value})"
             for key, value in model.items() if key in saved_model and saved_model[key] != value]
    saved = trained_on(meta)
    for name, manifest in manifests.items():
        data = saved.get(name, {})
        if (data.get("resolution"), data.get("channels")) != (manifest.resolution, manifest.channels):
            what = "images" if name == "train" else f"images of {name}"
            diffs.append(f"{what} {data.get('resolution')}x{data.get('resolution')}x{data.get('channels')} "
                         f"(this run: {manifest.resolution}x{manifest.resolution}x{manifest.channels})")
    if diffs:
        raise UserError(f"{checkpoint_uri} was trained with {', '.join(diffs)}; resume with the same model and "
                        f"dataset, or start a new run (--name) without --resume/--resume-from")
    for name, manifest in manifests.items():
        data, flag = saved[name], "--data" if name == "train" else f"--data-{name}"
        if same_data and data.get("content_hash", manifest.content_hash) != manifest.content_hash:
            raise UserError(f"{checkpoint_uri} was trained on another dataset (content hash "
                            f"{data['content_hash'][:12]}, {flag} here: {manifest.content_hash[:12]}); resume with "
                            f"the run's own {flag}, or start a new run from this checkpoint with --name NEW "
                            f"--resume-from {checkpoint_uri}")
