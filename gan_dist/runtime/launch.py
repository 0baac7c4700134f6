"""The driver side of `gan-dist train`: check the storage, find the data, name the run, guard against clobbering
a run, decide what a resume starts from, dispatch to a backend. Everything that can be refused is refused here,
in one line, before a worker starts."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from gan_dist import checkpoint
from gan_dist.config import Config
from gan_dist.data.placement import Dataset, dataset_uri, describe
from gan_dist.data.reader import read_manifest
from gan_dist.data.shards import Manifest
from gan_dist.errors import UserError
from gan_dist import storage
from gan_dist.runtime.local import check_local, run_local
from gan_dist.tracking import METRICS_FILE
from gan_dist.train.loop import LoopResult, logged_metrics, train_loop
from gan_dist.train.tasks import task_class


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


def check_run_dir(cfg: Config, name: str, run_uri: str, datasets: dict[str, Dataset]) -> int | None:
    """A new run needs an empty run directory; a resume needs a complete checkpoint whose nets and dataset are
    this run's, or no checkpoint folder at all (then it starts at step 0, keeping what the run wrote before).
    Returns the step a resume starts from."""
    entries = [e for e in storage.list_dir(run_uri) if not e.startswith(".")]  # not Ray's markers, our staging
    steps = checkpoint.list_checkpoints(run_uri)
    if entries and not steps and METRICS_FILE not in entries:
        raise UserError(f"{run_uri} holds other files ({', '.join(entries[:3])}), not a gan-dist run; choose another "
                        f"--name or --storage")
    if not cfg.run.resume:
        if entries:
            held = f"checkpoints up to step {steps[-1]}" if steps else "metrics but no checkpoint yet"
            raise UserError(f"run '{name}' in {cfg.run.storage} already exists ({held}); pass --resume to continue "
                            f"it, or --name for a new run")
        return None
    newest = checkpoint.latest_complete(run_uri)
    if newest is not None:
        checkpoint.check_compatible(newest, cfg.model.model_dump(), manifests(datasets), same_data=True)
        start = checkpoint.step_of(newest)
        for step in (s for s in steps if s > start):  # torn by a crash; the run rewrites it when it gets there
            torn = checkpoint.checkpoint_name(step)
            print(f"warning: {torn} is incomplete ({checkpoint.incomplete_reason(storage.join(run_uri, torn))}); "
                  f"resuming from step {start}, and {torn} is replaced when the run reaches step {step}",
                  file=sys.stderr)
        return start
    if steps:
        names = [checkpoint.checkpoint_name(step) for step in steps]
        torn = "; ".join(f"{n}: {checkpoint.incomplete_reason(storage.join(run_uri, n))}" for n in names)
        raise UserError(f"run '{name}' has no complete checkpoint to resume ({torn}); nothing was changed: restore "
                        f"or delete those folders, or start a new run (--name, optionally --resume-from)")
    if entries:
        print(f"run '{name}' stopped before its first checkpoint; starting it again from step 0 (metrics.jsonl "
              f"goes on after its earlier lines; grids are drawn again)", file=sys.stderr)
    elif not cfg.run.resume_from:
        print(f"no checkpoint of run '{name}' to resume; starting it fresh", file=sys.stderr)
    return None


def manifests(datasets: dict[str, Dataset]) -> dict[str, Manifest]:
    return {name: data.manifest for name, data in datasets.items()}


def resume_from(cfg: Config, datasets: dict[str, Dataset]) -> tuple[str, int] | None:
    """--resume-from as a checkpoint directory and its step (a run directory stands for its newest checkpoint
    that loads), checked to fit this run's nets."""
    if not cfg.run.resume_from:
        return None
    # Checked to load here, in one line, rather than in every worker.
    uri, _ = checkpoint.load_newest(storage.absolute_uri(cfg.run.resume_from), checkpoint.check_loads,
                                    lambda warning: print(warning, file=sys.stderr))
    checkpoint.check_compatible(uri, cfg.model.model_dump(), manifests(datasets), same_data=False)
    return uri, checkpoint.load_meta(uri)["step"]


