import pytest
import torch

from gan_dist.models import Discriminator, Generator


@pytest.mark.parametrize("resolution", [8, 16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_generator_output_matches_discriminator_input(resolution, channels):
    G = Generator(resolution, channels, z_dim=16, width=8)
    D = Discriminator(resolution, channels, width=8)
    images = G(torch.randn(5, 16))
    assert images.shape == (5, channels, resolution, resolution)
    assert images.min() >= -1 and images.max() <= 1
    assert D(images).shape == (5,)


@pytest.mark.parametrize("resolution", [4, 24, 100])
def test_resolution_must_be_a_power_of_two(resolution):
    with pytest.raises(ValueError, match="power-of-two resolution"):
        Generator(resolution, 1)
