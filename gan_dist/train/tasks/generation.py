"""Image generation, unconditional or class-conditional: G and D, their optimizers, the EMA generator, one training
step (a D update, then a G update), and its measurement during training (FID and the rest on generated images)."""

from __future__ import annotations

from typing import Any

import torch

from gan_dist import seeds
from gan_dist.config import Config, GenerationTaskConfig
from gan_dist.data.placement import Dataset
from gan_dist.data.reader import Batch, worker_rows
from gan_dist.data.shards import Manifest
from gan_dist.errors import UserError
from gan_dist.eval.features import DomainFeatures
from gan_dist.eval.measure import EVAL_LOGGED, check_sizes, compare, feature_kind, feature_network, plan_rows
from gan_dist.eval.stats import embed, real_features
from gan_dist.imaging import grid_image, to_model_range, to_uint8
from gan_dist.models import build_discriminator, build_generator, check_resolution
from gan_dist.train import collective, speed
from gan_dist.train.context import WorkerContext
from gan_dist.train.ema import EMA
from gan_dist.train.task import Measure, Task

GRID_COLUMNS = 8
GRID_ROWS = 8  # unconditional grids; conditional ones have a row per class
MAX_GRID_CLASSES = 32  # rows of a conditional grid: the first classes only, for datasets with very many


def num_classes(cfg: Config, manifest: Manifest, dataset: str = "the dataset") -> int:
    """Classes the nets are conditioned on: the dataset's, when the model is conditional (or `auto` and the dataset
    has classes); 0 otherwise."""
    if cfg.model.conditional is True and not manifest.class_names:
        raise UserError(f"model.conditional=true needs a labeled dataset, and {dataset} has no classes; prepare one "
                        f"from a folder with a subfolder per class (or an .npz with labels), or train unconditionally")
    return len(manifest.class_names) if cfg.model.conditional else 0


