"""The Ray backend: TorchTrainer over N workers, checkpoints reported through Ray Train to `RunConfig.storage_path`.
Data that fits a worker's device is read by each worker once (its share of rows, with pyarrow); larger data streams
as a Ray Data dataset split across the workers, decoded in Ray Data tasks."""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import ray
import ray.train
import torch
import torch.distributed as dist
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.constants import CHECKPOINT_MANAGER_SNAPSHOT_FILENAME
from ray.train.v2.api.callback import UserCallback

from gan_dist import checkpoint, storage
from gan_dist.config import Config, config_from_dict
from gan_dist.data import placement
from gan_dist.data.placement import Dataset, Positions
from gan_dist.data.ray_stream import RayStreamReader, shard_dataset
from gan_dist.data.reader import Batch, read_manifest
from gan_dist.data.shards import Manifest
from gan_dist.errors import UserError
from gan_dist.runtime.offpath_eval import RayEvaluations, place_evaluation
from gan_dist.train import collective
from gan_dist.train.loop import LoopResult
from gan_dist.train.tasks import task_class

T = TypeVar("T")


class RayContext:
    def __init__(self, cfg: Config, datasets: dict[str, Dataset], run_uri: str):
        context = ray.train.get_context()
        self.cfg, self.datasets, self.run_uri = cfg, datasets, run_uri
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()
        self.placements, self.readers = {}, {}
        holders = 1 if cfg.run.elastic else self.world_size  # an elastic run's workers each hold every row
        for name, data in datasets.items():
            self.placements[name] = self._agree(placement.choose(cfg.data, data.manifest, holders, self.device,
                                                                 name, len(datasets)))
            self.readers[name] = self._reader(name, data)

    def _reader(self, name: str, data: Dataset) -> placement.Reader:
        """Resident: this worker's contiguous share of the rows, read once with pyarrow and kept on the device; each
        epoch a seeded permutation of it (reproducible, exactly resumable, no Ray Data start-up per epoch). Read
        now, where a bad shard can still be refused by every rank together. Streamed: this worker's shard of the
        Ray Data dataset of the same name."""
        if self.placements[name].resident:
            return placement.open_reader(self.cfg, data.uri, data.manifest, self.rank, self.world_size, self.device,
                                         True)
        return RayStreamReader(ray.train.get_dataset_shard(name), self.cfg, self.rank, self.world_size, self.device)

    def _agree(self, chosen: placement.Placement) -> placement.Placement:
        """Resident only if every worker's device can hold its share: all ranks must take the same path."""
        if self.world_size == 1:
            return chosen
        flag = torch.tensor([int(chosen.resident)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        if bool(flag.item()) == chosen.resident:
            return chosen
        return placement.Placement(False, "data: stream (another worker's device cannot hold its share)")

    def batches(self, names: tuple[str, ...], start: Positions) -> Iterator[tuple[dict[str, Batch], Positions]]:
        return placement.read_together(self.readers, names, start)

    def latest_checkpoint(self) -> str | None:
        # From storage, not ray.train.get_checkpoint(): a hard crash just after an upload leaves the newest
        # complete checkpoint unregistered with Ray, and a registered one may be torn.
        return checkpoint.latest_complete(self.run_uri)

    def save_checkpoint(self, step: int, state: dict[str, Any] | None, meta: dict[str, Any]) -> None:
        name = checkpoint.checkpoint_name(step)
        metrics = checkpoint.reported_metrics(meta)
        if state is None:  # report is a barrier: every rank calls it, only rank 0 carries files
            ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
            return
        with tempfile.TemporaryDirectory(prefix="gan-dist-ckpt-") as directory:
            checkpoint.write_local(directory, state, meta)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory),
                             checkpoint_dir_name=name)

    def off_path_evaluations(self, cfg: Config) -> RayEvaluations:
        """A Ray actor of the run's own (eval.cpus, eval.gpus), started at rank 0's first submission."""
        return RayEvaluations(cfg, self.datasets)


@dataclass
class Refused:
    """What every worker returns, instead of training, when one of them cannot see the run's data or storage:
    the driver prints the message as one line (a raised error would print every worker's traceback)."""

    message: str


def _worker_entry(config: dict[str, Any]) -> LoopResult | Refused:
    cfg = config_from_dict(config["cfg"])

    def visible_data() -> dict[str, Dataset]:
        manifests = {name: Manifest(**given["manifest"]) for name, given in config["datasets"].items()}
        datasets = {name: Dataset(worker_data(name, config["datasets"][name]["uri"], manifest), manifest)
                    for name, manifest in manifests.items()}
        check_storage_visible(config["storage_probe"])
        return datasets

    datasets = _on_every_rank(visible_data)
    if isinstance(datasets, Refused):
        return datasets
    # Reads this worker's rows when they stay on its device, so a dataset that fails is refused by every rank.
    ctx = _on_every_rank(lambda: RayContext(cfg, datasets, config["run_uri"]))
    if isinstance(ctx, Refused):
        return ctx
    return config["loop"](ctx, cfg)


