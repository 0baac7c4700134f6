"""Image generation: G and D, their optimizers, and one training step (a D update, then a G update)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.nn.utils import get_total_norm

from gan_dist.config import Config
from gan_dist.models import build_discriminator, build_generator, update_spectral_norms
from gan_dist.train import losses, speed


def to_model_range(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 B×H×W×C (as stored) -> float B×C×H×W in [-1, 1], on whatever device the batch is."""
    return images_u8.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float B×C×H×W in [-1, 1] -> uint8 B×C×H×W for PNGs."""
    return images.float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def noise_seed(seed: int, rank: int, step: int) -> int:
    """A distinct, reproducible seed per (run seed, rank, step)."""
    return ((seed * 1_000_003 + rank) * 1_000_000_007 + step) % (2**63)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """No weight gradients for `module` inside: the G step needs gradients through D, not of D."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class GenerationTask:
    """Everything one worker trains. `G`/`D` are the plain modules; `G_ddp`/`D_ddp` the DDP wrappers when
    distributed (or the same modules otherwise)."""

    # What step() returns and learning_rates() reports, logged at every log step.
    METRICS = ("loss_D", "loss_G", "D_real", "D_fake", "grad_norm_D", "grad_norm_G", "lr_G", "lr_D")

    def __init__(self, cfg: Config, resolution: int, channels: int, device: torch.device, distributed: bool):
        m, t = cfg.model, cfg.train
        self.cfg, self.device = cfg, device
        self.resolution, self.channels = resolution, channels
        torch.manual_seed(t.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
        self.G = build_generator(m.arch, resolution, channels, m.z_dim, m.g_channels).to(device)
        self.D = build_discriminator(m.arch, resolution, channels, m.d_channels).to(device)
        self.G_ddp, self.D_ddp = self.G, self.D
        if distributed:
            ids = [device] if device.type == "cuda" else None
            self.G_ddp = DistributedDataParallel(self.G, device_ids=ids)
            self.D_ddp = DistributedDataParallel(self.D, device_ids=ids)
        self.features = speed.resolve(t, device, self.D)
        self.d_loss, self.g_loss = losses.LOSSES[t.loss]
        fused = self.features.fused_adam
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=t.lr_g, betas=(t.beta1, t.beta2), fused=fused)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2), fused=fused)
        # What the step calls: compiled views when asked. G/D stay plain for sampling, state dicts and checks.
        self.G_step = speed.compiled(self.G_ddp, self.features)
        self.D_step = speed.compiled(self.D_ddp, self.features)
        self.D_for_g = speed.compiled(self.D, self.features)
        self.noise = torch.Generator(device=device)
        # Fused Adam skips a non-finite update on the device itself; elsewhere the step asks the host.
        self.skip_on_device = fused
        self.bad_streak = torch.zeros((), device=device)  # consecutive steps with a skipped update
        self.skipped_total = torch.zeros((), device=device)

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.features.bf16 else contextlib.nullcontext()

    def latents(self, n: int, seed: int) -> torch.Tensor:
        self.noise.manual_seed(seed)
        return torch.randn(n, self.cfg.model.z_dim, device=self.device, generator=self.noise)

    def step(self, real_u8: torch.Tensor, step: int, rank: int) -> dict[str, torch.Tensor]:
        """One D update then one G update. The latents are a pure function of (seed, rank, step), so a resumed
        run draws exactly the noise the uninterrupted run would have drawn, without RNG state."""
        speed.mark_step_begin(self.features)
        real = to_model_range(real_u8.to(self.device, non_blocking=True))
        z = self.latents(real.shape[0], noise_seed(self.cfg.train.seed, rank, step))
        update_spectral_norms(self.D)  # the power iteration, outside any compiled region: forwards stay pure

        with self.autocast():
            fake = self.G_step(z)
            real_logits, fake_logits = self._d_logits(real, fake.detach())
            loss_d = self.d_loss(real_logits, fake_logits)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        grad_norm_d, bad_d = self._guarded_update(self.opt_d, self.D)

        # The plain D (not its DDP wrapper): no D gradients to synchronise in the G update.
        with self.autocast(), frozen(self.D):
            loss_g = self.g_loss(self.D_for_g(fake).float())
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        grad_norm_g, bad_g = self._guarded_update(self.opt_g, self.G)

        bad = (bad_d | bad_g).float()
        self.bad_streak = (self.bad_streak + 1) * bad
        self.skipped_total += bad
        return {
            "loss_D": loss_d.detach(),
            "loss_G": loss_g.detach(),
            "D_real": torch.sigmoid(real_logits.detach()).mean(),
            "D_fake": torch.sigmoid(fake_logits.detach()).mean(),
            "grad_norm_D": grad_norm_d,
            "grad_norm_G": grad_norm_g,
        }

    def _d_logits(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """D's float logits for the real and the fake batch: one forward over both when D allows it."""
        if self.features.concat_d_forward:
            # In the generator's dtype (bf16 under autocast): D's first layer would cast to it anyway.
            logits = self.D_step(torch.cat([real.to(fake.dtype), fake])).float()
            return logits[: len(real)], logits[len(real) :]
        return self.D_step(real).float(), self.D_step(fake).float()

    def _guarded_update(self, optimizer: torch.optim.Optimizer, net: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Step unless the gradient norm is NaN/Inf. The gradients are already averaged across ranks, so every
        rank reaches the same verdict and the replicas stay identical."""
        grad_norm = get_total_norm([p.grad for p in net.parameters() if p.grad is not None])
        bad = ~torch.isfinite(grad_norm)
        if self.skip_on_device:
            optimizer.found_inf = bad.float()
            optimizer.step()
        elif not bad.item():
            optimizer.step()
        return grad_norm.detach(), bad

    def learning_rates(self) -> dict[str, float]:
        return {"lr_G": self.opt_g.param_groups[0]["lr"], "lr_D": self.opt_d.param_groups[0]["lr"]}

    def scale_learning_rates(self, factor: float) -> None:
        for optimizer in (self.opt_g, self.opt_d):
            for group in optimizer.param_groups:
                group["lr"] *= factor

    @torch.no_grad()
    def sample(self, z: torch.Tensor) -> torch.Tensor:
        """uint8 B×C×H×W from the plain generator in inference mode (batch-norm running statistics)."""
        self.G.eval()
        try:
            with self.autocast():
                return to_uint8(self.G(z.to(self.device)))
        finally:
            self.G.train()

    @torch.no_grad()
    def rank_divergence(self) -> float:
        """Largest difference across ranks of per-tensor parameter sums: 0.0 while DDP keeps the replicas
        identical. A collective: every rank calls it at the same step."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return 0.0
        params = [*self.G.parameters(), *self.D.parameters()]
        sums = torch.stack([p.double().sum() for p in params])
        gathered = [torch.empty_like(sums) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, sums)
        stacked = torch.stack(gathered)
        return (stacked.max(0).values - stacked.min(0).values).max().item()

    def state_dict(self) -> dict[str, Any]:
        return {
            "nets": {"G": self.G.state_dict(), "D": self.D.state_dict()},
            "optimizers": {"G": self.opt_g.state_dict(), "D": self.opt_d.state_dict()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["nets"]["G"])
        self.D.load_state_dict(state["nets"]["D"])
        self.opt_g.load_state_dict(state["optimizers"]["G"])
        self.opt_d.load_state_dict(state["optimizers"]["D"])
