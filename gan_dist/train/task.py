"""The interface the loop trains through (`Task`): what a kind of model is (its config section, the data it reads
and checks, what it logs and measures, what it exports for which inference use) and what every task's step shares
(the guarded optimizer update, the non-finite counters, learning rates, the replica check, the checkpoint state)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.nn.utils import get_total_norm

from gan_dist import seeds
from gan_dist.config import Config
from gan_dist.data.placement import Dataset
from gan_dist.data.reader import Batch, load_columns
from gan_dist.data.shards import Manifest
from gan_dist.errors import UserError
from gan_dist.imaging import to_model_range
from gan_dist.train import collective, speed
from gan_dist.train.adversary import Adversary
from gan_dist.train.ema import EMA
from gan_dist.train.schedule import Hyperparameters, Schedule
from gan_dist.train.speed import StepFeatures

if TYPE_CHECKING:  # the context is the loop's, above the tasks
    from gan_dist.train.context import WorkerContext


def replicated(net: nn.Module, device: torch.device, world_size: int, features: StepFeatures,
               compile: bool = True) -> nn.Module:
    """DDP's wrapper when there are several ranks (the net itself otherwise), compiled when asked."""
    if world_size > 1:
        net = DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)
    return speed.compiled(net, features) if compile else net


class NonFiniteCounter:
    """Steps whose update was skipped for a NaN/Inf gradient, kept on the device: read only at log steps."""

    def __init__(self, device: torch.device):
        self.streak = torch.zeros((), device=device)  # consecutive steps with a skipped update
        self.total = torch.zeros((), device=device)

    def record(self, bad: torch.Tensor) -> None:
        bad = bad.float()
        self.streak = (self.streak + 1) * bad
        self.total += bad


def first_images(data: Dataset, n: int, device: torch.device) -> torch.Tensor:
    """The dataset's first n images (prepare shuffled them: a fair sample), in the models' range: fixed inputs."""
    rows = range(min(n, data.manifest.count))
    return to_model_range(torch.from_numpy(load_columns(data.uri, data.manifest, rows)["image"]).to(device))


# A measurement during training: rank 0's numbers (None on the other ranks).
Measure = Callable[[], "dict[str, float] | None"]