def check_batch_fits(cfg: Config, name: str, manifest: Manifest) -> None:
    """Every worker reads at least one step's batch of its rows: a fixed-size run's workers hold a share each, an
    elastic run's all hold every row (one epoch order, split by the workers of the moment)."""
    r, t = cfg.run, cfg.train
    dataset = "the dataset" if name == "train" else f"dataset {name}"
    fewer = "" if t.n_dis == 1 else ", or a lower train.n_dis"
    if r.elastic and manifest.count < cfg.step_images(r.max_workers):
        raise UserError(f"{dataset}'s {manifest.count} images are fewer than one step of the global batch "
                        f"(train.batch_size {t.batch_size} × MAX {r.max_workers} workers × n_dis {t.n_dis}); lower "
                        f"--batch-size or MAX{fewer}")
    share = manifest.count // r.max_workers  # the smallest worker's rows (a fixed size: MAX is the size)
    if not r.elastic and share < t.real_per_step:
        batch = f"one batch of {t.batch_size}" if t.n_dis == 1 else f"one step's {t.n_dis} batches of {t.batch_size}"
        raise UserError(f"each of {r.num_workers} worker(s) gets {share} of {dataset}'s {manifest.count} images, "
                        f"fewer than {batch}; lower --batch-size (or use fewer workers{fewer})")


def warn_unlogged_best(cfg: Config, datasets: dict[str, Dataset]) -> None:
    logged = logged_metrics(cfg, manifests(datasets))
    if cfg.run.keep_best and cfg.run.keep_best not in logged:
        print(f"warning: run.keep_best='{cfg.run.keep_best}' is never logged (logged: {', '.join(logged)}); "
              f"only the newest {cfg.run.keep_checkpoints} checkpoint(s) are kept", file=sys.stderr)


def open_datasets(cfg: Config) -> dict[str, Dataset]:
    """The task's datasets by name, their manifests read and checked to fit the task and the batch."""
    datasets = {}
    for dataset, configured in cfg.dataset_paths().items():
        uri = dataset_uri(dataset, configured)
        datasets[dataset] = Dataset(uri, read_manifest(uri))
    task_class(cfg).check_data(cfg, datasets)
    for dataset, given in datasets.items():
        check_batch_fits(cfg, dataset, given.manifest)
    return datasets


def train(cfg: Config, loop: Callable = train_loop, callbacks: Sequence[Any] = ()) -> LoopResult:
    """`callbacks`: Ray Train callbacks of the run (a tune trial's report forwarding); Ray backend only."""
    backend = cfg.run.resolved_backend()
    if backend == "ray":
        from gan_dist.runtime.ray_backend import check_cluster  # Ray is imported only when it is used

        check_cluster(cfg)
    else:
        check_local(cfg)
    storage.check_output_dir(cfg.run.storage, "--storage")  # before reading data or starting Ray
    datasets = open_datasets(cfg)
    warn_unlogged_best(cfg, datasets)
    name = run_name(cfg)
    run_uri = storage.join(storage.absolute_uri(cfg.run.storage), name)
    with storage.user_errors(run_uri, "read the run at"):
        start = check_run_dir(cfg, name, run_uri, datasets)
        source = resume_from(cfg, datasets)
    if start is not None and cfg.train.steps <= start:  # a retried job whose run had already finished, say
        print(f"run '{name}' is at step {start} already (--steps {cfg.train.steps}); nothing to train: pass --steps "
              f"above {start} to continue it")
        return LoopResult(start, start)
    if start is None and source is not None and cfg.train.steps <= source[1]:
        raise UserError(f"--resume-from {source[0]} is at step {source[1]}, not below --steps {cfg.train.steps}; "
                        f"pass --steps above {source[1]}")
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"resume_from": source and source[0]})})
    data = "; ".join(describe(dataset, given) for dataset, given in datasets.items())
    print(f"run '{name}': {data}, {backend} backend, {cfg.run.num_workers} worker(s), output in {run_uri}", flush=True)
    if backend == "ray":
        from gan_dist.runtime.ray_backend import run_ray

        return run_ray(loop, cfg, datasets, run_uri, callbacks)
    return run_local(loop, cfg, datasets, run_uri)
