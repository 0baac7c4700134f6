"""The typed config tree (pydantic v2): one section class per concern, per model family and per task kind."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationInfo, field_validator, model_validator

from gan_dist.seeds import MAX_SEED

PRESET_DIR = Path(__file__).parent.parent / "configs"
DEFAULT_PRESET = "dcgan-digits"
# A run name is one directory under run.storage: it must not climb out of it or hide.
RUN_NAME = re.compile(r"(?!.*\.\.)[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")
WORKER_RANGE = re.compile(r"(\d+)(?:-(\d+))?")
ELASTIC_RESTARTS = 10  # an elastic run's default worker-group restarts: lost nodes are expected, a bug is not


class _Section(BaseModel):
    # Unknown keys are errors: a typo must not silently fall back to a default. inf/nan pass every bound and
    # then wreck training.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic takes true as 1: `--set train.steps=true` would train one step
        if isinstance(value, bool) and cls.model_fields[info.field_name].annotation in (int, float):
            raise ValueError("expected a number, not true/false")
        return value


class DataConfig(_Section):
    """Where the images come from and how a worker reads them."""

    # The key that configures each dataset a task reads (by the dataset's name), and its command-line flag.
    KEYS: ClassVar[dict[str, str]] = {"train": "path", "a": "a", "b": "b"}
    FLAGS: ClassVar[dict[str, str]] = {"path": "--data", "a": "--data-a", "b": "--data-b"}

    path: str | None = Field(None, description="a prepared shard folder or s3:// URI (`--data`), or embedded:NAME for "
                             "a built-in dataset (digits, typeset-digits, digit-edges); null: the embedded digits, "
                             "prepared once into ~/.cache/gan-dist (or $GAN_DIST_CACHE; a damaged copy there is "
                             "checked by its content hash and prepared again)")
    a: str | None = Field(None, description="translation's dataset A (`--data-a`), read instead of `path`; any size; "
                          "null: the embedded handwritten digits")
    b: str | None = Field(None, description="translation's dataset B (`--data-b`), at A's resolution; null: the "
                          "embedded typeset digits")
    shuffle: bool = Field(True, description="reshuffle every epoch (seeded)")
    placement: Literal["auto", "resident", "stream"] = Field(
        "auto", description="resident: each worker reads its share of the rows once and keeps them on its device as "
        "uint8, sampling batches there; stream: fixed-shape uint8 batches built outside the training process, pinned, "
        "copied ahead; auto: resident when a worker's share fits in `resident_max_share` of its device memory (host "
        "RAM on the CPU), else stream (docs/performance.md)")
    resident_max_share: float = Field(0.25, gt=0, le=1, description="the share of a device's memory a worker's rows "
                                      "may take to stay resident under `placement: auto`")
    stream_workers: int = Field(2, ge=1, description="reader processes per worker for streamed data (local backend)")


class _ModelSection(_Section):
    """What every model family has; each family's section adds its own keys (see models/)."""

    z_dim: int = Field(64, ge=1, description="size of the latent vector z the generator starts from")
    g_channels: int = Field(32, ge=1, description="width of the generator's last hidden stage")
    d_channels: int = Field(32, ge=1, description="width of the discriminator's first stage")
    conditional: bool | Literal["auto"] = Field(False, description="class-conditional G and D, classes from the "
                                                "dataset; auto: conditional when the dataset has classes (an unlabeled "
                                                "folder trains unconditionally)")


class DCGANConfig(_ModelSection):
    """DCGAN (Radford et al. 2016). Conditional: a label embedding next to z in G, a projection discriminator."""

    arch: Literal["dcgan"] = Field("dcgan", description="the model family: DCGAN (Radford et al. 2016), conditional "
                                   "by a label embedding in G and a projection D")
    label_dim: int = Field(16, ge=1, description="conditional: size of the label embedding G takes next to z")


class ResNetSNConfig(_ModelSection):
    """Conditional: conditional batch norm in G, a projection discriminator (Miyato & Koyama 2018)."""

    arch: Literal["resnet_sn"] = Field("resnet_sn", description="the model family: ResNets with spectral norm in D "
                                       "(Miyato et al. 2018)")