def _on_every_rank(make: Callable[[], T]) -> T | Refused:
    """make() on every rank; when it raises a UserError on any rank, every rank returns that refusal together:
    none is left waiting in a collective."""
    try:
        value, problem = make(), None
    except UserError as exc:
        value, problem = None, str(exc)
    problems = [p for p in collective.gather(problem) if p]
    return Refused(problems[0]) if problems else value


def worker_data(name: str, data_uri: str | None, manifest: Manifest) -> str:
    """The dataset as this worker's node sees it, checked to be the driver's (same content hash). With no --data
    every node prepares the embedded digits into its own cache: that is deterministic, and the driver's cache is
    on another machine in a cluster."""
    where = f"the worker on {ray.util.get_node_ip_address()}"
    uri = placement.dataset_uri(name, data_uri)
    try:
        seen = read_manifest(uri).content_hash
    except UserError:
        seen = None
    if seen == manifest.content_hash:
        return uri
    if placement.built_in(data_uri):
        raise UserError(f"the embedded dataset {name} prepared by {where} differs from the driver's (another "
                        f"scikit-learn, matplotlib or Pillow version?); install the same gan-dist environment on "
                        f"every node")
    flag = "--data" if name == "train" else f"--data-{name}"
    raise UserError(f"{flag} {data_uri} is not the driver's dataset as {where} sees it (a local folder on another "
                    f"machine?); on a cluster put the data in object storage (--data s3://...) or on a filesystem "
                    f"every node mounts")


def storage_probe(storage_uri: str) -> str | None:
    """A file the driver leaves in a local --storage for the start of the run: a worker that cannot see it runs
    on a machine that does not share that folder. Object storage needs no probe."""
    if storage.is_remote(storage_uri):
        return None
    os.makedirs(storage_uri, exist_ok=True)
    probe = os.path.join(storage_uri, f".gan-dist-probe-{uuid.uuid4().hex}")
    open(probe, "w").close()
    return probe


def check_storage_visible(probe: str | None) -> None:
    if probe is not None and not os.path.exists(probe):
        storage_uri = os.path.dirname(probe)
        raise UserError(f"--storage {storage_uri} is a local folder that the worker on "
                        f"{ray.util.get_node_ip_address()} cannot see; on a cluster use object storage "
                        f"(--storage s3://...) or a filesystem every node mounts")


def check_cluster(cfg: Config) -> None:
    check_ray(cfg.run.ray_address, cfg.run.min_workers, cfg.run.gpu)


def check_ray(address: str | None, num_workers: int, gpu: bool) -> None:
    """Before Ray starts: an unreachable --address fails in one line within seconds (Ray itself would retry for
    minutes), and so does --gpu for a local Ray on a machine without the GPUs (Ray would wait forever)."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        if gpu and torch.cuda.device_count() < num_workers:
            raise UserError(f"--gpu asks for {num_workers} GPU(s) and this machine has "
                            f"{torch.cuda.device_count()}; drop --gpu to run on CPUs, or --address a cluster "
                            f"with GPUs")
        return
    if address in ("auto", "local"):
        return
    client = address.startswith("ray://")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        host, port = address.removeprefix("ray://"), "10001" if client else "6379"
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise UserError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start it "
                        f"(`ray start --head`) or fix --address") from None


def ensure_ray(cfg: Config) -> None:
    start_ray(cfg.run.ray_address, cfg.run.max_workers, cfg.run.gpu, cfg.run.cpus_per_worker)


def start_ray(address: str | None, num_workers: int, gpu: bool, cpus_per_worker: float = 1.0,
              dashboard: bool = False) -> None:
    """Join the given cluster, or start a local one with enough logical CPUs for the workers *and* the Ray
    Data read tasks (with exactly one CPU per worker on a 2-core machine, the reads never get scheduled); with
    the dashboard, whose State API Ray Train's cleaner of a killed run's workers needs (tune stops trials so)."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS")  # set for `ray job submit` entrypoints
    runtime_env = _aws_runtime_env()
    if address:
        try:
            ray.init(address=address, runtime_env=runtime_env)
        except ConnectionError as exc:  # e.g. --address auto with no cluster running on this machine
            raise UserError(f"cannot join the Ray cluster at {address} ({_first_line(exc)}); start it "
                            f"(`ray start --head`) or fix --address") from None
        warn_missing_gpus(gpu, num_workers)
    else:
        needed = int(num_workers * cpus_per_worker) + 2
        ray.init(num_cpus=max(os.cpu_count() or 1, needed), include_dashboard=dashboard, runtime_env=runtime_env)


def warn_missing_gpus(gpu: bool, num_workers: int) -> None:
    """A joined cluster short of the GPUs asked for may still add them (an autoscaler): Ray waits."""
    have = ray.cluster_resources().get("GPU", 0)
    if gpu and have < num_workers:
        print(f"warning: --gpu asks for {num_workers} GPU(s) and the Ray cluster has {have:g}; waiting for "
              f"the cluster to add them (Ctrl-C to stop)", file=sys.stderr, flush=True)


