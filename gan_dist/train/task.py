"""The interface the loop trains through (`Task`), and what every task's step shares: the guarded optimizer
update, the non-finite counters, learning rates, the replica check and the checkpoint state."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.nn.utils import get_total_norm

from gan_dist.data.reader import Batch
from gan_dist.train import collective, speed
from gan_dist.train.ema import EMA
from gan_dist.train.schedule import Hyperparameters
from gan_dist.train.speed import StepFeatures

if TYPE_CHECKING:  # the adversary imports `frozen` from here
    from gan_dist.train.adversary import Adversary


def replicated(net: nn.Module, device: torch.device, world_size: int, features: StepFeatures,
               compile: bool = True) -> nn.Module:
    """DDP's wrapper when there are several ranks (the net itself otherwise), compiled when asked."""
    if world_size > 1:
        net = DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)
    return speed.compiled(net, features) if compile else net


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


class NonFiniteCounter:
    """Steps whose update was skipped for a NaN/Inf gradient, kept on the device: read only at log steps."""

    def __init__(self, device: torch.device):
        self.streak = torch.zeros((), device=device)  # consecutive steps with a skipped update
        self.total = torch.zeros((), device=device)

    def record(self, bad: torch.Tensor) -> None:
        bad = bad.float()
        self.streak = (self.streak + 1) * bad
        self.total += bad


class Task:
    """What the loop trains. A task owns its nets, optimizers and fixed preview inputs; the loop knows nothing of
    generators, discriminators or latents. Subclasses fill `nets` and `optimizers` and define the four methods
    below `METRICS`."""

    datasets: tuple[str, ...] = ("train",)  # the named datasets one step reads a batch of each
    METRICS: tuple[str, ...] = ()  # what train_step returns, plus lr_<optimizer>: logged at every log step

    def __init__(self, device: torch.device, features: StepFeatures):
        self.device, self.features = device, features
        self.nets: dict[str, nn.Module] = {}  # the trained nets, by name (their state dicts, the replica check)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}  # "G" and "D": train.lr_g and lr_d set their rates
        self.adversaries: list[Adversary] = []  # one per discriminator: the schedules set their gamma and p
        self.ema: EMA | None = None  # the generator's average, where the task keeps one
        self.scheduled: dict[str, float] = {}  # the scheduled values of the current step, logged beside the rates
        self.nonfinite = NonFiniteCounter(device)

    def train_step(self, batches: dict[str, Batch], step: int) -> dict[str, torch.Tensor]:
        """Every update of one step; device tensors out (the loop reads them at log steps only)."""
        raise NotImplementedError

    def preview(self) -> torch.Tensor:
        """A uint8 C×H×W grid from the task's fixed inputs: the same inputs every time, so grids show progress."""
        raise NotImplementedError

    def export(self) -> dict[str, dict[str, torch.Tensor]]:
        """What inference needs, by file name (e.g. "generator"): written as safetensors next to the state."""
        raise NotImplementedError

    def generate(self, rows: range, total: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What evaluation needs: images `rows` of a set of `total` drawn with `seed`, as uint8 B×H×W×C (as stored),
        from the inference nets, and the class each was drawn for (None when unconditional). A function of the row,
        not of who draws it: any split of the rows over workers gives the same set."""
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        """What a part keeps across steps besides nets and optimizers (EMA weights, ...): in the checkpoint."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    # -- shared ---------------------------------------------------------------------------------------------

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.features.bf16 else contextlib.nullcontext()

    def guarded_update(self, optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, torch.Tensor]:
        """Step unless the gradient norm of the optimizer's parameters is NaN/Inf; (norm, skipped). The gradients
        are already averaged across ranks, so every rank reaches the same verdict and the replicas stay identical.
        Fused Adam skips a non-finite update on the device itself; elsewhere the step asks the host."""
        grad_norm = get_total_norm([p.grad for group in optimizer.param_groups for p in group["params"]
                                    if p.grad is not None])
        bad = ~torch.isfinite(grad_norm)
        if self.features.fused_adam:
            optimizer.found_inf = bad.float()
            optimizer.step()
        elif not bad.item():
            optimizer.step()
        return grad_norm.detach(), bad

    def learning_rates(self) -> dict[str, float]:
        """lr_<optimizer> and the other scheduled values of the current step: what a log step records."""
        return {**{f"lr_{name}": opt.param_groups[0]["lr"] for name, opt in self.optimizers.items()},
                **self.scheduled}

    def _groups(self, optimizer: torch.optim.Optimizer) -> Iterator[dict[str, Any]]:
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])  # the rate the schedule scales: in the optimizer's state
            yield group

    def scale_learning_rates(self, factor: float) -> None:
        """For good (the non-finite recovery's cut): the schedule goes on from the lower rates."""
        for optimizer in self.optimizers.values():
            for group in self._groups(optimizer):
                group["base_lr"] *= factor
                group["lr"] *= factor

    def follow_schedule(self, hyper: Hyperparameters) -> None:
        """The schedules' values for the coming step: each optimizer's rate at its factor x its base rate, Adam's
        beta2, each adversary's penalties and augmentation probability, the EMA's half-life."""
        beta2 = hyper.values.get("beta2")
        for name, optimizer in self.optimizers.items():
            for group in self._groups(optimizer):
                group["lr"] = group["base_lr"] * hyper.lr_factors[name]
                if beta2 is not None:
                    group["betas"] = (group["betas"][0], beta2)
        for adversary in self.adversaries:
            adversary.follow_schedule(hyper.values)
        if self.ema is not None and "ema_half_life_kimg" in hyper.values:
            self.ema.half_life_kimg = hyper.values["ema_half_life_kimg"]
        self.scheduled = hyper.values

    def rank_state(self) -> dict[str, Any]:
        """What this rank alone holds across steps (CycleGAN's image pools): every rank's goes into the checkpoint
        and comes back to the same rank on resume. CPU tensors (it travels between ranks)."""
        return {}

    def load_rank_state(self, state: dict[str, Any]) -> None:
        pass

    @torch.no_grad()
    def rank_divergence(self) -> float:
        """Largest difference across ranks of per-tensor parameter sums: 0.0 while DDP keeps the replicas
        identical. A collective: every rank calls it at the same step."""
        if not collective.distributed():
            return 0.0
        sums = torch.stack([p.double().sum() for net in self.nets.values() for p in net.parameters()])
        gathered = [torch.empty_like(sums) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, sums)
        stacked = torch.stack(gathered)
        return (stacked.max(0).values - stacked.min(0).values).max().item()

    def state_dict(self) -> dict[str, Any]:
        return {"nets": {name: net.state_dict() for name, net in self.nets.items()},
                "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
                **self.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, net in self.nets.items():
            net.load_state_dict(state["nets"][name])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.load_extra_state(state)