class GenerationTask(Task):
    """`G`/`D` are the plain modules; `G_step` what the step calls (DDP, compiled); `adversary` D with its
    loss, augmentation and regularizers; `ema` the averaged generator that previews and exports use (None with
    train.ema off)."""

    section = GenerationTaskConfig
    # augment_p and penalty_D only when augmentation or a regularizer is on
    METRICS = ("loss_D", "loss_G", "D_real", "D_fake", "grad_norm_D", "grad_norm_G", "lr_G", "lr_D", "augment_p",
               "penalty_D")
    EXPORTS = {"generator": ("sample", "explore", "evaluate")}

    @classmethod
    def check_data(cls, cfg: Config, datasets: dict[str, Dataset]) -> None:
        super().check_data(cfg, datasets)
        data = datasets["train"]
        check_resolution(data.manifest.resolution, cfg.model.arch)
        num_classes(cfg, data.manifest, data.uri)  # conditional needs a labeled dataset

    @classmethod
    def measured(cls, cfg: Config, manifests: dict[str, Manifest]) -> tuple[str, ...]:
        return EVAL_LOGGED if feature_kind(cfg.eval.features, manifests["train"]) != "off" else ()

    def measure(self, ctx: WorkerContext) -> Measure | None:
        return GenerationMeasure.build(self, ctx, self.cfg)

    def __init__(self, cfg: Config, datasets: dict[str, Dataset], device: torch.device, rank: int = 0,
                 world_size: int = 1):
        super().__init__(cfg, device, rank, world_size)
        m, t, manifest = cfg.model, cfg.train, datasets["train"].manifest
        self.resolution, self.channels = manifest.resolution, manifest.channels
        self.num_classes = num_classes(cfg, manifest)
        # G and D stay plain for previews, state dicts and checks; the step calls G_step.
        self.adversarial_pair(build_generator(m, self.resolution, self.channels, self.num_classes).to(device),
                              build_discriminator(m, self.resolution, self.channels, self.num_classes).to(device))
        self.noise = torch.Generator(device=device)
        self.ema = EMA(self.G, t.ema_half_life_kimg, t.ema_rampup, self.global_batch) if t.ema else None
        self.grid_z, self.grid_labels = self._grid_inputs(t.seed)

    def latents(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """n latents, and n uniformly drawn classes when conditional."""
        self.noise.manual_seed(seed)
        z = torch.randn(n, self.cfg.model.z_dim, device=self.device, generator=self.noise)
        if not self.num_classes:
            return z, None
        return z, torch.randint(self.num_classes, (n,), device=self.device, generator=self.noise)

    def _grid_inputs(self, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The preview's latents (and classes: a row per class, the same latents in every row, so a column shows
        one latent across the classes)."""
        if not self.num_classes:
            z, _ = self.latents(GRID_ROWS * GRID_COLUMNS, seeds.derive(seed, "preview"))
            return z.clone(), None
        rows = min(self.num_classes, MAX_GRID_CLASSES)
        z, _ = self.latents(GRID_COLUMNS, seeds.derive(seed, "preview"))
        labels = torch.arange(rows, device=self.device).repeat_interleave(GRID_COLUMNS)
        return z.repeat(rows, 1), labels

    def train_step(self, batches: dict[str, Batch], step: int) -> dict[str, torch.Tensor]:
        """n_dis D updates, each on its own share of the batch, then a G update on the last D update's fakes. The
        latents are a pure function of (seed, rank, step, update), so a resumed run draws exactly the noise the
        uninterrupted run would have drawn, without RNG state."""
        batch, n_dis = batches["train"], self.cfg.train.n_dis
        speed.mark_step_begin(self.features)
        reals = to_model_range(batch["image"].to(self.device, non_blocking=True)).chunk(n_dis)
        real_labels = batch["label"].to(self.device, non_blocking=True).chunk(n_dis) if self.num_classes else None
        bad_d = torch.zeros((), dtype=torch.bool, device=self.device)  # any D update of the step skipped
        for update in range(n_dis):
            # a paired loss compares each real image with a fake of its class
            same_classes = real_labels[update] if self.adversary.paired and real_labels is not None else None
            fake, fake_labels = self._fakes(len(reals[update]), step, update, same_classes)
            with self.autocast():
                loss_d, real_logits, fake_logits = self.adversary.discriminator_loss(
                    reals[update], fake, None if real_labels is None else real_labels[update], fake_labels, step,
                    update)
            grad_norm_d, bad = self.update(self.opt_d, loss_d)
            bad_d = bad_d | bad

        with self.autocast():
            loss_g = self.adversary.generator_loss(fake, reals[-1], fake_labels, step)
        grad_norm_g, bad_g = self.update(self.opt_g, loss_g)
        if self.ema is not None:
            self.ema.update(self.G, step)
        return self.finish_step(step, {
            "loss_D": loss_d.detach(),
            "loss_G": loss_g.detach(),
            "D_real": torch.sigmoid(real_logits.detach()).mean(),
            "D_fake": torch.sigmoid(fake_logits.detach()).mean(),
            "grad_norm_D": grad_norm_d,
            "grad_norm_G": grad_norm_g,
        }, bad_d | bad_g)

    def _fakes(self, n: int, step: int, update: int,
               classes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """G's images (with the graph to G) for one D update, and their classes when conditional: drawn, or
        `classes` where given."""
        indexes = (self.rank, step) if update == 0 else (self.rank, step, update)
        z, labels = self.latents(n, seeds.derive(self.cfg.train.seed, "latents", *indexes))
        if classes is not None:
            labels = classes
        with self.autocast():
            return self.G_step(z, labels), labels

    @property
    def inference_generator(self) -> torch.nn.Module:
        """The generator previews and exports use: the EMA one when there is one."""
        return self.G if self.ema is None else self.ema.net

    @torch.no_grad()
    def preview(self) -> torch.Tensor:
        G = self.inference_generator
        G.eval()  # batch-norm running statistics
        try:
            with self.autocast():
                images = to_uint8(G(self.grid_z, self.grid_labels))
        finally:
            G.train(G is self.G)  # the EMA copy stays in eval mode
        return grid_image(images, nrow=GRID_COLUMNS)

    @torch.no_grad()
    def generate(self, rows: range, total: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = self.latents(total, seed)[0][rows.start:rows.stop]  # all of them drawn: a few KB of noise
        index = torch.arange(rows.start, rows.stop, device=self.device)
        labels = index % self.num_classes if self.num_classes else None
        G = self.inference_generator
        G.eval()
        try:
            with self.autocast():
                return to_uint8(G(z, labels)).permute(0, 2, 3, 1).contiguous(), labels
        finally:
            G.train(G is self.G)

    def export(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"generator": self.inference_generator.state_dict()}

    def extra_state(self) -> dict[str, Any]:
        state = super().extra_state()
        if self.ema is not None:
            state["ema"] = {"G": self.ema.net.state_dict()}
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        if self.ema is not None:  # a checkpoint of a run without EMA starts the average at its G
            self.ema.net.load_state_dict(state["ema"]["G"] if "ema" in state else state["nets"]["G"])


class GenerationMeasure:
    """Each rank generates and embeds its share of eval.num images with fixed seeds, rank 0 gathers the features
    and compares them with the dataset's (cached) real features."""

    @classmethod
    def build(cls, task: GenerationTask, ctx: WorkerContext, cfg: Config) -> "GenerationMeasure | None":
        data = ctx.datasets["train"]
        kind = feature_kind(cfg.eval.features, data.manifest)
        if kind == "off":
            return None
        check_sizes(cfg.eval.metric_names(), cfg.eval.num, data.manifest, "eval.num")
        plan_rows(data, cfg.eval.num, cfg.eval.metric_names())
        # Rank 0 first: it trains and caches the domain classifier once (and computes the real features, which only
        # it needs); the others then load the classifier from the cache.
        real = None
        if ctx.rank == 0:
            net = feature_network(kind, data, ctx.device, None)
            real = real_features(net, data, cfg.eval.num, ctx.device)
        collective.barrier()
        if ctx.rank != 0:
            net = feature_network(kind, data, ctx.device, None)
        return cls(task, ctx, cfg, net, real)

    def __init__(self, task: GenerationTask, ctx: WorkerContext, cfg: Config, net: torch.nn.Module,
                 real: torch.Tensor | None):
        self.task, self.ctx, self.cfg, self.net, self.real = task, ctx, cfg, net, real
        self.data = ctx.datasets["train"]

    def __call__(self) -> dict[str, float] | None:
        ctx, e = self.ctx, self.cfg.eval
        # This rank's rows of one set drawn with one seed, the same at every evaluation of the run: the numbers move
        # with the generator only, and do not depend on how many workers share the work.
        rows = worker_rows(e.num, ctx.rank, ctx.world_size)
        images, labels = self.task.generate(rows, e.num, seeds.derive(self.cfg.train.seed, "eval"))
        # The images themselves go to rank 0 only where a metric reads them (SWD, copies, the classifier's verdicts).
        keep_images = bool({"swd", "copies"} & set(e.metric_names())) or isinstance(self.net, DomainFeatures)
        mine = (embed(self.net, images, ctx.device), images.cpu() if keep_images else None,
                None if labels is None else labels.cpu())
        gathered = collective.gather(mine)
        if ctx.rank != 0:
            return None
        features, images_u8, asked = (None if parts[0] is None else torch.cat(parts)
                                      for parts in zip(*gathered))
        return compare(e.metric_names(), self.net, self.real, features, self.data.images, images_u8, asked,
                       self.cfg.train.seed)