def _aws_runtime_env() -> dict[str, Any] | None:
    """Train V2 does not forward the driver's AWS_* variables to its workers and Ray Data tasks; the job's
    runtime_env does (they stay in the cluster's memory, never in our files or logs). Inside a `ray job submit`
    job, variables the job's own runtime_env already sets are left to it: Ray refuses to merge the same key."""
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")).get("runtime_env") or {}
    taken = job.get("env_vars") or {}
    aws = {k: v for k, v in os.environ.items() if k.startswith("AWS_") and k not in taken}
    return {"env_vars": aws} if aws else None


def _failure_message(err: Exception) -> str | None:
    """The one-line message of a UserError raised in a worker, if that is what failed the run."""
    for failure in getattr(err, "worker_failures", {}).values():
        cause = getattr(failure, "cause", failure)
        if isinstance(cause, UserError):
            return str(cause)
    return None


def run_ray(loop: Callable, cfg: Config, datasets: dict[str, Dataset], run_uri: str,
            callbacks: Sequence[UserCallback] = ()) -> LoopResult:
    """Datasets the config does not name are the embedded ones, which each worker prepares on its own node."""
    ensure_ray(cfg)
    measures = task_class(cfg).measured(cfg, {name: data.manifest for name, data in datasets.items()})
    cfg = place_evaluation(cfg, bool(measures))
    storage_path, name = storage.absolute_uri(cfg.run.storage), os.path.basename(run_uri.rstrip("/"))
    configured = cfg.dataset_paths()
    given = {name: {"uri": configured[name] if placement.built_in(configured[name]) else
                    storage.absolute_uri(configured[name]), "manifest": vars(data.manifest)}
             for name, data in datasets.items()}
    probe = storage_probe(storage_path)
    forget_ray_checkpoint_record(run_uri)
    trainer = TorchTrainer(
        _worker_entry,
        train_loop_config={"cfg": cfg.model_dump(), "datasets": given, "run_uri": run_uri, "loop": loop,
                           "storage_probe": probe},
        scaling_config=scaling(cfg),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=cfg.run.restarts()),
            # Retention (newest K plus the best by a metric) is the loop's own, the same for both backends.
            checkpoint_config=CheckpointConfig(num_to_keep=None),
            callbacks=list(callbacks),
        ),
        # Read only by streamed workers (resident ones read their rows with pyarrow).
        datasets={name: shard_dataset(cfg, data.manifest, data.uri) for name, data in datasets.items()},
    )
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as err:
        raise UserError(_failure_message(err) or _failed_run_message(err, cfg, run_uri)) from None
    finally:
        if probe is not None:
            os.remove(probe)
    if isinstance(result.return_value, Refused):
        raise UserError(result.return_value.message)
    return result.return_value


def scaling(cfg: Config) -> ScalingConfig:
    """A fixed number of workers, or Ray Train's elastic range: Ray starts as many as the cluster has room for
    (at least MIN), restarts the group with those that remain when a worker is lost, and restarts it larger when it
    finds room at a resize check."""
    r = cfg.run
    workers = (r.min_workers, r.max_workers) if r.elastic else r.num_workers
    return ScalingConfig(num_workers=workers, use_gpu=r.gpu, resources_per_worker={"CPU": r.cpus_per_worker},
                         elastic_resize_monitor_interval_s=r.resize_check_s)


def forget_ray_checkpoint_record(run_uri: str) -> None:
    """Delete Ray's record of the checkpoints earlier attempts reported. gan-dist finds checkpoints in storage
    itself, and Ray refuses to start from a record that names checkpoints our retention has since deleted."""
    record = storage.join(run_uri, CHECKPOINT_MANAGER_SNAPSHOT_FILENAME)
    if storage.exists(record):
        fs, path = storage.resolve(record)
        fs.delete_file(path)


def _failed_run_message(err: Exception, cfg: Config, run_uri: str) -> str:
    """What failed, and --resume only where there is a checkpoint to resume from."""
    name = os.path.basename(run_uri.rstrip("/"))
    if checkpoint.latest_complete(run_uri) is None:
        after = "before its first checkpoint; nothing to resume: fix the cause and rerun"
    else:
        after = f"the newest complete checkpoint is kept: rerun with --resume --name {name} to continue"
    return f"training failed ({_first_line(err)}) after {cfg.run.restarts()} restart(s), {after}"


def _first_line(err: Exception) -> str:
    """The innermost worker or controller error, on one line."""
    failures = getattr(err, "worker_failures", None) or {}
    inner = next(iter(failures.values()), None) or getattr(err, "controller_failure", None) or err
    lines = [line.strip() for line in str(getattr(inner, "cause", inner)).splitlines() if line.strip()]
    return (lines[-1] if lines else type(inner).__name__)[:300]
