"""`gan-dist bench`: the training step of any task, in this process on one device, fed four ways.

    synthetic   a few batches already on the device, over and over: the step's own ceiling
    resident    real shards, each worker's rows kept on the device (data.placement=resident)
    stream      real shards through the streaming reader: reader processes, pinned memory, copies ahead
    ray-stream  (--ray) real shards through Ray Data, decoded in its tasks: the Ray backend's streamed path
    reference   the plain PyTorch loop of reference_gan_bench.py (--reference PATH) at the same model and batch

Without --data, synthetic shards stand in for each dataset the task reads (a translation's a and b alike). Prints
images/s and the ratios the throughput targets are stated in; --json writes the rows.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from gan_dist import storage
from gan_dist.config import Config
from gan_dist.data.bench import synthetic_images
from gan_dist.data.images import ImageSpec
from gan_dist.data.prepare import PrepareOptions, write_dataset
from gan_dist.data.placement import Dataset, Positions, open_reader, read_together
from gan_dist.data.reader import Batch, DataPosition, read_manifest
from gan_dist.data.shards import Manifest
from gan_dist.data.sources import ArraySource
from gan_dist.errors import UserError
from gan_dist.train.task import Task
from gan_dist.train.tasks import build_task, task_class

# The reference script's models, by our architecture name: (its model key, its loss name).
REFERENCE_MODELS = {"dcgan": ("dcgan64", "bce"), "resnet_sn": ("sngan32", "hinge")}


@dataclass
class BenchOptions:
    device: torch.device
    steps: int = 40  # timed steps per repeat
    warmup: int = 8  # untimed steps first (compilation, CUDA graph capture, reader start-up)
    repeats: int = 3  # the median repeat is reported
    data: str | None = None  # prepared shards; None writes synthetic ones at resolution × channels
    resolution: int = 64
    channels: int = 3
    reference: str | None = None  # path to reference_gan_bench.py
    ray: bool = False  # also time the Ray Data streamed path (joins or starts a Ray)


@dataclass
class BenchRow:
    path: str
    img_per_s: float
    step_ms: float
    note: str = ""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[int], None], batch_size: int, options: BenchOptions) -> tuple[float, float]:
    """(images/s, ms per step) of the median of `repeats` windows of `steps` steps, device synchronised."""
    for i in range(options.warmup):
        step(i)
    _sync(options.device)
    windows, i = [], options.warmup
    for _ in range(options.repeats):
        started = time.perf_counter()
        for _ in range(options.steps):
            step(i)
            i += 1
        _sync(options.device)
        windows.append((time.perf_counter() - started) / options.steps)
    seconds = statistics.median(windows)
    return batch_size / seconds, seconds * 1000


Steps = Iterator[tuple[dict[str, Batch], Positions]]  # one batch of each dataset the task reads, per step


def _project_step(task: Task, batches: Steps) -> Callable[[int], None]:
    def step(i: int) -> None:
        task.train_step(next(batches)[0], i)
    return step


def _cycle(batches: list[dict[str, Batch]]) -> Steps:
    i = 0
    while True:
        yield batches[i % len(batches)], {}
        i += 1


SYNTHETIC_CLASSES = 10  # synthetic shards are labeled, so a class-conditional model is timed conditional
SYNTHETIC_URI = "bench's synthetic shards (pass a prepared dataset with --data)"  # what a refusal calls them


def _synthetic_shards(root: str, options: BenchOptions, count: int) -> str:
    uri = str(Path(root) / "shards")
    labels = np.arange(count) % SYNTHETIC_CLASSES
    source = ArraySource(synthetic_images(count, options.resolution, channels=options.channels), labels,
                         [str(k) for k in range(SYNTHETIC_CLASSES)], "synthetic")
    write_dataset(source, uri, PrepareOptions(ImageSpec(options.resolution, options.channels), shard_size=4096),
                  progress=False)
    return uri


REFERENCE_HINT = "pass the reference_gan_bench.py from shared/reference"


def load_reference(path: str) -> ModuleType:
    """The reference script as a module, checked to be that script: a wrong file is one line now, not a traceback
    after minutes of timing."""
    if not Path(path).exists():
        raise UserError(f"--reference {path} does not exist; {REFERENCE_HINT}")
    if not Path(path).is_file():
        raise UserError(f"--reference {path} is a folder; {REFERENCE_HINT}")
    loader = importlib.machinery.SourceFileLoader("reference_gan_bench", path)  # any name, not only *.py
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    try:
        loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # its own code, run on import: a syntax error, a missing package, ...
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        raise UserError(f"--reference {path} cannot be imported ({detail}); {REFERENCE_HINT}") from None
    models = getattr(module, "MODELS", None)
    keys = [key for key, _ in REFERENCE_MODELS.values()]
    if not (isinstance(models, dict) and set(keys) <= models.keys() and callable(getattr(module, "make_step", None))):
        raise UserError(f"--reference {path} lacks the reference's MODELS table ({', '.join(keys)}) or make_step; "
                        f"{REFERENCE_HINT}")
    return module


def check_json_target(path: str) -> None:
    """--json, before the benchmark: a .json path whose folder takes it, replacing at most an earlier bench result
    (never a manifest, a config or anything else that happens to be there)."""
    exists = storage.check_output_file(path, "--json")
    if not path.lower().endswith(".json"):
        raise UserError(f"--json {path}: the rows are JSON; pass a path ending in .json")
    if exists and not _is_bench_result(path):
        raise UserError(f"--json {path} is a file that is not an earlier bench result, and writing the rows would "
                        f"replace it; pass a new .json path")


def _is_bench_result(path: str) -> bool:
    with storage.user_errors(path, "read"):
        data = storage.read_bytes(path)
    try:
        record = json.loads(data)
    except ValueError:  # not JSON, or not text
        return False
    return isinstance(record, dict) and "rows" in record


def _reference_step(module: ModuleType, cfg: Config, task: Task, manifest: Manifest,
                    options: BenchOptions) -> Callable[[int], None] | str:
    """The reference's own step at our config, or why it cannot be compared (a different architecture)."""
    if cfg.model.arch not in REFERENCE_MODELS:
        return (f"not comparable: the reference has no {cfg.model.arch} model (only "
                f"{', '.join(REFERENCE_MODELS)})")
    key, loss = REFERENCE_MODELS[cfg.model.arch]
    make_g, make_d, resolution, z_dim, _ = module.MODELS[key]
    module.DEV = options.device.type
    torch.manual_seed(0)
    G, D = make_g().to(options.device), make_d().to(options.device)
    ours = (manifest.resolution, manifest.channels, cfg.model.z_dim, _count(task.nets["G"]), _count(task.nets["D"]))
    theirs = (resolution, 3, z_dim, _count(G), _count(D))
    if ours != theirs:
        return (f"not comparable: reference {key} has (resolution, channels, z_dim, G params, D params) = {theirs}, "
                f"this config {ours}")
    fused = options.device.type == "cuda"
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999), fused=fused)
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999), fused=fused)
    dtype = torch.bfloat16 if task.features.bf16 else None
    step = module.make_step(G, D, opt_g, opt_d, loss, z_dim, cfg.train.batch_size, dtype, False)
    reals = [torch.rand(cfg.train.batch_size, 3, resolution, resolution, device=options.device) * 2 - 1
             for _ in range(4)]
    return lambda i: step(reals[i % 4])


