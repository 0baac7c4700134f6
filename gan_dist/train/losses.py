"""GAN losses on raw discriminator logits."""

import torch
import torch.nn.functional as F


def d_nonsaturating(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(x) - log(1 - D(G(z))): the discriminator learns real -> 1, fake -> 0."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(G(z)): strong gradients early, when D rejects fakes easily (Goodfellow et al. 2014)."""
    return F.softplus(-fake_logits).mean()
