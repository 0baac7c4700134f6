"""A discriminator and what training one involves, for any task that has one: the loss, augmentation at its single
call site (the same in the D and the G update), the regularizers (lazy R1 and R2, WGAN-GP, LeCam) and the adaptive
augmentation probability. The task keeps the optimizer and runs the updates (`n_dis` D updates per step)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gan_dist import seeds
from gan_dist.config import TrainConfig
from gan_dist.models import update_spectral_norms
from gan_dist.train import collective, losses, speed
from gan_dist.train.augment import AdaptiveProbability, augment
from gan_dist.train.speed import StepFeatures

Labels = torch.Tensor | None



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

class LeCam:
    """LeCam regularization (Tseng et al. 2021): D(real) is pulled down toward the running mean of D(fake) and D(fake)
    up toward that of D(real), which bounds how far D can push them apart on small datasets. The running means are
    over every rank's batch, so they are identical everywhere, and in the checkpoint."""

    def __init__(self, weight: float, decay: float, device: torch.device):
        self.weight, self.decay = weight, decay
        self.means = torch.zeros(2, device=device)  # of D(real), D(fake)
        self.seen = torch.zeros((), device=device)  # D updates averaged so far: the first one sets the means

    def __call__(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        current = collective.mean_over_ranks(torch.stack([real_logits.detach().mean(), fake_logits.detach().mean()]))
        decay = torch.where(self.seen > 0, self.decay, 0.0)
        self.means = decay * self.means + (1 - decay) * current
        self.seen += 1
        real_mean, fake_mean = self.means.unbind()
        return self.weight * ((real_logits - fake_mean).relu().square().mean()
                              + (real_mean - fake_logits).relu().square().mean())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"means": self.means, "seen": self.seen}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.means, self.seen = (state[k].to(self.means.device).clone() for k in ("means", "seen"))


def squared_input_gradients(logits: list[torch.Tensor], images: list[torch.Tensor]) -> list[torch.Tensor]:
    """|d logit / d image|² per image of each batch, kept in the graph so a penalty on it trains D (a double
    backward). One backward pass for all the batches: the logits of a joined forward share one graph."""
    grads = torch.autograd.grad(sum(x.sum() for x in logits), images, create_graph=True)
    return [grad.float().flatten(1).square().sum(dim=1) for grad in grads]  # a bf16 fake's gradient: summed in fp32


