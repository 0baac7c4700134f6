"""CUT (Park et al. 2020): one translator A -> B trained with a GAN loss and PatchNCE, which makes each patch of
G(a) closer to the patch of a at the same place than to a's other patches, in G's own encoder features: content
is kept without a second generator or a cycle. Lighter and faster than CycleGAN; one direction only."""

from __future__ import annotations

import torch
from torch import nn

from gan_dist import seeds
from gan_dist.config import Config, CUTTaskConfig
from gan_dist.data.placement import Dataset
from gan_dist.data.reader import Batch
from gan_dist.models.translation import PatchSampleMLP, ResnetGenerator, patch_nce_loss
from gan_dist.train.tasks.unpaired import TranslationTask


class CUTTask(TranslationTask):
    """`G` the translator, `D` B's discriminator, `head` the MLP that projects G's encoder features for PatchNCE
    (trained with G, by G's optimizer)."""

    section = CUTTaskConfig
    EXPORTS = {"translator_a2b": ("translate", "evaluate")}  # one direction
    METRICS = ("loss_D", "loss_G", "loss_nce", "D_real", "D_fake", "grad_norm_D", "grad_norm_G", "lr_G", "lr_D",
               "augment_p", "penalty_D")

    def __init__(self, cfg: Config, datasets: dict[str, Dataset], device: torch.device, rank: int = 0,
                 world_size: int = 1):
        super().__init__(cfg, datasets, device, rank, world_size)
        m, task = cfg.model, cfg.task
        G, D = self.translator("a", "b").to(device), self.discriminator("b").to(device)
        self.layers = ResnetGenerator.nce_layers(m.blocks, m.downsamplings)
        self.head = PatchSampleMLP(G.layer_channels(self.layers), task.head_units).to(device)
        self.adversarial_pair(G, D, self.head)  # the head trains with G, by G's optimizer
        self.nets["head"] = self.head
        # The head's gradients need averaging across ranks like G's; it is not compiled (it samples patches).
        self.head_ddp = self.distributed(self.head, compile=False)
        # The identity term translates real B: only where G can take B's images.
        self.identity = task.nce_identity and self.channels["a"] == self.channels["b"]
        self.draws = torch.Generator(device=device)

    def translators(self) -> dict[str, nn.Module]:
        return {"a2b": self.G}

    def train_step(self, batches: dict[str, Batch], step: int) -> dict[str, torch.Tensor]:
        """The reference's order: translate, update D, then update G (and the head) on the same translations."""
        real_a, real_b = self.reals(batches)
        with self.autocast():
            fake_b, *idt_b = self.G_step(torch.cat([real_a, real_b][:1 + self.identity])).split(len(real_a))
            loss_d, real_logits, fake_logits = self.adversary.discriminator_loss(real_b, fake_b, None, None, step, 0)
        grad_norm_d, bad_d = self.update(self.opt_d, loss_d)

        with self.autocast():
            loss_gan = self.adversary.generator_loss(fake_b, real_b, None, step)
            loss_nce = self.patch_nce(real_a, fake_b, step, 0)
            if self.identity:  # the reference averages the two NCE terms
                loss_nce = (loss_nce + self.patch_nce(real_b, idt_b[0], step, 1)) / 2
            loss_g = loss_gan + loss_nce
        grad_norm_g, bad_g = self.update(self.opt_g, loss_g)
        return self.finish_step(step, {
            "loss_D": loss_d.detach(), "loss_G": loss_g.detach(), "loss_nce": loss_nce.detach(),
            "D_real": real_logits.detach().mean(), "D_fake": fake_logits.detach().mean(),
            "grad_norm_D": grad_norm_d, "grad_norm_G": grad_norm_g}, bad_d | bad_g)

    def patch_nce(self, source: torch.Tensor, translated: torch.Tensor, step: int, call: int) -> torch.Tensor:
        """PatchNCE between a source batch and its translation, over the encoder layers: the translation's patches
        are the queries, the source's at the same locations the positives (sampled where the source's are)."""
        task = self.cfg.task
        self.draws.manual_seed(seeds.derive(self.cfg.train.seed, "patches", self.rank, step, call))
        keys, ids = self.head_ddp(self.G.encode(source, self.layers), task.num_patches, None, self.draws)
        queries, _ = self.head_ddp(self.G.encode(translated, self.layers), task.num_patches, ids)
        losses = [patch_nce_loss(q.float(), k.float(), len(source), task.nce_temperature)
                  for q, k in zip(queries, keys)]
        return task.nce_weight * torch.stack(losses).mean()
