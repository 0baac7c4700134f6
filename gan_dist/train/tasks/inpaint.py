"""Image completion (inpainting): G takes an image with holes and the mask of the holes and fills them; a PatchGAN
judges the completed images (what was known kept, G's output in the holes); L1 pulls the hole toward the truth and
G's raw output toward the known pixels. Holes are drawn per step and image from the seed function (masks.py)."""

from __future__ import annotations

import torch

from gan_dist import seeds
from gan_dist.config import Config, InpaintTaskConfig
from gan_dist.data.placement import Dataset
from gan_dist.data.reader import Batch
from gan_dist.data.shards import Manifest
from gan_dist.eval.completion import CompletionJudge, completion_logged
from gan_dist.imaging import grid_image, to_model_range, to_uint8
from gan_dist.masks import complete, draw_masks
from gan_dist.models import build_completer, build_patch_discriminator, check_translation_sizes
from gan_dist.train import speed
from gan_dist.train.context import WorkerContext
from gan_dist.train.task import Measure, Task, first_images

PREVIEW_IMAGES = 8


def masked_l1(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean |x - y| over the pixels `weights` (B×1×H×W) selects: a loss per hole pixel, whatever the hole's size."""
    return ((x.float() - y.float()).abs() * weights).sum() / (weights.sum() * x.shape[1]).clamp_min(1.0)


class InpaintTask(Task):
    """`G` the completion net (ResNet, instance norm), `D` the PatchGAN; D updated first, then G on the same
    completions (pix2pix's order)."""

    section = InpaintTaskConfig
    EXPORTS = {"completer": ("complete", "evaluate")}
    METRICS = ("loss_D", "loss_G", "loss_hole", "loss_valid", "D_real", "D_fake", "grad_norm_D", "grad_norm_G",
               "lr_G", "lr_D", "augment_p", "penalty_D")

    @classmethod
    def check_data(cls, cfg: Config, datasets: dict[str, Dataset]) -> None:
        super().check_data(cfg, datasets)
        manifest = datasets["train"].manifest  # the input and the output are images of the one dataset
        check_translation_sizes(cfg.model, manifest, manifest)

    @classmethod
    def measured(cls, cfg: Config, manifests: dict[str, Manifest]) -> tuple[str, ...]:
        return completion_logged(cfg, manifests["train"])

    def measure(self, ctx: WorkerContext) -> Measure | None:
        """Rank 0 completes the first eval.num images of the dataset, holes over their centre quarter, with the
        current completion net (eval/completion.py); the other ranks go on and wait for it at their next
        collective."""
        if self.cfg.eval.features == "off" or ctx.rank != 0:
            return None
        data = ctx.datasets["train"]
        judge = CompletionJudge(data, data, self.cfg.eval.num, self.cfg.eval.features, ctx.device)
        return lambda: judge(self.G)

    def __init__(self, cfg: Config, datasets: dict[str, Dataset], device: torch.device, rank: int = 0,
                 world_size: int = 1):
        super().__init__(cfg, device, rank, world_size)
        t, data = cfg.train, datasets["train"]
        self.kinds = cfg.task.mask_kinds()
        self.size, channels = data.manifest.resolution, data.manifest.channels
        self.adversarial_pair(build_completer(cfg.model, channels).to(device),
                              build_patch_discriminator(cfg.model, channels).to(device))
        self.preview_images = first_images(data, PREVIEW_IMAGES, device)
        draws = torch.Generator().manual_seed(seeds.derive(t.seed, "preview"))
        self.preview_masks = draw_masks(self.kinds, len(self.preview_images), self.size, draws, device)

    def masks(self, n: int, step: int) -> torch.Tensor:
        draws = torch.Generator().manual_seed(seeds.derive(self.cfg.train.seed, "masks", self.rank, step))
        return draw_masks(self.kinds, n, self.size, draws, self.device)

    def train_step(self, batches: dict[str, Batch], step: int) -> dict[str, torch.Tensor]:
        task = self.cfg.task
        speed.mark_step_begin(self.features)
        real = to_model_range(batches["train"]["image"].to(self.device, non_blocking=True))
        masks = self.masks(len(real), step)
        with self.autocast():
            completed, raw = complete(self.G_step, real, masks)
            loss_d, real_logits, fake_logits = self.adversary.discriminator_loss(real, completed.detach(), None,
                                                                                 None, step, 0)
        grad_norm_d, bad_d = self.update(self.opt_d, loss_d)

        with self.autocast():
            loss_hole = masked_l1(raw, real, masks)
            loss_valid = masked_l1(raw, real, 1 - masks)
            loss_g = (task.adversarial_weight * self.adversary.generator_loss(completed, real, None, step)
                      + task.hole_weight * loss_hole + task.valid_weight * loss_valid)
        grad_norm_g, bad_g = self.update(self.opt_g, loss_g)
        return self.finish_step(step, {
            "loss_D": loss_d.detach(), "loss_G": loss_g.detach(),
            "loss_hole": loss_hole.detach(), "loss_valid": loss_valid.detach(),
            "D_real": real_logits.detach().mean(), "D_fake": fake_logits.detach().mean(),
            "grad_norm_D": grad_norm_d, "grad_norm_G": grad_norm_g,
        }, bad_d | bad_g)

    @torch.no_grad()
    def preview(self) -> torch.Tensor:
        """Fixed images with fixed holes: the input (holes grey) | the completion | the original, a column each."""
        with self.autocast():
            completed, _ = complete(self.G, self.preview_images, self.preview_masks)
        rows = [self.preview_images * (1 - self.preview_masks), completed, self.preview_images]
        return grid_image(torch.cat([to_uint8(row) for row in rows]), nrow=len(self.preview_images))

    def export(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"completer": self.G.state_dict()}