class Adversary:
    """`D` the plain module; `D_ddp` its DDP wrapper when distributed (D otherwise); the compiled views the updates
    call. `p` and `last_penalty` are what the step logs. A task with two discriminators numbers them (`index`): each
    draws its augmentation from its own streams."""

    def __init__(self, t: TrainConfig, D: nn.Module, features: StepFeatures, device: torch.device, rank: int,
                 world_size: int, global_batch: int, index: int | None = None):
        self.t, self.D, self.features, self.device, self.rank = t, D, features, device, rank
        self.index = () if index is None else (index,)
        self.D_ddp = D
        if world_size > 1:
            self.D_ddp = DistributedDataParallel(D, device_ids=[device] if device.type == "cuda" else None)
        self.D_step = speed.compiled(self.D_ddp, features)  # the D update
        self.D_for_g = speed.compiled(D, features)  # the G update: no D gradients to synchronise
        self.d_loss, self.g_loss = losses.LOSSES[t.loss]
        self.paired = t.loss in losses.PAIRED
        # R1 and R2's gammas, moved by the schedules: device tensors, so a new value is no new graph
        self.gammas = torch.tensor([t.r1_gamma, t.r2_gamma], device=device)
        self.transforms = t.augmentations()
        adaptive = bool(self.transforms) and t.ada_target is not None
        start_p = t.augment_p if t.augment_p is not None else (0.0 if adaptive else 1.0)
        self.ada = AdaptiveProbability(start_p, t.ada_target, t.ada_interval, t.ada_kimg, global_batch,
                                       device) if adaptive else None
        self.fixed_p = torch.tensor(start_p, device=device)  # the schedule's to move, when not adaptive
        self.lecam = LeCam(t.lecam_weight, t.lecam_decay, device) if t.lecam_weight else None
        self.draws = torch.Generator(device=device)
        self.last_penalty = torch.zeros((), device=device)

    @property
    def regularized(self) -> bool:
        return bool(self.t.r1_gamma or self.t.r2_gamma or self.t.gp_weight) or self.lecam is not None

    def follow_schedule(self, values: dict[str, float]) -> None:
        """The schedules' gammas and augmentation probability for the coming step (the rest is not D's)."""
        for index, key in enumerate(("r1_gamma", "r2_gamma")):
            if key in values:
                self.gammas[index].fill_(values[key])
        if "augment_p" in values:
            self.fixed_p.fill_(values["augment_p"])

    @property
    def p(self) -> torch.Tensor | float:
        """The probability each transform applies to an image now."""
        return self.ada.p if self.ada is not None else self.fixed_p

    def logits(self, net: nn.Module, images: list[torch.Tensor], labels: list[Labels], seed: int) -> list[torch.Tensor]:
        """The one call site: each image batch augmented, then D; float logits per batch. One D forward over all of
        them when D allows it (no batch norm to mix their statistics)."""
        if self.transforms:
            self.draws.manual_seed(seed)
            images = [augment(x, self.transforms, self.p, self.draws) for x in images]
        if self.features.concat_d_forward and len(images) > 1:
            # In the generator's dtype (bf16 under autocast): D's first layer would cast to it anyway.
            dtype = images[-1].dtype
            joined = net(torch.cat([x.to(dtype) for x in images]), None if labels[0] is None else torch.cat(labels))
            return list(joined.float().split([len(x) for x in images]))
        return [net(x, y).float() for x, y in zip(images, labels)]

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor, real_labels: Labels, fake_labels: Labels,
                           step: int, update: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """D's loss for its `update`-th update of step `step` on a real and a (detached) fake batch, with the
        regularizers due; (loss, real logits, fake logits). A penalty on D's input gradients needs a double
        backward, which compiled graphs lack: those updates call D eagerly."""
        t = self.t
        update_spectral_norms(self.D)  # the power iteration, outside any compiled region: forwards stay pure
        # lazy: every r1_every-th update, scaled by r1_every (Karras et al. 2020); R1 and R2 together
        due = (step * t.n_dis + update) % t.r1_every == 0
        r1_due, r2_due = due and t.r1_gamma > 0, due and t.r2_gamma > 0
        images = [real.detach().requires_grad_(r1_due), fake.detach().requires_grad_(r2_due)]
        labels = [real_labels, fake_labels]
        if t.gp_weight:
            images.append(self._mix(images[0], images[1], step, update))
            labels.append(real_labels)
        net = self.D_ddp if r1_due or r2_due or t.gp_weight else self.D_step
        seed = seeds.derive(t.seed, "augment", self.rank, step, update, *self.index)
        logits = self.logits(net, images, labels, seed)
        real_logits, fake_logits = logits[0], logits[1]
        loss = self.d_loss(real_logits, fake_logits)
        penalties = []
        if r1_due or r2_due:  # R1 on the reals, R2 on the fakes: one double backward for both
            which = [i for i, on in enumerate((r1_due, r2_due)) if on]
            squared = squared_input_gradients([logits[i] for i in which], [images[i] for i in which])
            for i, grads in zip(which, squared):
                penalties.append(self.gammas[i] / 2 * t.r1_every * grads.mean())
        if t.gp_weight:
            norm = squared_input_gradients([logits[2]], [images[2]])[0].sqrt()
            penalties.append(t.gp_weight * (norm - 1).square().mean())
        if self.lecam is not None:
            penalties.append(self.lecam(real_logits, fake_logits))
        if self.ada is not None:
            self.ada.observe(real_logits)
        if self.regularized:  # logged every step: 0 on updates without a due penalty
            self.last_penalty = sum(penalties, torch.zeros((), device=self.device)).detach()
        return sum(penalties, loss), real_logits, fake_logits

    def _mix(self, real: torch.Tensor, fake: torch.Tensor, step: int, update: int) -> torch.Tensor:
        """WGAN-GP's points between real and fake images, a weight drawn per image."""
        self.draws.manual_seed(seeds.derive(self.t.seed, "mix", self.rank, step, update, *self.index))
        weight = torch.rand(len(real), 1, 1, 1, device=real.device, generator=self.draws)
        return torch.lerp(fake.to(real.dtype), real, weight).requires_grad_(True)

    def generator_loss(self, fake: torch.Tensor, real: torch.Tensor, labels: Labels, step: int) -> torch.Tensor:
        """G's loss on D's verdict, D frozen, its augmentation drawn after the step's D updates'. A paired loss also
        asks D about `real`, the real images the fakes (of the same classes, `labels`) are paired with."""
        with frozen(self.D):
            seed = seeds.derive(self.t.seed, "augment", self.rank, step, self.t.n_dis, *self.index)
            if not self.paired:
                return self.g_loss(self.logits(self.D_for_g, [fake], [labels], seed)[0])
            fake_logits, real_logits = self.logits(self.D_for_g, [fake, real.detach()], [labels, labels], seed)
            return self.g_loss(fake_logits, real_logits)

    def end_step(self, step: int) -> None:
        if self.ada is not None:
            self.ada.adjust(step)

    def state_dict(self) -> dict[str, Any]:
        state = {}
        if self.ada is not None:
            state["ada"] = self.ada.state_dict()
        if self.lecam is not None:
            state["lecam"] = self.lecam.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A checkpoint from before a regularizer was switched on starts it afresh."""
        if self.ada is not None and "ada" in state:
            self.ada.load_state_dict(state["ada"])
        if self.lecam is not None and "lecam" in state:
            self.lecam.load_state_dict(state["lecam"])