class Task:
    """What the loop trains, and everything about its kind. A task owns its nets, optimizers and fixed preview
    inputs; the loop knows nothing of generators, discriminators or latents. A subclass names its config section
    (whose class-level facts say which datasets it reads and which model families it trains), fills `nets` and
    `optimizers`, defines the four methods below `METRICS`, and overrides the class-level hooks it needs."""

    section: ClassVar[type]  # its config section (config/schema.py): task.kind, DATASETS, ARCHS
    datasets: ClassVar[tuple[str, ...]]  # the named datasets one step reads a batch of each: the section's
    METRICS: ClassVar[tuple[str, ...]] = ()  # what train_step returns, plus lr_<optimizer>: logged at log steps
    # Each file export() writes (by name) and the inference uses it serves: meta.json records them, and `gan-dist
    # sample|explore|translate|complete|evaluate` ask it whether a checkpoint can do what they do.
    EXPORTS: ClassVar[dict[str, tuple[str, ...]]] = {}
    # The train.* key that configures each optimizer's rate: every task names its optimizers "G" and "D".
    RATE_KEYS: ClassVar[dict[str, str]] = {"G": "lr_g", "D": "lr_d"}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "section" in cls.__dict__:
            cls.datasets = cls.section.DATASETS

    @classmethod
    def kind(cls) -> str:
        return cls.section.kind_name()

    @classmethod
    def check_data(cls, cfg: Config, datasets: dict[str, Dataset]) -> None:
        """Refuse, in one line before any work, data the task's nets cannot take (sizes, classes). Here: single
        images where the task's section says its rows are pairs; a task's own checks extend this."""
        for data in datasets.values():
            if cls.section.PAIRED and not data.manifest.paired:
                raise UserError(f"task.kind={cls.kind()} reads pairs and {data.uri} holds single images; prepare a "
                                f"paired dataset (gan-dist prepare TARGETS OUT --inputs INPUTS)")

    @classmethod
    def measured(cls, cfg: Config, manifests: dict[str, Manifest]) -> tuple[str, ...]:
        """What its evaluation during training logs (run.keep_best may name any of them)."""
        return ()

    @classmethod
    def logged_metrics(cls, cfg: Config, manifests: dict[str, Manifest]) -> tuple[str, ...]:
        """What its log steps record besides the loop's own keys."""
        return cls.METRICS + cls.measured(cfg, manifests)

    def measure(self, ctx: WorkerContext) -> Measure | None:
        """Its measurement during training (None: nothing to measure, or not on this rank); built once."""
        return None

    def __init__(self, cfg: Config, device: torch.device, rank: int, world_size: int):
        """First in every task's constructor: then the task builds its nets (from identical initial weights on every
        rank: DDP also broadcasts rank 0's) and calls `resolve_features` with its discriminator."""
        self.cfg, self.device, self.rank, self.world_size = cfg, device, rank, world_size
        torch.manual_seed(seeds.derive(cfg.train.seed, "init"))
        self.features: StepFeatures | None = None
        self.nets: dict[str, nn.Module] = {}  # the trained nets, by name (their state dicts, the replica check)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}  # "G" and "D": train.lr_g and lr_d set their rates
        self.adversaries: list[Adversary] = []  # one per discriminator: the schedules set their gamma and p
        self.ema: EMA | None = None  # the generator's average, where the task keeps one
        self.scheduled: dict[str, float] = {}  # the scheduled values of the current step, logged beside the rates
        self.global_batch = cfg.global_batch(world_size)  # of one D update, over all ranks
        self.schedule = Schedule(cfg, cfg.step_images(world_size))  # by the images seen over all ranks
        # This rank's losses weigh by its share of the global batch: DDP's mean over the ranks is then the mean over
        # every image, also where an elastic run's workers' batches differ by one.
        share = cfg.step_share(rank, world_size)
        self.loss_weight = (share.stop - share.start) * world_size / cfg.step_images(world_size)
        self.nonfinite = NonFiniteCounter(device)

    def step(self, batches: dict[str, Batch], step: int, images_seen: int) -> dict[str, torch.Tensor]:
        """What the loop calls: the schedules' values for this step (a function of the images seen before it), then
        the step."""
        self.follow_schedule(self.schedule.at(step, images_seen))
        return self.train_step(batches, step)

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
        """What a part keeps across steps besides nets and optimizers, in the checkpoint: here a task's one
        adversary's (ADA's p, LeCam's running means); a task with more (EMA weights, two adversaries) extends it."""
        return {"adversary": self.adversaries[0].state_dict()} if len(self.adversaries) == 1 else {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if len(self.adversaries) == 1:
            self.adversaries[0].load_state_dict(state.get("adversary", {}))

    # -- shared ---------------------------------------------------------------------------------------------

    def resolve_features(self, discriminator: nn.Module) -> None:
        """The speed switches that apply on this device to these nets (concatenated D forwards need a D without
        batch norm)."""
        self.features = speed.resolve(self.cfg.train, self.device, discriminator)

    def adversarial_pair(self, G: nn.Module, D: nn.Module, *trained_with_g: nn.Module) -> None:
        """The shape most tasks have: `G` (and nets trained with it, e.g. CUT's head) against one `D` through its
        Adversary, each side with its Adam; `G_step` what the step calls (DDP when distributed, compiled)."""
        t = self.cfg.train
        self.G, self.D = G, D
        self.resolve_features(D)
        self.G_step = replicated(G, self.device, self.world_size, self.features)
        self.adversary = Adversary(t, D, self.features, self.device, self.rank, self.world_size, self.global_batch)
        self.adversaries = [self.adversary]
        g_params = [p for net in (G, *trained_with_g) for p in net.parameters()]
        self.opt_g, self.opt_d = self.adam(g_params, t.lr_g), self.adam(D.parameters(), t.lr_d)
        self.nets, self.optimizers = {"G": G, "D": D}, {"G": self.opt_g, "D": self.opt_d}

    def adam(self, params: Iterable[torch.Tensor], lr: float) -> torch.optim.Adam:
        t = self.cfg.train
        optimizer = torch.optim.Adam(params, lr=lr, betas=(t.beta1, t.beta2), fused=self.features.fused_adam)
        optimizer.param_groups[0]["configured_lr"] = lr  # in the checkpoint: what `retune` compares a resume's with
        return optimizer

    def update(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One guarded update of `optimizer`'s parameters from `loss`: (gradient norm, skipped)."""
        optimizer.zero_grad(set_to_none=True)
        (loss * self.loss_weight if self.loss_weight != 1 else loss).backward()
        return self.guarded_update(optimizer)

    def finish_step(self, step: int, out: dict[str, torch.Tensor], skipped: torch.Tensor) -> dict[str, torch.Tensor]:
        """What ends every step: the non-finite counters, each adversary's step (ADA, LeCam), and their numbers in
        the step's outputs (the augmentation probability of the first, the penalties of all)."""
        self.nonfinite.record(skipped)
        for adversary in self.adversaries:
            adversary.end_step(step)
        first = self.adversaries[0]
        if first.transforms:
            out["augment_p"] = torch.as_tensor(first.p)
        if first.regularized:
            out["penalty_D"] = sum(adversary.last_penalty for adversary in self.adversaries)
        return out

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
        self.retune()
        self.load_extra_state(state)

    def retune(self) -> None:
        """Each optimizer's rate and betas from this run's config, after `load_state_dict` restored the checkpoint's:
        a resume with another train.lr_g, lr_d, beta1 or beta2 (a PBT trial continuing a better trial's checkpoint,
        a person lowering a rate) trains with them. The base rate moves by the ratio of the configured rates, so the
        non-finite recovery's cuts carry over as a fraction of the new rate; a checkpoint without a configured rate
        (written before it was kept) counts as this run's. Nothing changed: every value stays bit for bit."""
        t = self.cfg.train
        for name, optimizer in self.optimizers.items():
            configured = getattr(t, self.RATE_KEYS[name])
            for group in self._groups(optimizer):
                ratio = configured / group.get("configured_lr", configured)
                group["base_lr"] *= ratio
                group["lr"] *= ratio
                group["configured_lr"] = configured
                group["betas"] = (t.beta1, t.beta2)  # a beta2 schedule sets its value at the next step, as always
