"""An exponential moving average of a net's weights (stylegan2-ada's G_ema): the half-life is counted in images,
so it means the same at any batch size and worker count, and ramps up with the images seen so the average does
not drag the random initial weights along early in training."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, net: nn.Module, half_life_kimg: float, rampup: float | None, images_per_step: int):
        self.net = copy.deepcopy(net).eval().requires_grad_(False)
        self.half_life_kimg, self.rampup, self.images_per_step = half_life_kimg, rampup, images_per_step

    def beta(self, step: int) -> float:
        """The weight the average keeps at `step` (0-based): a pure function of the step, so a resume needs only
        the averaged weights."""
        half_life = self.half_life_kimg * 1000
        if self.rampup is not None:
            half_life = min(half_life, step * self.images_per_step * self.rampup)  # images seen before this step
        return 0.5 ** (self.images_per_step / max(half_life, 1e-8))

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> None:
        averaged, trained = list(self.net.parameters()), list(net.parameters())
        torch._foreach_lerp_(averaged, trained, 1.0 - self.beta(step))
        for kept, current in zip(self.net.buffers(), net.buffers()):  # batch-norm statistics: the latest
            kept.copy_(current)