class TranslatorConfig(_Section):
    """The nets of unpaired translation (CycleGAN and CUT): ResNet generators and PatchGAN discriminators."""

    arch: Literal["resnet_patchgan"] = Field("resnet_patchgan", description="the translator nets: ResNet generators "
                                             "and PatchGAN discriminators, instance norm (CycleGAN, CUT, inpainting)")
    g_channels: int = Field(64, ge=1, description="width of the generator's first stage (ngf)")
    d_channels: int = Field(64, ge=1, description="width of the discriminator's first stage (ndf)")
    blocks: int = Field(9, ge=1, description="residual blocks at the generator's lowest resolution")
    downsamplings: int = Field(2, ge=1, description="stride-2 stages of the generator (inputs: multiples of 2^this)")
    d_layers: int = Field(3, ge=1, description="stride-2 convs of the PatchGAN (3: 70x70 patches)")


class R3GANConfig(_ModelSection):
    """R3GAN's modernised ResNets (Huang et al. 2024): no normalisation, grouped convs, low-pass resampling.
    Conditional: a class embedding next to z in G, a projection discriminator."""

    arch: Literal["r3gan"] = Field("r3gan", description="the model family: R3GAN's modernised ResNets (Huang et al. "
                                   "2024)")
    g_channels: int = Field(768, ge=1, description="width of G's stages up to taper_above (halved per doubling above)")
    d_channels: int = Field(768, ge=1, description="width of D's stages up to taper_above (halved per doubling above)")
    taper_above: int = Field(32, ge=4, description="stages of a larger side halve the width per doubling (the "
                                                  "paper: 32)")
    blocks: int | list[int] = Field(2, description="residual blocks per stage, or a list: one number per stage from "
                                                   "4x4 up (e.g. [2, 2, 1, 0] at 32x32)")
    expansion: int = Field(2, ge=1, description="a block's 1x1 conv widens by this before its grouped 3x3 conv")
    group_channels: int = Field(16, ge=1, description="channels per group of the grouped 3x3 conv")
    label_dim: int | None = Field(None, ge=1, description="conditional: size of G's class embedding (null: z_dim)")

    @field_validator("blocks")
    @classmethod
    def _some_blocks(cls, blocks: int | list[int]) -> int | list[int]:
        counts = [blocks] if isinstance(blocks, int) else blocks
        if any(count < 0 for count in counts) or sum(counts) < 1:
            raise ValueError("blocks per stage are 0 or more, at least one in all")
        return blocks


class UNetConfig(_Section):
    """The nets of paired translation (pix2pix): a U-Net generator with skip connections and a PatchGAN that judges
    (input, output) pairs."""

    arch: Literal["unet_patchgan"] = Field("unet_patchgan", description="the paired translator nets: a U-Net "
                                           "generator and a PatchGAN on (input, output) pairs, instance norm (pix2pix)")
    g_channels: int = Field(64, ge=1, description="width of the U-Net's first stage (ngf); stages double it up to 8x")
    d_channels: int = Field(64, ge=1, description="width of the discriminator's first stage (ndf)")
    depth: int | None = Field(None, ge=2, description="the U-Net's stride-2 stages (inputs: multiples of 2^this); "
                              "null: down to a 1x1 bottleneck, log2 of the image side (the reference's unet_256: 8)")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout in up to three decoder stages above the bottleneck "
                           "(not the two next to the output), in training only (the reference's 0.5; 0: none)")
    d_layers: int = Field(3, ge=1, description="stride-2 convs of the PatchGAN (3: 70x70 patches)")


MODEL_SECTIONS = (DCGANConfig, ResNetSNConfig, R3GANConfig, TranslatorConfig, UNetConfig)


def _tagged_union(sections: tuple[type[BaseModel], ...], field: str) -> Any:
    """One section per kind, told apart by `field` (the first section's kind when not given)."""
    default = sections[0].model_fields[field].default

    def tag(value: Any) -> Any:
        return value.get(field, default) if isinstance(value, dict) else getattr(value, field, None)

    return Annotated[Union[tuple(Annotated[section, Tag(section.model_fields[field].default)]
                                 for section in sections)], Discriminator(tag)]


