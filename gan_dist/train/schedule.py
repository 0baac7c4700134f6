"""Hyper-parameters that change over a run: CycleGAN's linear learning-rate decay (by step) and cosines from a
train.* value to a schedule.* value (by images seen; R3GAN's schedules). Pure functions of the step and the images
seen, both in the checkpoint, so a resumed run continues every schedule exactly."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gan_dist.config import Config


def lr_factor(step: int, steps: int, decay_start: float | None) -> float:
    """The linear learning-rate schedule: constant, then from step `decay_start` x steps linear toward 0, as
    CycleGAN's linear policy decays per epoch (its D decaying epochs train at D/(D+1), ..., 1/(D+1) of the rate)."""
    if decay_start is None:
        return 1.0
    start = int(decay_start * steps)
    return 1.0 - max(0, step - start + 1) / (steps - start + 1)


def cosine(start: float, end: float, progress: float) -> float:
    """From `start` at progress 0 to `end` at progress 1 along half a cosine, `end` after (R3GAN's
    cosine_decay_with_warmup without the warm-up)."""
    return start + (end - start) * (1 - math.cos(math.pi * min(progress, 1.0))) / 2


@dataclass(frozen=True)
class Hyperparameters:
    """What the schedules set for one step."""

    lr_factors: dict[str, float]  # by optimizer name ("G", "D"): x that optimizer's base rate
    values: dict[str, float]  # every other scheduled train.* key (beta2, r1_gamma, ...): its value now


class Schedule:
    def __init__(self, cfg: Config, images_per_step: int):
        self.train, self.targets = cfg.train, cfg.schedule.targets()
        whole_run = cfg.train.steps * images_per_step
        self.length = cfg.schedule.kimg * 1000 if cfg.schedule.kimg is not None else whole_run

    def at(self, step: int, images_seen: int) -> Hyperparameters:
        """The values for the step that starts with `images_seen` images behind it."""
        t = self.train
        now = {key: cosine(getattr(t, key), end, images_seen / self.length) for key, end in self.targets.items()}
        linear = lr_factor(step, t.steps, t.lr_decay_start)
        factors = {"G": now.pop("lr_g", t.lr_g) / t.lr_g * linear, "D": now.pop("lr_d", t.lr_d) / t.lr_d * linear}
        return Hyperparameters(factors, now)
