"""The image pool (Shrivastava et al. 2017) as CycleGAN uses it: D sees a mix of the newest fakes and earlier ones,
which damps the oscillation of G and D chasing each other. One pool per rank, in that rank's checkpoint state."""

from __future__ import annotations

from typing import Any

import torch


class ImagePool:
    def __init__(self, size: int):
        self.size = size
        self.images: torch.Tensor | None = None  # size × C×H×W once the first fakes arrive; the first `count` held
        self.count = 0

    def query(self, fakes: torch.Tensor, draws: torch.Generator) -> torch.Tensor:
        """The batch D sees in place of `fakes` (detached): while the pool fills, each fake is kept and returned;
        then each is, with probability 1/2, swapped with a random pooled one (the pooled one returned). `draws`: a
        CPU generator, so the choices cost no device round trip."""
        fakes = fakes.detach()
        if self.size == 0:
            return fakes
        if self.images is None:
            self.images = fakes.new_empty((self.size, *fakes.shape[1:]))
        coins = torch.rand(len(fakes), generator=draws).tolist()
        slots = torch.randint(self.size, (len(fakes),), generator=draws).tolist()
        out = []
        for fake, coin, slot in zip(fakes, coins, slots):
            if self.count < self.size:
                self.images[self.count] = fake
                self.count += 1
                out.append(fake)
            elif coin > 0.5:
                out.append(self.images[slot].clone())
                self.images[slot] = fake
            else:
                out.append(fake)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        images = self.images[:self.count] if self.images is not None else torch.empty(0)
        return {"images": images.cpu(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        """Empty when `state` is (a rank the checkpoint did not have)."""
        self.count = int(state.get("count", 0))
        self.images = None
        if self.count:
            held = state["images"].to(device)
            self.images = held.new_empty((self.size, *held.shape[1:]))
            self.images[:self.count] = held