# One section per model family, told apart by `arch` (dcgan when not given): a new family adds a class to
# MODEL_SECTIONS and a module in models/.
ModelConfig = _tagged_union(MODEL_SECTIONS, "arch")


class _TaskSection(_Section):
    """What every task's section says of its kind, as class-level facts the rules across sections read: the datasets
    one step reads (by name; DataConfig.KEYS says which key configures each), the model families it trains,
    whether it takes train.n_dis D updates per step, and whether its rows are pairs (an input beside each image)."""

    DATASETS: ClassVar[tuple[str, ...]] = ("train",)
    ARCHS: ClassVar[tuple[str, ...]] = ()
    MULTIPLE_D_UPDATES: ClassVar[bool] = False
    PAIRED: ClassVar[bool] = False

    @classmethod
    def kind_name(cls) -> str:
        return cls.model_fields["kind"].default


class GenerationTaskConfig(_TaskSection):
    """Images from noise, unconditional or class-conditional (model.conditional): one dataset, `data.path`."""

    ARCHS = ("dcgan", "resnet_sn", "r3gan")
    MULTIPLE_D_UPDATES = True
    kind: Literal["generation"] = Field("generation", description="the task: images from noise")


class CycleGANTaskConfig(_TaskSection):
    """Unpaired translation A <-> B (Zhu et al. 2017): two generators, two discriminators, cycle consistency."""

    DATASETS = ("a", "b")
    ARCHS = ("resnet_patchgan",)
    DIRECTIONS: ClassVar[tuple[str, ...]] = ("a2b", "b2a")  # what it translates: evaluation judges each

    kind: Literal["cyclegan"] = Field("cyclegan", description="the task: unpaired translation A <-> B by CycleGAN")
    cycle_weight: float = Field(10.0, ge=0, description="|G_ba(G_ab(a)) - a| and back, the paper's lambda")
    identity_weight: float = Field(0.5, ge=0, description="|G_ab(b) - b| and back, x cycle_weight (0 turns it off)")
    pool_size: int = Field(50, ge=0, description="earlier fakes each D also sees, per worker (0: none)")


class CUTTaskConfig(_TaskSection):
    """Unpaired translation A -> B by contrastive learning (Park et al. 2020): one generator, PatchNCE, no cycle."""

    DATASETS = ("a", "b")
    ARCHS = ("resnet_patchgan",)
    DIRECTIONS: ClassVar[tuple[str, ...]] = ("a2b",)

    kind: Literal["cut"] = Field("cut", description="the task: unpaired translation A -> B by CUT")
    nce_weight: float = Field(1.0, gt=0, description="PatchNCE(a, G(a)), the paper's lambda_NCE")
    nce_identity: bool = Field(True, description="also PatchNCE(b, G(b)) (CUT; false: FastCUT's setting)")
    nce_temperature: float = Field(0.07, gt=0, description="temperature of PatchNCE's softmax")
    num_patches: int = Field(256, ge=1, description="locations sampled per layer and image")
    head_units: int = Field(256, ge=1, description="width of the MLP head on the encoder's features")


MASK_KINDS = ("center", "boxes", "strokes")  # drawn by gan_dist/masks.py


class InpaintTaskConfig(_TaskSection):
    """Image completion: G fills the holes of masked images (the masked image and its mask in, the image out; what
    was known is kept), judged by a PatchGAN on the completed image; L1 on the hole and on the rest."""

    ARCHS = ("resnet_patchgan",)
    kind: Literal["inpaint"] = Field("inpaint", description="the task: image completion")
    masks: str = Field("center,boxes,strokes", description=f"kinds of holes drawn per image, comma-separated: "
                                                           f"{', '.join(MASK_KINDS)}")
    hole_weight: float = Field(10.0, ge=0, description="L1 on the hole, against the adversarial loss's 1")
    valid_weight: float = Field(1.0, ge=0, description="L1 on the known pixels of G's raw output")
    adversarial_weight: float = Field(1.0, ge=0, description="the PatchGAN's verdict on the completed image")

    @field_validator("masks")
    @classmethod
    def _mask_kinds(cls, text: str) -> str:
        return _comma_list(text, MASK_KINDS)

    def mask_kinds(self) -> tuple[str, ...]:
        return tuple(self.masks.split(","))


