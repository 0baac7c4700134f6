"""The driver side of `gan-dist train`: find the data, name the run, guard against clobbering a run, dispatch
to a backend."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from gan_dist import checkpoint
from gan_dist.config import Config
from gan_dist.data.prepare import embedded_digits
from gan_dist.data.reader import read_manifest
from gan_dist.errors import UserError
from gan_dist.runtime import storage
from gan_dist.train.loop import LoopResult, train_loop


def newest_run(storage_uri: str, preset: str) -> str | None:
    """The newest run of this preset (names end in a sortable timestamp) that holds a checkpoint."""
    runs = [name for name in storage.list_dir(storage_uri) if name.startswith(f"{preset}-")]
    for name in sorted(runs, reverse=True):
        if checkpoint.list_checkpoints(storage.join(storage_uri, name)):
            return name
    return None


def run_name(cfg: Config) -> str:
    if cfg.run.name:
        return cfg.run.name
    if cfg.run.resume:
        found = newest_run(cfg.run.storage, cfg.preset)
        if found:
            return found
    return f"{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(cfg: Config, loop: Callable = train_loop) -> LoopResult:
    data_uri = cfg.data.path or embedded_digits()
    manifest = read_manifest(data_uri)
    name = run_name(cfg)
    run_uri = storage.join(storage.absolute_uri(cfg.run.storage), name)
    existing = checkpoint.list_checkpoints(run_uri)
    if existing and not cfg.run.resume:
        raise UserError(f"run '{name}' in {cfg.run.storage} already has checkpoints (up to step {existing[-1]}); "
                        f"pass --resume to continue it, or --name for a new run")
    if cfg.run.resume and not existing:
        print(f"no checkpoint of run '{name}' to resume; starting it fresh", file=sys.stderr)
    if cfg.run.resume_from:  # a run directory stands for its newest complete checkpoint
        cfg.run.resume_from = checkpoint.resolve_checkpoint(storage.absolute_uri(cfg.run.resume_from))
    backend = cfg.run.resolved_backend()
    print(f"run '{name}': {manifest.count} images {manifest.resolution}x{manifest.resolution}x{manifest.channels} "
          f"from {data_uri}, {backend} backend, {cfg.run.num_workers} worker(s), output in {run_uri}", flush=True)
    if backend == "ray":
        from gan_dist.runtime.ray_backend import run_ray  # Ray is imported only when it is used

        return run_ray(loop, cfg, manifest, data_uri, run_uri)
    from gan_dist.runtime.local import run_local

    return run_local(loop, cfg, manifest, data_uri, run_uri)
