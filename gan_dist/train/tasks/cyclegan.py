"""CycleGAN (Zhu et al. 2017): unpaired translation A <-> B with two generators, two discriminators, cycle
consistency and identity terms, and the reference's image pools."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gan_dist import seeds
from gan_dist.config import Config, CycleGANTaskConfig
from gan_dist.data.placement import Dataset
from gan_dist.data.reader import Batch
from gan_dist.train.adversary import Adversary
from gan_dist.train.pool import ImagePool
from gan_dist.train.tasks.unpaired import TranslationTask


class CycleGANTask(TranslationTask):
    """CycleGAN (Zhu et al. 2017): G_ab and G_ba, D_a and D_b, least-squares GAN losses, cycle consistency and
    identity L1 terms; one update of both generators, then one of both discriminators on fakes from the image pools
    (the reference's order). `G_ab`, `G_ba`, `D_a`, `D_b` are the plain modules."""

    section = CycleGANTaskConfig
    METRICS = ("loss_D", "loss_G", "loss_cycle", "loss_identity", "D_real", "D_fake", "grad_norm_D", "grad_norm_G",
               "lr_G", "lr_D", "augment_p", "penalty_D")

    def __init__(self, cfg: Config, datasets: dict[str, Dataset], device: torch.device, rank: int = 0,
                 world_size: int = 1):
        super().__init__(cfg, datasets, device, rank, world_size)
        t, task = cfg.train, cfg.task
        self.G_ab, self.G_ba = self.translator("a", "b").to(device), self.translator("b", "a").to(device)
        self.D_a, self.D_b = self.discriminator("a").to(device), self.discriminator("b").to(device)
        self.resolve_features(self.D_a)
        self.G_ab_step, self.G_ba_step = self.distributed(self.G_ab), self.distributed(self.G_ba)
        # D_b judges translations into B, D_a those into A; each with its own augmentation streams.
        self.adversary_b = Adversary(t, self.D_b, self.features, device, rank, world_size, self.global_batch, index=0)
        self.adversary_a = Adversary(t, self.D_a, self.features, device, rank, world_size, self.global_batch, index=1)
        self.opt_g = self.adam([*self.G_ab.parameters(), *self.G_ba.parameters()], t.lr_g)
        self.opt_d = self.adam([*self.D_a.parameters(), *self.D_b.parameters()], t.lr_d)
        self.nets = {"G_ab": self.G_ab, "G_ba": self.G_ba, "D_a": self.D_a, "D_b": self.D_b}
        self.optimizers = {"G": self.opt_g, "D": self.opt_d}
        self.adversaries = [self.adversary_b, self.adversary_a]  # the first's augmentation probability is logged
        self.pools = {"a": ImagePool(task.pool_size), "b": ImagePool(task.pool_size)}
        # Identity terms need a translator that can take the other domain's images: the same channel count.
        self.identity = task.identity_weight > 0 and self.channels["a"] == self.channels["b"]

    def translators(self) -> dict[str, nn.Module]:
        return {"a2b": self.G_ab, "b2a": self.G_ba}

    def train_step(self, batches: dict[str, Batch], step: int) -> dict[str, torch.Tensor]:
        task, (real_a, real_b) = self.cfg.task, self.reals(batches)
        n = len(real_a)
        with self.autocast():
            # Each translator takes what it translates in one batch (instance norm keeps the images independent):
            # G_ab real A (and real B, for identity), G_ba real B, the fake B (cycle) and real A; G_ab the fake A.
            fake_b, *idt_b = self.G_ab_step(torch.cat([real_a, real_b][:1 + self.identity])).split(n)
            fake_a, rec_a, *idt_a = self.G_ba_step(torch.cat([real_b, fake_b, real_a][:2 + self.identity])).split(n)
            rec_b = self.G_ab_step(fake_a)
            loss_gan = (self.adversary_b.generator_loss(fake_b, real_b, None, step)
                        + self.adversary_a.generator_loss(fake_a, real_a, None, step))
            loss_cycle = task.cycle_weight * (_l1(rec_a, real_a) + _l1(rec_b, real_b))
            loss_identity = torch.zeros((), device=self.device)
            if self.identity:
                loss_identity = task.cycle_weight * task.identity_weight * (_l1(idt_b[0], real_b)
                                                                            + _l1(idt_a[0], real_a))
            loss_g = loss_gan + loss_cycle + loss_identity
        grad_norm_g, bad_g = self.update(self.opt_g, loss_g)

        draws = torch.Generator().manual_seed(seeds.derive(self.cfg.train.seed, "pool", self.rank, step))
        pooled_b, pooled_a = self.pools["b"].query(fake_b, draws), self.pools["a"].query(fake_a, draws)
        with self.autocast():
            loss_db, real_b_logits, fake_b_logits = self.adversary_b.discriminator_loss(real_b, pooled_b, None, None,
                                                                                        step, 0)
            loss_da, real_a_logits, fake_a_logits = self.adversary_a.discriminator_loss(real_a, pooled_a, None, None,
                                                                                        step, 0)
        grad_norm_d, bad_d = self.update(self.opt_d, loss_da + loss_db)
        return self.finish_step(step, {
            "loss_D": (loss_da + loss_db).detach(),
            "loss_G": loss_g.detach(),
            "loss_cycle": loss_cycle.detach(),
            "loss_identity": loss_identity.detach(),
            # mean D output (LSGAN's targets: 1 real, 0 fake), over both discriminators
            "D_real": (real_a_logits.detach().mean() + real_b_logits.detach().mean()) / 2,
            "D_fake": (fake_a_logits.detach().mean() + fake_b_logits.detach().mean()) / 2,
            "grad_norm_D": grad_norm_d,
            "grad_norm_G": grad_norm_g,
        }, bad_d | bad_g)

    def extra_state(self) -> dict[str, Any]:
        return {"adversaries": {"a": self.adversary_a.state_dict(), "b": self.adversary_b.state_dict()}}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        adversaries = state.get("adversaries", {})
        self.adversary_a.load_state_dict(adversaries.get("a", {}))
        self.adversary_b.load_state_dict(adversaries.get("b", {}))

    def rank_state(self) -> dict[str, Any]:
        return {"pools": {name: pool.state_dict() for name, pool in self.pools.items()}}

    def load_rank_state(self, state: dict[str, Any]) -> None:
        for name, pool in self.pools.items():
            pool.load_state_dict(state.get("pools", {}).get(name, {}), self.device)


def _l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(x.float(), y.float())