class Pix2PixTaskConfig(_TaskSection):
    """Paired translation (Isola et al. 2017): a U-Net from each row's input image to its image, judged by a PatchGAN
    on (input, output) pairs; the adversarial loss plus L1 to the target. One paired dataset, `data.path`."""

    ARCHS = ("unet_patchgan",)
    PAIRED = True
    DIRECTIONS: ClassVar[tuple[str, ...]] = ("a2b",)  # A: the rows' inputs, B: their images (pix2pix's AtoB)

    kind: Literal["pix2pix"] = Field("pix2pix", description="the task: paired translation input -> image by pix2pix")
    l1_weight: float = Field(100.0, ge=0, description="|G(input) - image|, the paper's lambda")


TASK_SECTIONS = (GenerationTaskConfig, CycleGANTaskConfig, CUTTaskConfig, InpaintTaskConfig, Pix2PixTaskConfig)
TaskConfig = _tagged_union(TASK_SECTIONS, "kind")


AUGMENTATIONS = ("translation", "cutout", "color")


def _comma_list(text: str, allowed: tuple[str, ...], alone: str | None = None) -> str:
    """A comma-separated choice from `allowed` (or the one word `alone`), normalised to "a,b"."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if alone is not None and names == [alone]:
        return alone
    if not names or any(name not in allowed for name in names):
        raise ValueError(f"choose from {', '.join(allowed)} (comma-separated){f', or {alone}' if alone else ''}")
    return ",".join(names)


class TrainConfig(_Section):
    """The optimisation: steps, Adam, the loss, D's regularizers and augmentation, the EMA, speed switches and the
    non-finite guard (docs/stable-training.md)."""

    steps: int = Field(1500, ge=1, description="total steps")
    batch_size: int = Field(64, ge=1, description="images per worker per step")
    lr_g: float = Field(2e-4, gt=0, description="the generator's Adam learning rate")
    lr_d: float = Field(2e-4, gt=0, description="the discriminator's Adam learning rate")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam's beta1")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam's beta2")
    seed: int = Field(0, description=f"initial weights, data order and latents, through one seed function (0 to "
                      f"{MAX_SEED}, 2**63 - 1)")
    log_every: int = Field(50, ge=1, description="steps between metric lines (metrics.jsonl, W&B, console)")
    checkpoint_every: int = Field(500, ge=1, description="steps between checkpoints")
    sample_every: int = Field(250, ge=1, description="steps between sample grids from the fixed latents")
    lr_decay_start: float | None = Field(None, ge=0, lt=1, description="after this fraction of `train.steps` both "
                                         "learning rates fall linearly, reaching 0 at the last step (CycleGAN: 0.5, "
                                         "its 100 constant + 100 decaying epochs); null: constant. A pure function of "
                                         "the step, so a resume keeps it (a resume with a larger --steps stretches it)")
    loss: Literal["nonsaturating", "hinge", "wgan", "lsgan", "rpgan"] = Field(
        "nonsaturating", description="the D and G losses on D's raw logits: nonsaturating; hinge (the resnet-sn-32 "
        "preset); wgan, the Wasserstein critic loss (pair it with `gp_weight` and a discriminator without batch norm); "
        "lsgan, least squares (Mao et al. 2017; D's loss halved), CycleGAN's and CUT's; rpgan, the relativistic "
        "pairing loss, each real image against a fake (R3GAN's, with `r1_gamma` and `r2_gamma`; Huang et al. 2024)")
    n_dis: int = Field(1, ge=1, description="D updates per G update, each on its own batch of real images")
    r1_gamma: float = Field(0.0, ge=0, description="R1: gamma/2 x |grad D(real)|^2 (Mescheder et al. 2018); 0: off")
    r2_gamma: float = Field(0.0, ge=0, description="R2: gamma/2 x |grad D(fake)|^2, the same penalty on generated "
                            "images (R3GAN; one double backward for both); 0: off")
    r1_every: int = Field(16, ge=1, description="lazy R1 and R2: every this many D updates, scaled by it")
    gp_weight: float = Field(0.0, ge=0, description="WGAN-GP: lambda x (|grad D(mix)| - 1)^2 at random real/fake "
                             "mixes (Gulrajani et al. 2017; 10 in the paper); 0: off")
    lecam_weight: float = Field(0.0, ge=0, description="LeCam (Tseng et al. 2021): pulls D(real) and D(fake) toward "
                                "the other's running mean; 0: off")
    lecam_decay: float = Field(0.99, ge=0, lt=1, description="LeCam running means' decay per D update")
    augment: str = Field("off", description="differentiable augmentation of every image D sees, real and fake, in the "
                         "D and the G update (DiffAugment, Zhao et al. 2020): comma-separated from translation, cutout, "
                         "color; off for none")
    augment_p: float | None = Field(None, ge=0, le=1, description="chance each transform applies to an image; "
                                    "null: 1 (DiffAugment), or 0 at the start when adaptive")
    ada_target: float | None = Field(None, gt=0, lt=1, description="ADA (Karras et al. 2020): p rises while D(real) "
                                     "is positive more often than this, falls otherwise (0.6 in the paper); null: a "
                                     "fixed p")
    ada_interval: int = Field(4, ge=1, description="steps between adjustments of the adaptive p")
    ada_kimg: float = Field(100.0, gt=0, description="thousands of real images for p to move by 1")
    ema: bool = Field(True, description="an exponential moving average of G's weights drives the grids, `gan-dist "
                      "sample`, `gan-dist evaluate` and generator.safetensors (stylegan2-ada's G_ema)")
    ema_half_life_kimg: float = Field(10.0, ge=0, description="the EMA's half-life in thousands of images; 0: the "
                                      "average is G itself")
    ema_rampup: float | None = Field(0.05, gt=0, description="early on the half-life is shortened to this x the "
                                     "images seen so far; null: the full half-life from the first step")
    bf16: bool = Field(True, description="bf16 autocast (CUDA only, as every speed switch; the CPU runs eager fp32)")
    fused_adam: bool = Field(True, description="Adam's fused CUDA kernel; also skips non-finite updates on the device, "
                             "without a host sync")
    compile: Literal["auto", "off", "default", "reduce-overhead", "max-autotune"] = Field(
        "auto", description="torch.compile mode; auto: reduce-overhead (CUDA graphs: these GANs are launch-bound at "
        "per-GPU batches of 64-256) on CUDA, where a graph that fails to compile runs eagerly, and off on the CPU; an "
        "explicit mode fails loudly")
    compile_backend: str = Field("inductor", description="torch.compile backend; `compile_backend: aot_eager` checks "
                                 "graph capture cheaply, without a compiler")
    concat_d_forward: bool = Field(True, description="one D forward on cat(real, fake) when D has no batch norm "
                                   "(batch statistics would mix the two)")
    nonfinite_patience: int = Field(3, ge=1, description="a NaN/Inf gradient skips that update; this many skipped "
                                    "steps in a row (seen at a log step) restore the newest checkpoint and multiply "
                                    "both learning rates by `nonfinite_lr_factor`")
    nonfinite_lr_factor: float = Field(0.5, gt=0, le=1, description="what a non-finite restore multiplies both "
                                       "learning rates by")

    @field_validator("augment")
    @classmethod
    def _known_transforms(cls, text: str) -> str:
        return _comma_list(text, AUGMENTATIONS, alone="off")

    def augmentations(self) -> tuple[str, ...]:
        return () if self.augment == "off" else tuple(self.augment.split(","))

    @property
    def real_per_step(self) -> int:
        """Real images one worker reads per step: a batch for each D update."""
        return self.batch_size * self.n_dis

    @field_validator("seed")
    @classmethod
    def _seed_in_range(cls, seed: int) -> int:
        if not 0 <= seed <= MAX_SEED:
            raise ValueError(f"a seed is 0 to {MAX_SEED} (2**63 - 1)")
        return seed


# train.* keys a cosine schedule may move (R3GAN schedules all of them).
SCHEDULED = ("lr_g", "lr_d", "beta2", "r1_gamma", "r2_gamma", "ema_half_life_kimg", "augment_p")
# Keys a resume applies when changed (docs/runs-and-resume.md): the optimizers are retuned, the rest read anew.
RETUNABLE = ("train.lr_g", "train.lr_d", "train.beta1", "train.beta2", "train.r1_gamma", "train.r2_gamma",
             "train.gp_weight", "train.ada_target", "train.lecam_weight", "train.ema_half_life_kimg")


class ScheduleConfig(_Section):
    """Cosine schedules (R3GAN's): each key set here moves from its train.* value at the first image to this value
    after `kimg` thousand images seen, along half a cosine, and stays there. A key left null stays constant. A pure
    function of the images seen, which the checkpoint holds: a resume continues every schedule exactly."""

    kimg: float | None = Field(None, gt=0, description="thousands of images the cosines take; null: the whole run")
    lr_g: float | None = Field(None, gt=0, description="G's learning rate at the end")
    lr_d: float | None = Field(None, gt=0, description="D's learning rate at the end")
    beta2: float | None = Field(None, ge=0, lt=1, description="Adam's beta2 at the end")
    r1_gamma: float | None = Field(None, ge=0, description="R1's gamma at the end")
    r2_gamma: float | None = Field(None, ge=0, description="R2's gamma at the end")
    ema_half_life_kimg: float | None = Field(None, ge=0, description="the EMA's half-life at the end")
    augment_p: float | None = Field(None, ge=0, le=1, description="the augmentation probability at the end")

    def targets(self) -> dict[str, float]:
        """The scheduled keys and their final values."""
        return {key: getattr(self, key) for key in SCHEDULED if getattr(self, key) is not None}


EVAL_METRICS = ("fid", "kid", "pr", "swd", "copies")


class EvalConfig(_Section):
    """Evaluation during training (`gan-dist evaluate` runs the same metrics on a checkpoint)."""

    features: Literal["auto", "domain", "inception", "off"] = Field(
        "auto", description="the feature network: domain (a small classifier trained on the dataset's labels) or "
        "inception (the standard FID network: ~0.3 s per image on a CPU, ask for it on GPUs); auto: domain features on "
        "a labeled dataset, no evaluation otherwise; off: no evaluation during training")
    every: int = Field(0, ge=0, description="steps between evaluations; 0: at each checkpoint")
    num: int = Field(1000, ge=4, description="generated images per evaluation, over all workers")
    metrics: str = Field("fid", description="comma-separated: " + ", ".join(EVAL_METRICS))
    where: Literal["auto", "inline", "ray"] = Field(
        "auto", description="where evaluation during training runs: inline (in the training workers, which wait for "
        "it) or ray (a Ray actor of its own measures a copy of the exported nets while training goes on; the Ray "
        "backend only); auto: ray on the Ray backend, inline on the local backend")
    cpus: float = Field(1.0, ge=0, description="CPUs the evaluation actor reserves (eval.where=ray)")
    gpus: float = Field(0.0, ge=0, description="GPUs the evaluation actor reserves (eval.where=ray): one that no "
                        "training worker holds; 0: it evaluates on CPUs")

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, text: str) -> str:
        return _comma_list(text, EVAL_METRICS)

    def metric_names(self) -> tuple[str, ...]:
        return tuple(self.metrics.split(","))


class RunConfig(_Section):
    """Where a run lives and runs: its directory, the backend and workers, resume and checkpoint retention."""

    name: str | None = Field(None, description="the run directory is storage/name: letters, digits, `.`, `_`, `-` "
                             "(no leading `.`); null: the preset name + a timestamp")
    storage: str = Field("runs", description="where runs live: a local path or s3://bucket/prefix")
    backend: Literal["auto", "local", "ray"] = Field("auto", description="where the loop runs: local (this process, no "
                                                     "Ray) or ray (Ray Train); auto: ray when `num_workers` > 1 or "
                                                     "`ray_address` is set, else local")
    num_workers: int | str = Field(1, description="training workers (DDP ranks): N, or MIN-MAX for an elastic run "
                                   "that goes on with as few as MIN when workers are lost and grows back to MAX "
                                   "(Ray backend; the global batch, `train.batch_size` × MAX, stays the same at every "
                                   "size, split as evenly as it goes: docs/runs-and-resume.md)")
    gpu: bool = Field(False, description="one GPU per worker")
    ray_address: str | None = Field(None, description="join this Ray cluster (`auto`: the running one); null: start a "
                                    "local Ray when the Ray backend needs one")
    cpus_per_worker: float = Field(1.0, ge=0.0001, description="CPUs each Ray worker reserves (Ray refuses finer "
                                   "fractions)")
    resume: bool = Field(False, description="continue this run from its newest checkpoint that loads (a run with any "
                         "output is refused without it)")
    keep_checkpoints: int = Field(3, ge=1, description="newest checkpoints kept")
    keep_best: str | None = Field(None, description="also keep the best checkpoint by this logged metric")
    keep_best_mode: Literal["min", "max"] = Field("min", description="which way `keep_best`'s metric is better")
    resume_from: str | None = Field(None, description="start from this checkpoint (or run) when the run has none")
    max_failures: int | None = Field(None, ge=0, description="Ray worker-group restarts before the run gives up; "
                                     f"null: 0 for a fixed size, {ELASTIC_RESTARTS} for an elastic range")
    resize_check_s: float = Field(60.0, gt=0, description="an elastic run's seconds between Ray's checks for room to "
                                  "grow back to MAX workers (Ray's `elastic_resize_monitor_interval_s`)")

    @field_validator("name")
    @classmethod
    def _name_is_one_directory(cls, name: str | None) -> str | None:
        if name is not None and not RUN_NAME.fullmatch(name):
            raise ValueError("a run name is 1-200 of A-Z a-z 0-9 . _ -, not starting with '.' and without '..' "
                             "(it is a directory in run.storage)")
        return name

    @field_validator("num_workers", mode="before")
    @classmethod
    def _count_or_range(cls, given: Any) -> int | str:
        """N or MIN-MAX, kept as an int or as "MIN-MAX" (a range of one size is that size)."""
        if isinstance(given, bool):
            raise ValueError("expected a number, not true/false")
        if isinstance(given, int):
            low = high = given
        elif isinstance(given, str) and (match := WORKER_RANGE.fullmatch(given.strip())):
            low, high = int(match[1]), int(match[2] or match[1])
        else:
            raise ValueError(f"expected a number of workers (2) or a range MIN-MAX (2-4), not {given!r}")
        if low < 1:
            raise ValueError("at least 1 worker")
        if low > high:
            raise ValueError(f"MIN {low} is above MAX {high}; write MIN-MAX with MIN <= MAX")
        return low if low == high else f"{low}-{high}"

    @model_validator(mode="after")
    def _local_is_one_process(self) -> "RunConfig":
        if self.backend == "local" and self.max_workers > 1:
            raise ValueError(f"the local backend runs one process; use --backend ray for --num-workers "
                             f"{self.num_workers}")
        return self

    @property
    def elastic(self) -> bool:
        return isinstance(self.num_workers, str)

    @property
    def min_workers(self) -> int:
        return int(str(self.num_workers).split("-")[0])

    @property
    def max_workers(self) -> int:
        return int(str(self.num_workers).split("-")[-1])

    def restarts(self) -> int:
        """Worker-group restarts allowed: an elastic run expects to lose workers."""
        if self.max_failures is not None:
            return self.max_failures
        return ELASTIC_RESTARTS if self.elastic else 0

    def resolved_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        return "ray" if self.max_workers > 1 or self.ray_address else "local"


class LogConfig(_Section):
    """W&B (rank 0 only) and the console."""

    wandb: Literal["auto", "online", "offline", "disabled", "off"] = Field(
        "auto", description="the W&B mode; auto: WANDB_MODE if set, else online when WANDB_API_KEY is set, else "
        "disabled; off: disabled")
    wandb_project: str = Field("gan-dist", description="the W&B project")
    wandb_entity: str | None = Field(None, description="the W&B entity (team or user); null: W&B's default")
    wandb_group: str | None = Field(None, description="the W&B group the run joins (`gan-dist tune` puts each "
                                    "search's trials in one, named after the search); null: none")
    console_every_s: float = Field(10.0, gt=0, description="seconds between console lines (Ray, or no terminal)")

    @field_validator("wandb")
    @classmethod
    def _off_is_disabled(cls, mode: str) -> str:
        return "disabled" if mode == "off" else mode  # tracking passes the mode to W&B, which has no "off"


class Config(_Section):
    """A run's whole configuration: a preset or YAML file, then `--set` overrides, then the flags."""

    preset: str = Field(DEFAULT_PRESET, description="the preset the config came from (a YAML file's name when not "
                        "given)")
    task: TaskConfig = GenerationTaskConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = DCGANConfig()
    train: TrainConfig = TrainConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    eval: EvalConfig = EvalConfig()
    run: RunConfig = RunConfig()
    log: LogConfig = LogConfig()

    @model_validator(mode="after")
    def _task_fits(self) -> "Config":
        """The rules between the task and the other sections, from the task section's facts."""
        task, kind, arch = type(self.task), self.task.kind, self.model.arch
        if arch not in task.ARCHS:
            others = [section.kind_name() for section in TASK_SECTIONS if arch in section.ARCHS]
            raise ValueError(f"model.arch={arch} does not fit task.kind={kind}, which trains model.arch "
                             f"{' or '.join(task.ARCHS)}: set model.arch={task.ARCHS[0]}"
                             + (f", or task.kind to {' or '.join(others)}" if others else ""))
        reads = [DataConfig.KEYS[name] for name in task.DATASETS]
        for key in DataConfig.FLAGS:
            if key not in reads and getattr(self.data, key) is not None:
                wanted = " and ".join(f"data.{k} ({DataConfig.FLAGS[k]})" for k in reads)
                raise ValueError(f"task.kind={kind} reads {wanted}, not data.{key} ({DataConfig.FLAGS[key]})")
        if not task.MULTIPLE_D_UPDATES and self.train.n_dis != 1:
            raise ValueError(f"task.kind={kind} takes one D update per step: leave train.n_dis at 1")
        return self

    @model_validator(mode="after")
    def _schedules_have_something_to_move(self) -> "Config":
        t, targets = self.train, self.schedule.targets()
        for gamma in ("r1_gamma", "r2_gamma"):
            if gamma in targets and not getattr(t, gamma):
                raise ValueError(f"schedule.{gamma} moves a penalty that is off: set train.{gamma} > 0 (its start)")
        if "augment_p" in targets and (not t.augmentations() or t.ada_target is not None):
            raise ValueError("schedule.augment_p needs train.augment on and train.ada_target null (ADA sets p itself)")
        if "ema_half_life_kimg" in targets and not t.ema:
            raise ValueError("schedule.ema_half_life_kimg needs train.ema=true")
        if t.lr_decay_start is not None and {"lr_g", "lr_d"} & set(targets):
            raise ValueError("choose one learning-rate schedule: train.lr_decay_start (linear) or schedule.lr_g / "
                             "schedule.lr_d (cosine)")
        return self

    def global_batch(self, workers: int) -> int:
        """Images of one D update over all `workers`: train.batch_size each, or for an elastic run train.batch_size
        × MAX at every size, so the recipe (images per step, every schedule by images seen) stays the same."""
        return self.train.batch_size * (self.run.max_workers if self.run.elastic else workers)

    def step_images(self, workers: int) -> int:
        """Images one step reads over all `workers`: the global batch for each of train.n_dis D updates."""
        return self.global_batch(workers) * self.train.n_dis

    def step_share(self, rank: int, workers: int) -> slice:
        """The rows of a step's images (in D updates' order) that this worker trains on: equal numbers of images
        per update, ±1 where the workers do not divide the global batch."""
        total, updates = self.global_batch(workers), self.train.n_dis
        return slice(updates * (total * rank // workers), updates * (total * (rank + 1) // workers))

    def dataset_names(self) -> tuple[str, ...]:
        """The datasets one step reads a batch of each: the task's."""
        return self.task.DATASETS

    def dataset_paths(self) -> dict[str, str | None]:
        """Each dataset's configured URI (None: the embedded one)."""
        return {name: getattr(self.data, DataConfig.KEYS[name]) for name in self.task.DATASETS}
