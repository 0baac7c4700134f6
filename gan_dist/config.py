"""Typed config tree: preset YAML + dotted `--set` overrides, validated with messages that name the bad key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gan_dist.errors import UserError

PRESET_DIR = Path(__file__).parent / "configs"
DEFAULT_PRESET = "dcgan-digits"


class _Section(BaseModel):
    # Unknown keys are errors: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    # A prepared shard directory (local or s3://); None trains on the embedded digits, prepared once into the cache.
    path: str | None = None
    shuffle: bool = True
    # resident: each worker reads its share of the rows once and keeps them on its device as uint8, sampling
    # batches there. stream: fixed-shape uint8 batches built outside the training process, pinned, copied ahead.
    # auto: resident when a worker's share fits in resident_max_share of its device memory (host RAM on CPU).
    placement: Literal["auto", "resident", "stream"] = "auto"
    resident_max_share: float = Field(0.25, gt=0, le=1)
    stream_workers: int = Field(2, ge=1, description="reader processes per worker for streamed data (local backend)")


class ModelConfig(_Section):
    arch: Literal["dcgan", "resnet_sn"] = "dcgan"
    z_dim: int = Field(64, ge=1)
    g_channels: int = Field(32, ge=1, description="width of the generator's last hidden stage")
    d_channels: int = Field(32, ge=1, description="width of the discriminator's first stage")


class TrainConfig(_Section):
    steps: int = Field(1500, ge=1)
    batch_size: int = Field(64, ge=1, description="per worker")
    lr_g: float = Field(2e-4, gt=0)
    lr_d: float = Field(2e-4, gt=0)
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    seed: int = 0
    log_every: int = Field(50, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    sample_every: int = Field(250, ge=1, description="steps between sample grids from the fixed latents")
    loss: Literal["nonsaturating", "hinge"] = "nonsaturating"
    # Speed switches. Each applies on CUDA only and falls back to plain eager fp32 on the CPU.
    bf16: bool = Field(True, description="bf16 autocast")
    fused_adam: bool = Field(True, description="Adam's fused CUDA kernel; also skips non-finite updates on the device")
    # auto: reduce-overhead (CUDA graphs; these GANs are launch-bound at per-GPU batches of 64-256) on CUDA, off on CPU.
    compile: Literal["auto", "off", "default", "reduce-overhead", "max-autotune"] = "auto"
    compile_backend: str = Field("inductor", description="torch.compile backend; aot_eager checks graph safety cheaply")
    # One D forward on cat(real, fake) when D has no batch norm (batch statistics would mix the two).
    concat_d_forward: bool = True
    # A NaN/Inf gradient skips that update; this many skipped steps in a row (seen at a log step) restore the
    # newest checkpoint and multiply both learning rates by nonfinite_lr_factor.
    nonfinite_patience: int = Field(3, ge=1)
    nonfinite_lr_factor: float = Field(0.5, gt=0, le=1)


class RunConfig(_Section):
    name: str | None = Field(None, description="run name; default: preset name + timestamp")
    storage: str = Field("runs", description="where runs live: a local path or s3://bucket/prefix")
    backend: Literal["auto", "local", "ray"] = "auto"
    num_workers: int = Field(1, ge=1)
    gpu: bool = False
    ray_address: str | None = None
    cpus_per_worker: float = Field(1.0, gt=0)
    resume: bool = False
    keep_checkpoints: int = Field(3, ge=1, description="newest checkpoints kept")
    keep_best: str | None = Field(None, description="also keep the best checkpoint by this logged metric")
    keep_best_mode: Literal["min", "max"] = "min"
    resume_from: str | None = Field(None, description="start from this checkpoint (or run) when the run has none")
    max_failures: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _local_is_one_process(self) -> "RunConfig":
        if self.backend == "local" and self.num_workers > 1:
            raise ValueError("the local backend runs one process; use --backend ray for --num-workers > 1")
        return self

    def resolved_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        return "ray" if self.num_workers > 1 or self.ray_address else "local"


class LogConfig(_Section):
    # auto: WANDB_MODE if set, else online when WANDB_API_KEY is set, else disabled.
    wandb: Literal["auto", "online", "offline", "disabled"] = "auto"
    wandb_project: str = "gan-dist"
    wandb_entity: str | None = None
    console_every_s: float = Field(10.0, gt=0, description="seconds between console lines (Ray, or no terminal)")


class Config(_Section):
    preset: str = DEFAULT_PRESET
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    run: RunConfig = RunConfig()
    log: LogConfig = LogConfig()


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"unknown config key '{key}' (check the spelling; `gan-dist train --help` lists the flags)"
    value = first.get("input")
    return f"bad config value {key}={value!r}: {first['msg']}"


def parse_override(text: str) -> tuple[str, Any]:
    """`train.lr_g=1e-4` -> ("train.lr_g", 0.0001); values are read as YAML scalars."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"bad --set '{text}': expected key=value, e.g. --set train.lr_g=1e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"unknown config key '{key}': '{part}' is a value, not a section")
        node = child
    node[leaf] = value


def _read_preset(name_or_file: str) -> tuple[str, dict]:
    path = Path(name_or_file)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_file}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
        raise UserError(f"no preset or config file '{name_or_file}' (presets: {known})")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(tree, dict):
        raise UserError(f"config file {path} must hold a mapping of sections (data, model, train, run)")
    tree.setdefault("preset", path.stem)
    return path.stem, tree


def load_config(preset: str | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Build the config from a preset name or YAML file, then apply dotted overrides."""
    _, tree = _read_preset(preset or DEFAULT_PRESET)
    for key, value in (overrides or {}).items():
        _set_dotted(tree, key, value)
    return config_from_dict(tree)


def config_from_dict(tree: dict) -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise UserError(_describe(err)) from None
