"""Paired image-to-image translation (pix2pix, Isola et al. 2017): each row of a paired dataset holds an input image
and its target ("image"); a U-Net learns input -> target, judged by a PatchGAN on (input, output) pairs, with
lambda * L1 to the target beside the adversarial loss. D is updated first, then G on the same outputs (the
reference's order); the dropout of G's decoder draws from the seed function of the step."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gan_dist import seeds
from gan_dist.config import Config
from gan_dist.config.schema import Pix2PixTaskConfig
from gan_dist.data.placement import Dataset
from gan_dist.data.reader import Batch, load_columns
from gan_dist.data.shards import INPUT, Manifest
from gan_dist.eval.paired import PairedJudge, paired_logged
from gan_dist.imaging import grid_image, to_model_range, to_uint8
from gan_dist.models import build_translator, check_unet_sizes
from gan_dist.models.unet import PairDiscriminator
from gan_dist.train import speed
from gan_dist.train.adversary import Adversary
from gan_dist.train.context import WorkerContext
from gan_dist.train.task import Measure, Task

PREVIEW_IMAGES = 8


def pix2pix_losses(adversary: Adversary, inputs: torch.Tensor, fake: torch.Tensor, real: torch.Tensor,
                   l1_weight: float, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """G's loss, adversarial (D judging the (input, output) pair) + l1_weight * |output - target|, and the L1."""
    loss_l1 = F.l1_loss(fake.float(), real.float())
    adversarial = adversary.generator_loss(torch.cat([inputs, fake], 1), torch.cat([inputs, real], 1), None, step)
    return adversarial + l1_weight * loss_l1, loss_l1


class Pix2PixTask(Task):
    """`G` the U-Net (input -> image), `D` the PatchGAN on (input, image) concatenated on channels."""

    section = Pix2PixTaskConfig
    # translator_a2b: A the rows' inputs, B their images, as the reference's AtoB
    EXPORTS = {"translator_a2b": ("translate", "evaluate")}
    METRICS = ("loss_D", "loss_G", "loss_l1", "D_real", "D_fake", "grad_norm_D", "grad_norm_G", "lr_G", "lr_D",
               "augment_p", "penalty_D")

    @classmethod
    def check_data(cls, cfg: Config, datasets: dict[str, Dataset]) -> None:
        super().check_data(cfg, datasets)
        check_unet_sizes(cfg.model, datasets["train"].manifest)

    @classmethod
    def measured(cls, cfg: Config, manifests: dict[str, Manifest]) -> tuple[str, ...]:
        if cfg.eval.features == "off":
            return ()
        return paired_logged(cfg.eval.features, manifests["train"]) + ("eval_seconds",)

    def measure(self, ctx: WorkerContext) -> Measure | None:
        """Rank 0 translates the inputs of the first eval.num pairs and compares the outputs with their targets
        (eval/paired.py); the other ranks go on and wait for it at their next collective."""
        if self.cfg.eval.features == "off" or ctx.rank != 0:
            return None
        judge = PairedJudge(ctx.datasets["train"], self.cfg.eval.num, self.cfg.eval.features, ctx.device)
        return lambda: judge(self.G)

    def __init__(self, cfg: Config, datasets: dict[str, Dataset], device: torch.device, rank: int = 0,
                 world_size: int = 1):
        super().__init__(cfg, device, rank, world_size)
        manifest = datasets["train"].manifest
        in_channels, out_channels = manifest.input_channels, manifest.channels
        self.adversarial_pair(
            build_translator(cfg.model, in_channels, out_channels, manifest.resolution).to(device),
            PairDiscriminator(in_channels, out_channels, cfg.model.d_channels, cfg.model.d_layers).to(device))
        data = datasets["train"]
        rows = load_columns(data.uri, manifest, range(min(PREVIEW_IMAGES, manifest.count)))
        self.preview_pairs = [to_model_range(torch.from_numpy(rows[name]).to(device)) for name in (INPUT, "image")]

    def translate(self, inputs: torch.Tensor, step: int) -> torch.Tensor:
        """G's outputs in training mode, its dropout drawn from (seed, rank, step): a resumed run draws the same."""
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=self.device.type):
            torch.manual_seed(seeds.derive(self.cfg.train.seed, "dropout", self.rank, step))
            return self.G_step(inputs)

    def train_step(self, batches: dict[str, Batch], step: int) -> dict[str, torch.Tensor]:
        speed.mark_step_begin(self.features)
        batch = batches["train"]
        inputs, real = (to_model_range(batch[name].to(self.device, non_blocking=True)) for name in (INPUT, "image"))
        self.G.train()
        with self.autocast():
            fake = self.translate(inputs, step)
            loss_d, real_logits, fake_logits = self.adversary.discriminator_loss(
                torch.cat([inputs, real], 1), torch.cat([inputs, fake.detach()], 1), None, None, step, 0)
        grad_norm_d, bad_d = self.update(self.opt_d, loss_d)

        with self.autocast():
            loss_g, loss_l1 = pix2pix_losses(self.adversary, inputs, fake, real, self.cfg.task.l1_weight, step)
        grad_norm_g, bad_g = self.update(self.opt_g, loss_g)
        return self.finish_step(step, {
            "loss_D": loss_d.detach(), "loss_G": loss_g.detach(), "loss_l1": loss_l1.detach(),
            "D_real": real_logits.detach().mean(), "D_fake": fake_logits.detach().mean(),
            "grad_norm_D": grad_norm_d, "grad_norm_G": grad_norm_g,
        }, bad_d | bad_g)

    @torch.no_grad()
    def preview(self) -> torch.Tensor:
        """The first pairs: input | output (G in eval mode: no dropout) | target, a column each."""
        inputs, targets = self.preview_pairs
        self.G.eval()
        with self.autocast():
            outputs = self.G(inputs)
        rows = [to_uint8(row) for row in (inputs, outputs, targets)]
        if rows[0].shape[1] != rows[1].shape[1]:  # gray inputs beside colour outputs
            rows[0] = rows[0].expand(-1, 3, -1, -1)
        return grid_image(torch.cat(rows), nrow=len(inputs))

    def export(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"translator_a2b": self.G.state_dict()}