@dataclass
class _RayReader:
    """The Ray backend's streamed path of one dataset, iterated in this process."""

    cfg: Config
    data: Dataset
    device: torch.device

    def batches(self, start: DataPosition) -> Iterator[tuple[Batch, DataPosition]]:
        from gan_dist.data.ray_stream import shard_dataset, stream_batches

        return stream_batches(shard_dataset(self.cfg, self.data.manifest, self.data.uri).iterator(), self.cfg, 0, 1,
                              self.device, start)


def _ray_batches(cfg: Config, datasets: dict[str, Dataset], device: torch.device) -> Steps:
    """Each dataset through Ray Data (joins or starts a Ray), a batch of each per step."""
    from gan_dist.runtime.ray_backend import ensure_ray

    ensure_ray(cfg)
    return read_together({name: _RayReader(cfg, data, device) for name, data in datasets.items()}, tuple(datasets),
                         {})


def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _synthetic_manifest(options: BenchOptions, count: int) -> Manifest:
    """The manifest the synthetic shards will have: the task checks it before they are written."""
    return Manifest(options.resolution, options.channels, count, [],
                    class_names=[str(k) for k in range(SYNTHETIC_CLASSES)])


def run_bench(cfg: Config, options: BenchOptions) -> list[BenchRow]:
    batch = cfg.train.batch_size
    reference_module = load_reference(options.reference) if options.reference else None  # before any work
    kind = task_class(cfg)
    count = max(min(batch * (options.warmup + options.repeats * options.steps), 60_000), 2 * batch)
    if options.data is None:  # the task's own checks (sizes, classes), before the synthetic shards are written
        synthetic = Dataset(SYNTHETIC_URI, _synthetic_manifest(options, count))
        kind.check_data(cfg, {name: synthetic for name in kind.datasets})
    with tempfile.TemporaryDirectory(prefix="gan-dist-bench-") as root:
        data_uri = options.data or _synthetic_shards(root, options, count)
        datasets = {name: Dataset(data_uri, read_manifest(data_uri)) for name in kind.datasets}
        kind.check_data(cfg, datasets)  # --data's images, as `train` checks them
        manifest = datasets[kind.datasets[0]].manifest

        def readers(resident: bool) -> Steps:
            opened = {name: open_reader(cfg, data.uri, data.manifest, 0, 1, options.device, resident)
                      for name, data in datasets.items()}
            return read_together(opened, kind.datasets, {})

        def fresh_task() -> Task:  # each path starts from the same weights and optimizer state
            return build_task(cfg, datasets, options.device)

        def measure(path: str, batches: Steps, note: str) -> BenchRow:
            trained = fresh_task()
            img_per_s, step_ms = time_steps(_project_step(trained, batches), batch, options)
            return BenchRow(path, img_per_s, step_ms, note or trained.features.describe())

        # Opened first: it refuses a dataset smaller than one batch before any timing.
        resident = readers(resident=True)
        on_device = [next(resident)[0] for _ in range(4)]
        rows = [measure("synthetic", _cycle(on_device), "")]
        rows.append(measure("resident", resident, f"{manifest.count} images on {options.device}"))
        rows.append(measure("stream", readers(resident=False), f"{cfg.data.stream_workers} reader processes"))
        if options.ray:
            rows.append(measure("ray-stream", _ray_batches(cfg, datasets, options.device),
                                "Ray Data in this process, decoded in its tasks"))
        if reference_module:
            reference = _reference_step(reference_module, cfg, fresh_task(), manifest, options)
            if isinstance(reference, str):
                rows.append(BenchRow("reference", 0.0, 0.0, reference))
            else:
                rows.append(BenchRow("reference", *time_steps(reference, batch, options), "plain eager PyTorch"))
    return rows


def format_rows(rows: list[BenchRow]) -> str:
    by_path = {row.path: row.img_per_s for row in rows}
    lines = [f"{'path':<11}{'img/s':>11}{'ms/step':>9}{'÷synthetic':>12}{'÷reference':>12}  note"]
    for row in rows:
        vs_synthetic = row.img_per_s / by_path["synthetic"]
        vs_reference = row.img_per_s / by_path["reference"] if by_path.get("reference") else None
        lines.append(f"{row.path:<11}{row.img_per_s:>11,.0f}{row.step_ms:>9.2f}{vs_synthetic:>11.2f}x"
                     f"{f'{vs_reference:.2f}x' if vs_reference else '-':>12}  {row.note}")
    return "\n".join(lines)


def write_json(rows: list[BenchRow], cfg: Config, options: BenchOptions, path: str) -> None:
    device = torch.cuda.get_device_name(options.device) if options.device.type == "cuda" else "cpu"
    record = {"torch": torch.__version__, "device": device, "batch_size": cfg.train.batch_size,
              "model": cfg.model.model_dump(), "rows": [asdict(row) for row in rows]}
    storage.write_bytes(path, json.dumps(record, indent=1).encode())  # local or s3://, never a half-written file
