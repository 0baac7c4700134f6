"""Spectral normalisation (Miyato et al. 2018) with a pure forward, safe for torch.compile and CUDA graphs.

PyTorch's spectral norm (`nn.utils.spectral_norm` and the parametrization) runs its power iteration inside
forward, writing the `u`/`v` buffers in place: a compiled graph then carries buffer mutations, a CUDA graph
replays them, and the number of iterations per step depends on how many times D runs (real, fake, G step).
Here forward only reads the buffers; sigma = u · (W v) with u and v held constant, so the gradient flows through
W in both the numerator and sigma, as in the paper. The estimate is refined by `update_spectral_norms(D)`, which
the training step calls once per step, outside any compiled region and before D's forwards: one power iteration
per D update, as in the SNGAN reference code. The buffers keep their storage (`copy_`), so CUDA graphs that read
them see the new values.

The layers are plain `nn.Conv2d` / `nn.Linear` subclasses: the parameter is still `weight` and the state dict
adds the buffers `sn_u` (out_features) and `sn_v` (in_features of the flattened weight).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-12
INIT_ITERATIONS = 15  # at construction (and after re-initialising the weight), so sigma is accurate at step 0


class SpectralNorm(nn.Module):
    """Mixin for a layer with a `weight`; subclasses say how to apply a weight in `_apply_weight`."""

    weight: torch.Tensor
    sn_u: torch.Tensor
    sn_v: torch.Tensor

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        w = self.weight.detach().flatten(1)
        # Random start from the global RNG (as torch does), then enough iterations to converge.
        self.register_buffer("sn_u", F.normalize(torch.randn_like(w[:, 0]), dim=0, eps=EPS))
        self.register_buffer("sn_v", F.normalize(torch.randn_like(w[0]), dim=0, eps=EPS))
        self.power_iteration(INIT_ITERATIONS)

    @torch.no_grad()
    def power_iteration(self, steps: int = 1) -> None:
        """Refine u, v towards W's top singular vectors, in place; call again after changing `weight` by hand."""
        w = self.weight.detach().flatten(1).float()
        u, v = self.sn_u.float(), self.sn_v.float()
        for _ in range(steps):
            v = F.normalize(w.t() @ u, dim=0, eps=EPS)
            u = F.normalize(w @ v, dim=0, eps=EPS)
        self.sn_v.copy_(v)
        self.sn_u.copy_(u)

    def sigma(self) -> torch.Tensor:
        """The spectral-norm estimate u · (W v), in float32 even under autocast; differentiable in W only."""
        # Clones, so autograd does not save the buffers themselves: updating them (or a DDP buffer broadcast)
        # between a forward and its backward is then allowed.
        u, v = self.sn_u.detach().float().clone(), self.sn_v.detach().float().clone()
        with torch.autocast(self.weight.device.type, enabled=False):
            return torch.dot(u, self.weight.flatten(1).float() @ v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply_weight(x, self.weight / self.sigma().to(self.weight.dtype))

    def _apply_weight(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class SNConv2d(SpectralNorm, nn.Conv2d):
    def _apply_weight(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, weight, self.bias)


class SNLinear(SpectralNorm, nn.Linear):
    def _apply_weight(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weight, self.bias)


class SNEmbedding(SpectralNorm, nn.Embedding):
    """A class embedding (num_classes × dim) normalised like the others, as projection discriminators use it."""

    def _apply_weight(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.embedding(x, weight)


def update_spectral_norms(net: nn.Module) -> int:
    """One power iteration on every spectral-norm layer of `net` (DDP- and compile-wrapped nets included)."""
    layers = [m for m in net.modules() if isinstance(m, SpectralNorm)]
    for layer in layers:
        layer.power_iteration()
    return len(layers)
