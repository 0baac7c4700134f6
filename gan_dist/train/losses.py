"""GAN losses on raw discriminator logits."""

import torch
import torch.nn.functional as F


def d_nonsaturating(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(x) - log(1 - D(G(z))): the discriminator learns real -> 1, fake -> 0."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(G(z)): strong gradients early, when D rejects fakes easily (Goodfellow et al. 2014)."""
    return F.softplus(-fake_logits).mean()


def d_hinge(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """max(0, 1 - D(x)) + max(0, 1 + D(G(z))): SNGAN's discriminator loss (Miyato et al. 2018)."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def g_hinge(fake_logits: torch.Tensor) -> torch.Tensor:
    """-D(G(z)): the generator side of the hinge loss."""
    return -fake_logits.mean()


def d_wasserstein(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D(G(z)) - D(x): the critic's estimate of the Wasserstein-1 distance, negated (Arjovsky et al. 2017). It needs
    a Lipschitz bound: WGAN-GP's gradient penalty (train.gp_weight) or spectral norm."""
    return fake_logits.mean() - real_logits.mean()


def g_wasserstein(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


def d_least_squares(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """((D(x) - 1)² + D(G(z))²) / 2: LSGAN (Mao et al. 2017), halved as CycleGAN halves its D loss, so D learns
    at half G's rate."""
    return 0.5 * ((real_logits - 1).square().mean() + fake_logits.square().mean())


def g_least_squares(fake_logits: torch.Tensor) -> torch.Tensor:
    return (fake_logits - 1).square().mean()


def d_relativistic(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """softplus(-(D(x) - D(G(z)))), each real image paired with a fake: the relativistic pairing GAN (RpGAN,
    Jolicoeur-Martineau 2019), R3GAN's loss with its R1 and R2 penalties (Huang et al. 2024). D judges whether a
    real image is more real than a fake, so a constant added to D's outputs changes nothing."""
    return F.softplus(fake_logits - real_logits).mean()


def g_relativistic(fake_logits: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """softplus(-(D(G(z)) - D(x))): the D loss with real and fake swapped."""
    return d_relativistic(fake_logits, real_logits)


# name -> (discriminator loss, generator loss)
LOSSES = {"nonsaturating": (d_nonsaturating, g_nonsaturating), "hinge": (d_hinge, g_hinge),
          "wgan": (d_wasserstein, g_wasserstein), "lsgan": (d_least_squares, g_least_squares),
          "rpgan": (d_relativistic, g_relativistic)}
# The losses whose G side also reads D(real): the G update pairs each fake with a real image.
PAIRED = ("rpgan",)
